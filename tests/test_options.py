"""Every option of every method and head, set as the command line writes it (``--set K=V``,
``--head-set K=V``) and as a config file writes it (a TOML table): each type, ``X | None``
included, reads back to the value given and checks before anything is built."""

from __future__ import annotations

import dataclasses

import pytest

from retain.catalogue import METHODS
from retain.cli import build_parser, config_from_args
from retain.config import RunConfig
from retain.methods import get_method_class
from retain.methods.heads import HEAD_CONFIGS
from retain.options import _example, option_text


def _value(cls, f: dataclasses.Field):
    """The option's default, or for a default of None a value of its annotated type."""
    default = getattr(cls(), f.name)
    if default is not None:
        return default
    example = _example(f.type)  # its type's zero: a value other than that
    return {int: 3, float: 0.5, bool: True}.get(type(example), example)


def _cases():
    for name in METHODS:
        cls = get_method_class(name).config_class
        for f in dataclasses.fields(cls):
            yield pytest.param("method", name, cls, f, id=f"{name}-{f.name}")
    for name, cls in HEAD_CONFIGS.items():
        for f in dataclasses.fields(cls):
            yield pytest.param("head", name, cls, f, id=f"head-{name}-{f.name}")


@pytest.mark.parametrize("part,name,cls,f", list(_cases()))
def test_every_option_from_the_command_line_and_a_config_file(part, name, cls, f, tmp_path):
    value = _value(cls, f)
    if value is None:  # an option typed only by its default's absence: nothing to give
        pytest.skip("no typed value")
    if f.name == "layers" and name == "grow":
        value = [0]  # a block the tiny models have
    text = option_text(value)
    if part == "method":
        argv = ["run", "--method", name, "--set", f"{f.name}={text}"]
        toml = f'method = "{name}"\n\n[method_options]\n{f.name} = {_toml(value)}\n'
    else:
        argv = ["run", "--head", name, "--head-set", f"{f.name}={text}"]
        toml = f'head = "{name}"\n\n[head_options]\n{f.name} = {_toml(value)}\n'
    table = f"{part}_options"
    cli = config_from_args(build_parser().parse_args(argv))
    path = tmp_path / "config.toml"
    path.write_text(toml)
    written = RunConfig.from_toml(path)
    for cfg in (cli, written):
        resolved = cfg.resolved()  # checked as every run checks it, before torch
        got = getattr(resolved, table)[f.name]
        assert _same(got, value), (got, value)


def _toml(value) -> str:
    from retain.config_toml import toml_value

    return toml_value(list(value) if isinstance(value, set | tuple) else value)


def _same(got, value) -> bool:
    if isinstance(value, list | tuple | set):
        return sorted(map(str, got)) == sorted(map(str, value))
    return got == value or (isinstance(value, float) and got == pytest.approx(value))
