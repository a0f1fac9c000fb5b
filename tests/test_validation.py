"""Choosing on held-out data (issue 40): ``--validation FRACTION`` carves, per class, a part of
each task's training items that is never trained on, the same items whatever the training seed;
each task's row is scored on it beside the test split, and a classification sweep chooses on it
and reports the chosen point's test figure."""

from __future__ import annotations

import json

import numpy as np
import pytest

from retain.cli import main
from retain.errors import RetainError


def _ids(split) -> set[str]:
    return {item["text"] for item in split.items}


def _held_by_class(stream) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for task in stream.tasks:
        for item, label in zip(task.heldout.items, task.heldout.labels, strict=True):
            out.setdefault(stream.class_names[label], set()).add(item["text"])
    return out


def test_the_validation_split_is_disjoint_stratified_and_the_same_for_every_seed(tiny_config):
    plain = tiny_config().plan().build_stream()
    streams = [tiny_config(validation=0.25, seed=s).plan().build_stream() for s in (0, 3)]
    # the training seed (and the class order it draws) moves no item in or out
    assert _held_by_class(streams[0]) == _held_by_class(streams[1])
    for task, a in zip(plain.tasks, streams[0].tasks, strict=True):
        assert not _ids(a.heldout) & _ids(a.train) and not _ids(a.heldout) & _ids(a.test)
        assert _ids(a.heldout) | _ids(a.train) == _ids(task.train)  # carved from training only
        assert _ids(a.test) == _ids(task.test)
        for c in np.unique(task.train.labels):  # a quarter of every class, rounded
            n = int((task.train.labels == c).sum())
            assert int((a.heldout.labels == c).sum()) == min(max(round(0.25 * n), 1), n - 1)


def test_a_run_scores_its_validation_split(tiny_config):
    import retain

    res = retain.run(tiny_config(validation=0.25), progress=False)
    assert [len(r) for r in res["validation_matrix"]] == [1, 2, 3]
    assert res["validation_metrics"]["final_accuracy"] == pytest.approx(
        float(np.mean(res["validation_matrix"][-1])))
    assert all(t["held_out"] > 0 for t in res["tasks"])


def test_validation_is_refused_where_it_means_nothing(tiny_config):
    with pytest.raises(RetainError, match="must lie in"):
        tiny_config(validation=0.6).check()
    with pytest.raises(RetainError, match="give --validation FRACTION"):
        tiny_config(holdout=2).check()


def test_a_classification_sweep_chooses_on_validation_and_reports_the_test_figure(
        tiny_config, tmp_path, capsys):
    cfg = tiny_config()
    out = tmp_path / "sweep"
    assert main(["sweep", "--method", "seq-lora", "--data", cfg.data, "--classes-per-task", "2",
                 "--backbone", cfg.backbone, "--profile", "smoke", "--epochs", "1",
                 "--no-retention", "--inference-rounds", "0", "--validation", "0.25",
                 "--grid", "lr=1e-4,3e-2", "--out", str(out), "--quiet"]) == 0
    frontier = json.loads((out / "frontier.json").read_text())
    points = {p["label"]: p for p in frontier["points"]}
    best = max(points.values(), key=lambda p: p["validation_final_accuracy"])
    assert frontier["chosen"] == {"label": best["label"],
                                  "validation_final_accuracy": best[
                                      "validation_final_accuracy"],
                                  "final_accuracy": best["final_accuracy"]}
    assert f"chosen on validation: {best['label']}" in capsys.readouterr().out
