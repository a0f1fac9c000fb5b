"""Learning over sessions (``retain learn``): tasks 1-2 with ``run``, then task 3 with
``learn``, equal one 3-task run for every method, and what ``learn`` refuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import retain
from retain.catalogue import METHODS
from retain.cli import main
from retain.engine import learn, train_stream
from tests.conftest import WORDS, make_rows

CONTINUAL = [m for m, info in METHODS.items() if info.continual]  # joint is refused
LM_METHODS = [m for m in CONTINUAL if "lm" in METHODS[m].kinds]
TASKS = (("first", ("animal", "food")), ("second", ("colour", "music")),
         ("third", ("sport", "weather")))


def _write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _class_files(tmp_path: Path) -> tuple[str, str, str]:
    """The whole stream (a `task` column), its first two tasks, and its third."""
    rows = {name: [{**r, "task": name} for r in make_rows(8, list(classes))]
            for name, classes in TASKS}
    whole = _write(tmp_path / "whole.jsonl", [r for rows_ in rows.values() for r in rows_])
    first = _write(tmp_path / "first.jsonl", rows["first"] + rows["second"])
    third = _write(tmp_path / "third.jsonl", rows["third"])
    return whole, first, third


def _domain_files(tmp_path: Path) -> tuple[str, str, str]:
    """Two classes in three domains (the same words, another frame per domain)."""
    frames = {"news": "today the {} was seen", "poems": "oh {} my {}", "ads": "buy a {} now"}
    rows = {d: [{"text": frame.format(*r["text"].split()[1::3]), "label": r["label"],
                 "domain": d} for r in make_rows(8, ["animal", "food"])]
            for d, frame in frames.items()}
    whole = _write(tmp_path / "whole.jsonl", [r for d in rows.values() for r in d])
    first = _write(tmp_path / "first.jsonl", rows["news"] + rows["poems"])
    third = _write(tmp_path / "third.jsonl", rows["ads"])
    return whole, first, third


def _lm_files(tmp_path: Path) -> tuple[str, str, str]:
    rows = []
    for task, label in (("animals", "animal"), ("food", "food"), ("colours", "colour")):
        words = WORDS[label].split()
        rows += [{"text": f"the {words[i % 10]} is near the {words[(7 * i + 3) % 10]} today.",
                  "task": task} for i in range(30)]
    whole = _write(tmp_path / "whole.jsonl", rows)
    first = _write(tmp_path / "first.jsonl", rows[:60])
    third = _write(tmp_path / "third.jsonl", rows[60:])
    return whole, first, third


def _same(a, b) -> None:
    """Equal to 1e-6, NaN where NaN, in nested lists and dicts."""
    if isinstance(a, dict):
        assert set(a) == set(b)
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _same(x, y)
    elif isinstance(a, float) or isinstance(b, float):
        assert (a != a and b != b) or a == pytest.approx(b, abs=1e-6), (a, b)
    else:
        assert a == b


def _check_invariant(make, tmp_path: Path, files, probe_rows: list[dict], **kw) -> None:
    whole, first, third = files
    full, full_method = train_stream(make(data=whole, out=str(tmp_path / "full"), **kw),
                                     progress=False)
    train_stream(make(data=first, out=str(tmp_path / "split"), **kw), progress=False)
    later, later_method = learn(tmp_path / "split", third, progress=False)
    _same(later["matrix"], full["matrix"])
    _same(later["metrics"], full["metrics"])
    for key in ("task_incremental_matrix", "class_incremental_matrix"):
        if key in full:
            _same(later[key], full[key])
    assert later["class_names"] == full["class_names"]
    assert [t["name"] for t in later["tasks"]] == [t["name"] for t in full["tasks"]]
    ours, theirs = later_method.stored_tensors(), full_method.stored_tensors()
    assert set(ours) == set(theirs)
    for name in ours:
        assert ours[name].shape == theirs[name].shape, name
        assert torch.allclose(ours[name].double(), theirs[name].double(), atol=1e-6), name
    assert json.loads(json.dumps(later_method.state())) == json.loads(
        json.dumps(full_method.state()))
    a = retain.load(tmp_path / "split").predict(probe_rows)
    b = retain.load(tmp_path / "full").predict(probe_rows)
    _same(a, b)


def _options(method: str) -> dict:
    # InfLoRA's threshold schedule spans T tasks: the stream's length unless given
    return {"method_options": {"schedule_tasks": 3}} if method == "inflora" else {}


@pytest.mark.parametrize("method", CONTINUAL)
def test_run_then_learn_equals_one_run_class_incremental(method, tiny_config, tmp_path):
    _check_invariant(tiny_config, tmp_path, _class_files(tmp_path),
                     [{"text": "the dog and the rain"}, {"text": "red guitar"}],
                     method=method, lr=1e-2, **_options(method))


@pytest.mark.parametrize("method", CONTINUAL)
def test_run_then_learn_equals_one_run_domain_incremental(method, tiny_config, tmp_path):
    _check_invariant(tiny_config, tmp_path, _domain_files(tmp_path),
                     [{"text": "buy a dog now"}, {"text": "oh bread my cake"}],
                     method=method, scenario="domain", lr=1e-2, **_options(method))


@pytest.mark.parametrize("method", LM_METHODS)
def test_run_then_learn_equals_one_run_language_modelling(method, tmp_path):
    from retain import RunConfig

    def make(**kw):
        return RunConfig(**{**dict(method=method, benchmark=None, kind="lm", profile="smoke",
                                   max_length=16, retention=False, steps=2, batch_size=4,
                                   cap=6, test_cap=2, lr=1e-3), **kw})

    _check_invariant(make, tmp_path, _lm_files(tmp_path),
                     [{"text": "the dog is near the cat today."}], **_options(method))


def test_learn_keeps_test_splits_and_grows_the_run(tiny_config, tmp_path):
    whole, first, third = _class_files(tmp_path)
    cfg = tiny_config(data=first)
    train_stream(cfg, progress=False)
    kept = sorted(p.name for p in (Path(cfg.out) / "test").iterdir())
    assert kept == ["task-001.jsonl", "task-002.jsonl"]
    trained = retain.load(cfg.out)
    results = trained.learn(third)
    assert trained.tasks_done == 3 and trained.class_names[-2:] == ["sport", "weather"]
    assert [len(r) for r in results["matrix"]] == [1, 2, 3]
    assert [s["data"] for s in results["sessions"]] == [first, third]
    assert {p["class"] for p in trained.predict(["the football and the rain"])} <= set(
        trained.class_names)


def test_keep_test_none_scores_only_the_new_tasks(tiny_config, tmp_path):
    whole, first, third = _class_files(tmp_path)
    cfg = tiny_config(data=first, keep_test="none")
    train_stream(cfg, progress=False)
    assert not (Path(cfg.out) / "test").exists()
    results, _ = learn(cfg.out, third, progress=False)
    last = results["matrix"][-1]
    assert last[0] != last[0] and last[1] != last[1] and last[2] == last[2]  # NaN, NaN, score
    assert results["metrics"]["final_accuracy"] == pytest.approx(last[2])


def _refused(capsys, *argv) -> str:
    assert main(list(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    return err


def test_learn_refusals(tiny_config, tmp_path, capsys, lm_file):
    whole, first, third = _class_files(tmp_path)
    cfg = tiny_config(data=first)
    train_stream(cfg, progress=False)
    out = cfg.out
    again = _write(tmp_path / "again.jsonl", make_rows(8, ["animal", "sport"]))
    assert "learnt in an earlier task" in _refused(capsys, "learn", out, "--data", again)
    assert "--method seq-lora" in _refused(capsys, "learn", out, "--data", third, "--method",
                                           "plate")
    assert "--backbone" in _refused(capsys, "learn", out, "--data", third, "--backbone",
                                    "minilm")
    assert "classification run" in _refused(capsys, "learn", out, "--data", lm_file)
    assert "does not exist" in _refused(capsys, "learn", out, "--data", str(tmp_path / "no"))
    # a run that did not finish: that is --resume
    state_path = Path(out) / "checkpoint" / "state.json"
    state = json.loads(state_path.read_text())
    state["tasks_done"] = 1
    state_path.write_text(json.dumps(state))
    assert "--resume" in _refused(capsys, "learn", out, "--data", third)
    joint = tiny_config(method="joint", head="growing", data=first, out=str(tmp_path / "j"))
    train_stream(joint, progress=False)
    assert "cannot learn more" in _refused(capsys, "learn", joint.out, "--data", third)


def test_domain_learn_refuses_an_unknown_class(tiny_config, tmp_path, capsys):
    whole, first, third = _domain_files(tmp_path)
    cfg = tiny_config(data=first, scenario="domain")
    train_stream(cfg, progress=False)
    other = _write(tmp_path / "other.jsonl", [{**r, "domain": "x"} for r in
                                             make_rows(8, ["animal", "sport"])])
    assert "not one of the run's classes" in _refused(capsys, "learn", cfg.out, "--data", other)


def test_learn_from_the_command_line_then_predict_and_export(tiny_config, tmp_path, capsys):
    whole, first, third = _class_files(tmp_path)
    cfg = tiny_config(data=first, method="plate")
    train_stream(cfg, progress=False)
    assert main(["learn", cfg.out, "--data", third, "--quiet"]) == 0
    assert "results:" in capsys.readouterr().out
    trained = retain.load(cfg.out)
    assert trained.tasks_done == 3
    dest = trained.export(tmp_path / "export")
    info = json.loads((dest / "retain.json").read_text())
    assert info["tasks_done"] == 3 and info["class_names"][-1] == "weather"


def test_a_later_session_takes_its_own_training_options(tiny_config, tmp_path, capsys):
    """`retain learn --steps 1 --lr ... --no-retention`: the session trains with them (one step
    a task), records them beside its data, and the run's config holds them from then on."""
    whole, first, third = _class_files(tmp_path)
    cfg = tiny_config(data=first, method="seq-lora")
    train_stream(cfg, progress=False)
    assert main(["learn", cfg.out, "--data", third, "--steps", "1", "--lr", "0.02",
                 "--no-retention", "--quiet"]) == 0
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["per_task"][-1]["steps"] == 1 and res["config"]["lr"] == 0.02
    assert res["sessions"][-1]["options"] == {"steps": 1, "lr": 0.02, "retention": False}


def test_sessions_count_their_own_items_and_seconds_and_replay_from_config(tiny_config,
                                                                           tmp_path, capsys):
    """After `retain learn --steps 1 --lr ...`: each session's training items and seconds, the
    earlier tasks' items kept, the cost the sum of the sessions'; `config.toml` holds the first
    session's config and the later session, so `retain run --config` replays both to the same
    matrix."""
    whole, first, third = _class_files(tmp_path)
    cfg = tiny_config(data=first, method="seq-lora")
    train_stream(cfg, progress=False)
    assert main(["learn", cfg.out, "--data", third, "--steps", "1", "--lr", "0.02",
                 "--no-retention", "--quiet"]) == 0
    res = json.loads((Path(cfg.out) / "results.json").read_text())
    assert [t["train"] > 0 for t in res["tasks"]] == [True, True, True]
    one, two = res["sessions"]
    assert one["train_items"] == res["tasks"][0]["train"] + res["tasks"][1]["train"]
    assert two["train_items"] == res["tasks"][2]["train"]
    for key in ("startup_seconds", "tasks_seconds", "inference_seconds"):
        assert one["seconds"][key] > 0 and two["seconds"][key] > 0, key
        assert res["cost"][key] == pytest.approx(one["seconds"][key] + two["seconds"][key])
    written = (Path(cfg.out) / "config.toml").read_text()
    assert "[[sessions]]" in written and "steps = 1" not in written.split("[[sessions]]")[0]
    again = str(tmp_path / "again")
    assert main(["run", "--config", str(Path(cfg.out) / "config.toml"), "--out", again,
                 "--quiet"]) == 0
    replayed = json.loads((Path(again) / "results.json").read_text())
    assert len(replayed["sessions"]) == 2 and replayed["sessions"][1]["options"] == \
        two["options"]
    assert len(replayed["matrix"][-1]) == 3
    assert replayed["matrix"][-1] == pytest.approx(res["matrix"][-1], abs=1e-6)


def test_a_config_file_with_a_bad_session_is_refused_before_any_work(tmp_path, capsys):
    path = tmp_path / "config.toml"
    path.write_text('method = "seq-lora"\n\n[[sessions]]\nfile = "later.jsonl"\n')
    err = _refused(capsys, "run", "--config", str(path), "--out", str(tmp_path / "o"))
    assert "session 1 must give data" in err and not (tmp_path / "o").exists()


def test_a_validation_run_resumes_to_the_same_split_and_learns_more_with_its_own(
        tiny_config, tmp_path, monkeypatch):
    from retain.methods.baselines import SeqLoRA
    from tests.conftest import crash_on_task

    whole, first, third = _class_files(tmp_path)
    full = train_stream(tiny_config(data=whole, validation=0.25, out=str(tmp_path / "full")),
                        progress=False)[0]
    restore = crash_on_task(monkeypatch, SeqLoRA, 1)
    cfg = tiny_config(data=whole, validation=0.25, out=str(tmp_path / "crashed"))
    with pytest.raises(KeyboardInterrupt):
        train_stream(cfg, progress=False)
    restore()
    resumed = train_stream(cfg, resume=True, progress=False)[0]
    # the split is rebuilt from the data alone: the resumed run scores the same items
    assert resumed["validation_matrix"] == full["validation_matrix"]
    assert [t["held_out"] for t in resumed["tasks"]] == [t["held_out"] for t in full["tasks"]]
    # a later session carves its own tasks' validation items; the earlier tasks' are gone
    # with their training data (NaN), and their test splits are scored as before
    two = tiny_config(data=first, validation=0.25, out=str(tmp_path / "two"))
    train_stream(two, progress=False)
    learnt, _ = learn(two.out, third, progress=False)
    last = learnt["validation_matrix"][-1]
    assert last[0] != last[0] and last[1] != last[1] and 0 <= last[2] <= 1
    assert learnt["tasks"][2]["held_out"] > 0 and len(learnt["matrix"][-1]) == 3


def test_a_later_session_keeps_the_runs_resolved_caps(tiny_config, tmp_path):
    """``--cap 0`` (keep all) is saved resolved; a later session reads it as it was, not
    through the profile again (smoke keeps 40 a class)."""
    whole, first, third = _class_files(tmp_path)
    many = _write(tmp_path / "many.jsonl", [{**r, "task": "many"} for r in make_rows(
        60, ["sport", "weather"])])
    cfg = tiny_config(data=first, cap=0, epochs=1)
    train_stream(cfg, progress=False)
    results, _ = learn(cfg.out, many, progress=False)
    assert results["config"]["cap"] is None
    assert results["tasks"][2]["train"] + results["tasks"][2]["test"] == 120  # all 60 a class
