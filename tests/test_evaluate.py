"""``retain evaluate`` / ``Trained.evaluate``: a labelled file scored with a trained run, every
figure checked against ``Trained.predict`` on the same rows."""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

import retain
from retain.cli import main
from retain.errors import RetainError
from tests.conftest import make_rows, small_head


def _write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def trained_run(tiny_bert, tmp_path_factory) -> str:
    """One classification run shared by this module's tests: `tiny_config`'s stream (3 tasks
    of 2 classes from `make_rows`, on the tiny BERT), with frozen-ncm and one epoch."""
    from retain import RunConfig

    root = tmp_path_factory.mktemp("evaluate")
    data = _write(root / "data.jsonl", make_rows())
    cfg = RunConfig(method="frozen-ncm", data=data, benchmark=None, profile="smoke",
                    classes_per_task=2, backbone=tiny_bert, epochs=1, batch_size=8,
                    retention=False, out=str(root / "run"), head_options=small_head("frozen-ncm"))
    retain.run(cfg, progress=False)
    return cfg.out


@pytest.fixture(scope="module")
def trained(trained_run):
    return retain.load(trained_run)


def _rows(per_class: int = 4) -> list[dict]:
    """Rows of every class, in another mix of words than the training file's."""
    return [{"text": r["text"].replace("the ", "a "), "label": r["label"]}
            for r in make_rows(per_class)]


def test_accuracy_per_class_and_confusion_agree_with_predict(trained, tmp_path):
    rows = _rows()
    result = trained.evaluate(_write(tmp_path / "eval.jsonl", rows))
    preds = [p["class"] for p in trained.predict(rows)]
    labels = [r["label"] for r in rows]
    hits = [p == t for p, t in zip(preds, labels, strict=True)]
    assert result["kind"] == "classification" and result["items"] == len(rows)
    assert result["accuracy"] == pytest.approx(sum(hits) / len(rows))
    # per class: counts sum to the rows; each class's accuracy from predict
    assert sum(c["items"] for c in result["per_class"].values()) == len(rows)
    assert set(result["per_class"]) == set(labels)
    for name, cell in result["per_class"].items():
        mine = [h for h, t in zip(hits, labels, strict=True) if t == name]
        assert cell["items"] == len(mine)
        assert cell["accuracy"] == pytest.approx(sum(mine) / len(mine))
    # the confusion matrix: rows the true class, columns the predicted one
    conf = result["confusion"]
    names, matrix = conf["classes"], conf["matrix"]
    assert names == trained.class_names
    counts = Counter(zip(labels, preds, strict=True))
    assert matrix == [[counts[(t, p)] for p in names] for t in names]
    assert sum(map(sum, matrix)) == len(rows)
    diagonal = sum(matrix[i][i] for i in range(len(names)))
    assert diagonal / len(rows) == pytest.approx(result["accuracy"])
    # per task: the task that holds the row's class, in task order
    tasks = trained.stream.tasks
    assert [t["task"] for t in result["per_task"]] == [1, 2, 3]
    for row in result["per_task"]:
        task = tasks[row["task"] - 1]
        assert row["name"] == task.name
        mine = [h for h, t in zip(hits, labels, strict=True)
                if t in {trained.class_names[c] for c in task.classes}]
        assert row["items"] == len(mine)
        assert row["accuracy"] == pytest.approx(sum(mine) / len(mine))


def test_the_cli_writes_json_csv_and_png(trained_run, trained, tmp_path, capsys):
    data = _write(tmp_path / "eval.jsonl", _rows(2))
    expected = trained.evaluate(data)
    assert main(["evaluate", trained_run, "--data", data]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == expected
    assert len(captured.out.splitlines()) == len(expected) + 2  # a key a line, not a number
    assert captured.err.strip() == f"accuracy {expected['accuracy']:.4f} over 12 rows"
    out = tmp_path / "scores"
    assert main(["evaluate", trained_run, "--data", data, "--out", str(out)]) == 0
    printed = capsys.readouterr().out.split()
    written = [out / "evaluation.json", out / "confusion.csv", out / "confusion.png"]
    assert printed == [w for p in written for w in ("wrote", str(p))]
    assert json.loads(written[0].read_text()) == expected
    with open(written[1], newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == ["true\\predicted", *trained.class_names]
    assert [r[0] for r in table[1:]] == trained.class_names
    assert [[int(x) for x in r[1:]] for r in table[1:]] == expected["confusion"]["matrix"]
    assert written[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*"))  # no temporary file left behind


def test_an_unknown_label_is_refused_in_one_line(trained_run, tmp_path, capsys):
    rows = _rows(1) + [{"text": "a dinosaur", "label": "dinosaur"}]
    data = _write(tmp_path / "eval.jsonl", rows)
    out = tmp_path / "scores"
    assert main(["evaluate", trained_run, "--data", data, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("retain: error: ")
    assert f"row {len(rows)}: label 'dinosaur'" in err and "animal" in err
    assert not out.exists()
    # a missing label too, and the arguments before loading anything
    data = _write(tmp_path / "unlabelled.jsonl", [{"text": "a dog"}])
    assert main(["evaluate", trained_run, "--data", data]) == 2
    assert "row 1 has no 'label'" in capsys.readouterr().err
    for argv, message in ((["--task", "0"], "--task must be 1 or more"),
                          (["--batch-size", "0"], "--batch-size must be 1 or more")):
        assert main(["evaluate", trained_run, "--data", data, *argv]) == 2
        assert message in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path), "--data", data]) == 2
    assert "holds no checkpoint" in capsys.readouterr().err


def test_task_k_scores_task_incrementally_and_refuses_other_tasks(trained, tmp_path):
    first = trained.stream.tasks[0]
    names = {trained.class_names[c] for c in first.classes}
    rows = [r for r in _rows() if r["label"] in names]
    result = trained.evaluate(_write(tmp_path / "task1.jsonl", rows), task=1)
    preds = [p["class"] for p in trained.predict(rows, task=1)]
    assert set(preds) <= names
    hits = sum(p == r["label"] for p, r in zip(preds, rows, strict=True))
    assert result["accuracy"] == pytest.approx(hits / len(rows))
    assert [(t["task"], t["items"]) for t in result["per_task"]] == [(1, len(rows))]
    other = next(r for r in _rows() if r["label"] not in names)
    with pytest.raises(RetainError, match=rf"task 1: row {len(rows) + 1}'s label "
                                          rf"'{other['label']}' is not one of task 1's"):
        trained.evaluate(_write(tmp_path / "mixed.jsonl", rows + [other]), task=1)
    with pytest.raises(RetainError, match="task must be between 1 and 3"):
        trained.evaluate(_write(tmp_path / "any.jsonl", rows), task=4)


def test_integer_labels_name_their_classes():
    from retain.checks import label_spellings as _spellings

    assert _spellings(7) == ["7"] and _spellings(" 07") == ["07", "7"]
    assert _spellings("dog") == ["dog"] and _spellings(True) == ["True"]


def test_domain_runs_score_per_task_by_the_domain_column():
    """Every task of a domain-incremental run holds every class: a row's task is the one its
    `domain` names (one named by no task: `task` None); without the column, no per-task rows."""
    from retain.evaluation import _per_task

    tasks = [SimpleNamespace(index=i, name=n, classes=[0, 1]) for i, n in
             enumerate(["news", "wiki"])]
    run = SimpleNamespace(stream=SimpleNamespace(scenario="domain", tasks=tasks))
    rows = [{"domain": d} for d in ("wiki", "news", "wiki", "blogs")]
    labels, predicted = [0, 1, 1, 0], [0, 0, 1, 1]
    assert _per_task(run, rows, labels, predicted) == [
        {"task": 1, "name": "news", "items": 1, "accuracy": 0.0},
        {"task": 2, "name": "wiki", "items": 2, "accuracy": 1.0},
        {"task": None, "name": "blogs", "items": 1, "accuracy": 0.0}]
    assert _per_task(run, [{}] * 4, labels, predicted) == []


def test_language_model_perplexity_per_task_is_token_weighted(lm_file, tmp_path, capsys):
    from retain import RunConfig

    out = str(tmp_path / "lm")
    retain.run(RunConfig(method="seq-lora", data=lm_file, benchmark=None, kind="lm",
                         profile="smoke", max_length=16, retention=False, out=out, steps=1,
                         batch_size=8, cap=4, test_cap=2), progress=False)
    trained = retain.load(out)
    rows = [json.loads(line) for line in Path(lm_file).read_text().splitlines()][::8]
    rows[0]["text"] = " ".join([rows[0]["text"]] * 4)  # rows of unequal length
    rows.append({"text": "a", "task": "food"})  # one token: no perplexity, no tokens
    data = _write(tmp_path / "eval.jsonl", rows)
    result = trained.evaluate(data)
    preds = trained.predict(rows)
    assert preds[-1]["perplexity"] is None

    def pooled(group: list[dict]) -> tuple[int, float]:
        scored = [p for p in group if p["perplexity"] is not None]
        tokens = sum(p["tokens"] for p in scored)
        return tokens, math.exp(sum(p["tokens"] * math.log(p["perplexity"]) for p in scored)
                                / tokens)

    assert result["kind"] == "lm" and result["items"] == len(rows)
    tokens, ppl = pooled(preds)
    assert result["tokens"] == tokens and result["perplexity"] == pytest.approx(ppl, rel=1e-9)
    assert [t["task"] for t in result["per_task"]] == ["animals", "food"]
    for row in result["per_task"]:
        group = [p for p, r in zip(preds, rows, strict=True) if r["task"] == row["task"]]
        assert row["items"] == len(group)
        assert (row["tokens"], row["perplexity"]) == pytest.approx(pooled(group), rel=1e-9)
    # token-weighted, not a plain mean of the rows' perplexities
    animals = [p for p, r in zip(preds, rows, strict=True) if r["task"] == "animals"]
    plain = sum(p["perplexity"] for p in animals) / len(animals)
    assert result["per_task"][0]["perplexity"] != pytest.approx(plain, rel=1e-6)
    with pytest.raises(RetainError, match="classification runs only"):
        trained.evaluate(data, task=1)
    # the command line: a line for people, evaluation.json alone with --out
    capsys.readouterr()
    assert main(["evaluate", out, "--data", data, "--out", str(tmp_path / "s")]) == 0
    assert capsys.readouterr().err.strip() == (f"perplexity {result['perplexity']:.4g} over "
                                               f"{tokens} tokens of {len(rows)} rows")
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["evaluation.json"]
    assert json.loads((tmp_path / "s" / "evaluation.json").read_text()) == result
