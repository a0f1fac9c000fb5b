"""A third task kind registered in a test runs every command with no other edit: the kind owns
its differences (issue 39). The toy kind scores topics as ``hits`` (the share of rows whose class
is right) from the classification reader; nothing outside ``retain.kinds`` knows its name."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from retain.catalogue import METHODS
from retain.cli import main
from retain.data.files import READERS
from retain.kinds import CLASSIFICATION, KINDS, Classification
from retain.methods.base import REGISTRY


class Topics(Classification):
    name = "toy-topics"
    score = "hits"


@pytest.fixture
def toy(monkeypatch):
    kind = Topics()
    monkeypatch.setitem(KINDS, kind.name, kind)
    monkeypatch.setitem(READERS, kind.name, READERS[CLASSIFICATION.name])
    for name in ("seq-lora", "frozen-ncm"):
        info = dataclasses.replace(METHODS[name], kinds=(*METHODS[name].kinds, kind.name))
        monkeypatch.setitem(METHODS, name, info)
        monkeypatch.setattr(REGISTRY[name], "info", info)
    return kind


def test_a_toy_kind_runs_every_command(toy, tiny_config, tmp_path, capsys):
    cfg = tiny_config()
    common = ["--data", cfg.data, "--kind", toy.name, "--classes-per-task", "2", "--backbone",
              cfg.backbone, "--profile", "smoke", "--epochs", "1", "--no-retention",
              "--inference-rounds", "0", "--quiet"]
    run = tmp_path / "run"
    assert main(["run", "--method", "seq-lora", *common, "--out", str(run)]) == 0
    res = json.loads((run / "results.json").read_text())
    assert res["kind"] == toy.name and res["score"]["name"] == "hits"
    assert "final_hits" in res["metrics"]
    printed = capsys.readouterr().out
    assert "final hits" in printed
    assert main(["evaluate", str(run), "--data", cfg.data]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] >= 0
    assert main(["export", str(run), "--to", str(tmp_path / "export")]) == 0
    assert (tmp_path / "export" / "head.safetensors").is_file()
    cmp = tmp_path / "cmp"
    assert main(["compare", "--methods", "seq-lora,frozen-ncm", *common, "--out", str(cmp)]) == 0
    assert "final hits" in (cmp / "report.md").read_text()
    sweep = tmp_path / "sweep"
    assert main(["sweep", "--method", "seq-lora", *common, "--validation", "0.25",
                 "--grid", "lr=1e-3,1e-2", "--out", str(sweep)]) == 0
    frontier = json.loads((sweep / "frontier.json").read_text())
    assert frontier["score"]["name"] == "hits" and "validation_final_hits" in frontier["chosen"]
    assert Path(sweep / "frontier.png").stat().st_size > 0
