"""How a task trains: the learning-rate schedule, gradient accumulation, the per-step log, and a
run written down as TOML."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from retain.cli import main
from retain.config import RunConfig
from retain.engine import train_stream
from retain.errors import RetainError


def _log(out: str) -> list[dict]:
    return [json.loads(line) for line in (Path(out) / "train_log.jsonl").read_text()
            .splitlines()]


def _expected_rates(name: str, lr: float, warmup: int, total: int) -> list[float]:
    from transformers import get_scheduler

    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = get_scheduler(name, opt, num_warmup_steps=warmup, num_training_steps=total)
    rates = []
    for _ in range(total):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return rates


@pytest.mark.parametrize("scheduler,warmup,ratio,name", [
    ("linear", 2, 0.0, "linear"), ("cosine", 0, 0.5, "cosine"),
    ("constant", 3, 0.0, "constant_with_warmup")])
def test_each_task_follows_the_schedule_of_get_scheduler(tiny_config, scheduler, warmup, ratio,
                                                          name):
    cfg = tiny_config(steps=6, lr=1e-3, scheduler=scheduler, warmup_steps=warmup,
                      warmup_ratio=ratio)
    res, _ = train_stream(cfg, progress=False)
    log = _log(cfg.out)
    expected = _expected_rates(name, 1e-3, warmup or int(ratio * 6), 6)
    for task in range(1, len(res["per_task"]) + 1):
        rates = [line["lr"] for line in log if line["task"] == task]
        assert rates == pytest.approx(expected, rel=1e-9, abs=1e-15)
    assert expected[0] != expected[-1]  # the schedule moves


def test_the_log_has_one_line_per_optimiser_step(tiny_config):
    cfg = tiny_config(epochs=2)
    res, _ = train_stream(cfg, progress=False)
    log = _log(cfg.out)
    assert len(log) == res["cost"]["steps"] == sum(p["steps"] for p in res["per_task"]) > 0
    for p in res["per_task"]:
        lines = [line for line in log if line["task"] == p["task"]]
        assert len(lines) == p["steps"] and [line["task_step"] for line in lines] == list(
            range(1, p["steps"] + 1))
        assert lines[-1]["loss"] == pytest.approx(p["last_loss"])
    assert [line["step"] for line in log] == list(range(1, len(log) + 1))
    assert res["training_log"]["loss"] == [line["loss"] for line in log]
    assert {line["lr"] for line in log} == {cfg.resolved().lr}  # constant by default


def test_a_resumed_run_logs_each_step_once(tiny_config, monkeypatch, tmp_path):
    from retain.methods.baselines import SeqLoRA
    from tests.conftest import crash_on_task

    cfg = tiny_config(out=str(tmp_path / "crashed"))
    restore = crash_on_task(monkeypatch, SeqLoRA, 1)
    with pytest.raises(KeyboardInterrupt):
        train_stream(cfg, progress=False)
    restore()
    res, _ = train_stream(cfg, resume=True, progress=False)
    assert len(_log(cfg.out)) == res["cost"]["steps"]


def test_gradient_accumulation_takes_n_batches_per_step(tiny_config, monkeypatch):
    from retain.methods.base import ContinualMethod

    calls = []
    forward = ContinualMethod.forward

    def counted(self, batch):
        calls.append(len(batch["labels"]))
        return forward(self, batch)

    monkeypatch.setattr(ContinualMethod, "forward", counted)
    cfg = tiny_config(steps=3, grad_accumulation=2, tasks=1)
    res, _ = train_stream(cfg, progress=False)
    assert res["per_task"][0]["steps"] == 3 and len(calls) == 6
    assert len(_log(cfg.out)) == 3


def test_bad_schedule_options_are_refused():
    for kw, words in (({"scheduler": "step"}, "unknown --scheduler"),
                      ({"warmup_ratio": 1.5}, "--warmup-ratio"),
                      ({"grad_accumulation": 0}, "--grad-accumulation must be 1")):
        with pytest.raises(RetainError, match=words):
            RunConfig(**kw).check()


def _written(tmp_path: Path, cfg: RunConfig) -> Path:
    path = tmp_path / "written.toml"
    path.write_text(cfg.to_toml())
    return path


def test_toml_round_trip_reproduces_a_run(tiny_config, tmp_path, capsys):
    cfg = tiny_config(method="plate", method_options={"r": 3}, out=str(tmp_path / "a"))
    first, _ = train_stream(cfg, progress=False)
    written = Path(cfg.out) / "config.toml"
    assert RunConfig.from_toml(written).resolved() == cfg.resolved()
    kept_all = dataclasses.replace(cfg.resolved(), cap=None, tasks=None)  # 0: all, not the
    again = RunConfig.from_toml(_written(tmp_path, kept_all)).resolved()  # profile's counts
    assert (again.cap, again.tasks) == (None, None)
    again = str(tmp_path / "b")
    assert main(["run", "--config", str(written), "--out", again, "--quiet"]) == 0
    second = json.loads((Path(again) / "results.json").read_text())
    assert second["matrix"] == first["matrix"]
    assert {**second["config"], "out": None} == {**first["config"], "out": None}
    # a flag given on the command line wins over the file
    third = str(tmp_path / "c")
    assert main(["run", "--config", str(written), "--out", third, "--quiet", "--set",
                 "r=2"]) == 0
    third_cfg = json.loads((Path(third) / "results.json").read_text())["config"]
    assert third_cfg["method_options"]["r"] == 2 and third_cfg["method"] == "plate"


def test_a_bad_toml_key_is_refused_in_one_line(tmp_path, capsys):
    path = tmp_path / "run.toml"
    path.write_text('method = "seq-lora"\nbatchsize = 8\n')
    assert main(["run", "--config", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown key 'batchsize'" in err and "\n" not in err
    path.write_text('method = "seq-lora"\nbatch-size = 8\nlr = \n')
    assert main(["run", "--config", str(path), "--out", str(tmp_path / "o")]) == 2
    assert "not valid TOML" in capsys.readouterr().err


def test_tensorboard_events_when_installed(tiny_config):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny_config(steps=2)
    res, _ = train_stream(cfg, progress=False)
    events = EventAccumulator(str(Path(cfg.out) / "tensorboard"))
    events.Reload()
    losses = events.Scalars("train/loss")
    assert [e.step for e in losses] == list(range(1, res["cost"]["steps"] + 1))
    assert [e.value for e in losses] == pytest.approx(res["training_log"]["loss"], rel=1e-6)


@pytest.mark.parametrize("frozen_before", [False, True])
def test_the_task_loop_freezes_what_lived_before_it_and_collects_the_rest(tiny_config,
                                                                          monkeypatch,
                                                                          frozen_before):
    """A run's task loop freezes the objects alive before it (after collecting the garbage
    among them) so that accelerate's collection at the end of each phase scans only what the
    run made since; a cycle a phase leaves is still collected by that collection (automatic
    collection off), and the collector is left as found (a process that froze objects itself
    keeps them frozen, and nothing more is frozen)."""
    import gc
    import weakref

    from retain.loop import Engine

    class Node:
        pass

    def cycle() -> weakref.ref:
        node = Node()
        node.me = node
        return weakref.ref(node)

    def is_frozen(obj) -> bool:  # frozen objects are not among the generations' objects
        return not any(o is obj for o in gc.get_objects())

    seen, left = [], []
    train = Engine.train

    def spy(self, task, splits, record):
        seen.append((gc.get_freeze_count() > 0, is_frozen(sentinel)))
        left.append(cycle())  # garbage this phase leaves
        return train(self, task, splits, record)

    monkeypatch.setattr(Engine, "train", spy)
    cfg = tiny_config(method="seq-ft", steps=2)
    sentinel = []  # a tracked object alive before the run
    enabled = gc.isenabled()
    gc.disable()  # only the run's own collections may free anything
    try:
        before = cycle()  # garbage from before the run
        if frozen_before:
            gc.freeze()
        train_stream(cfg, progress=False)
        assert seen and all(during == (True, True) for during in seen)
        assert all(ref() is None for ref in left)  # each collected by its phase's end
        assert (before() is None) != frozen_before  # collected before freezing, not frozen
        assert is_frozen(sentinel) == frozen_before
        assert (gc.get_freeze_count() > 0) == frozen_before
    finally:
        if frozen_before:
            gc.unfreeze()
        if enabled:
            gc.enable()
