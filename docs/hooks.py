"""mkdocs hook: ``<!-- options: NAME -->`` in a page becomes the table of that method's or head's
options (name, default, help), read from its config dataclass, so the pages never restate a
default by hand; ``<!-- results: NAME -->`` becomes the table of the rows saved in
``benchmarks/results/NAME.json`` (``<!-- results: NAME LABEL,LABEL -->``: those rows, in that
order; ``<!-- results: NAME FIELD=VALUE -->``: the rows with that value), rendered by
``benchmarks/driver.py``, so the pages never copy a measured figure."""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import re
from pathlib import Path

DRIVER = Path(__file__).resolve().parent.parent / "benchmarks" / "driver.py"


def options_table(name: str) -> str:
    from retain.catalogue import HEADS, METHODS

    if name in METHODS:
        from retain.methods import get_method_class

        cls = get_method_class(name).config_class
    elif name in HEADS:
        from retain.methods.heads import HEAD_CONFIGS

        cls = HEAD_CONFIGS.get(name)
    else:
        raise ValueError(f"options marker names '{name}', neither a method nor a head")
    fields = dataclasses.fields(cls) if cls is not None else ()
    if not fields:
        return "This one has no options."
    rows = ["| option | default | what it does |", "|---|---|---|"]
    for f in fields:
        default = getattr(cls(), f.name)
        text = f.metadata.get("help", "").replace("|", "\\|")
        rows.append(f"| `{f.name}` | `{default!r}` | {text} |")
    return "\n".join(rows)


@functools.cache
def _driver():
    spec = importlib.util.spec_from_file_location("benchmarks_driver", DRIVER)
    driver = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(driver)
    return driver


def results_table(name: str, select: str | None) -> str:
    return _driver().table(name, select)


def on_page_markdown(markdown: str, **kwargs) -> str:
    markdown = re.sub(r"<!-- options: ([a-z-]+) -->", lambda m: options_table(m.group(1)),
                      markdown)
    return re.sub(r"<!-- results: ([\w.-]+)(?: ([^\s>]+))? -->",
                  lambda m: results_table(m.group(1), m.group(2)), markdown)
