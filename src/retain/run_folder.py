"""What a run folder holds beside its checkpoint, written as the run goes: every optimiser
step's log (``train_log.jsonl``) and each task's kept test split (``test/task-NNN.jsonl``, read by
later sessions)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from retain import checkpoint
from retain.data.stream import Split, Task

TRAINING_LOG = "train_log.jsonl"  # one line per optimiser step: task, step, loss, rate


def write_log(out: Path, lines: list[dict[str, Any]]) -> None:
    """Append a finished task's steps to the run's log (and to TensorBoard when the
    ``tensorboard`` package is installed: ``retain[tensorboard]``)."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / TRAINING_LOG, "a", encoding="utf-8") as f:
        f.writelines(json.dumps(checkpoint.finite(line)) + "\n" for line in lines)
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # the optional extra is not installed
        return
    writer = SummaryWriter(str(out / "tensorboard"))
    for line in lines:
        writer.add_scalar("train/loss", line["loss"], line["step"])
        writer.add_scalar("train/lr", line["lr"], line["step"])
    writer.close()


def read_log(out: Path) -> list[dict[str, Any]]:
    path = out / TRAINING_LOG
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def trim_log(out: Path, tasks_done: int) -> None:
    """Keep the log of the tasks a checkpoint holds (a crash may have left a later task's)."""
    log = read_log(out)
    kept = [line for line in log if line["task"] <= tasks_done]
    if len(kept) < len(log):
        checkpoint.write_lines(out / TRAINING_LOG, kept)


TEST_SPLITS = "test"  # each task's test split, kept in the run folder for later sessions


def _test_path(out: Path, index: int) -> Path:
    return out / TEST_SPLITS / f"task-{index + 1:03d}.jsonl"


def keep_test(out: Path, task: Task) -> None:
    """Write ``task``'s test split (items and labels; never training data), once."""
    path = _test_path(out, task.index)
    if path.is_file():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.write_lines(path, [{"label": int(label), "item": item} for item, label in
                                  zip(task.test.items, task.test.labels, strict=True)])


def read_test(out: Path, index: int) -> Split:
    """A kept test split, or an empty one (``--keep-test none``: the task is not scored)."""
    path = _test_path(out, index)
    if not path.is_file():
        return Split([], np.zeros(0, dtype=int))
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return Split([r["item"] for r in rows], np.asarray([r["label"] for r in rows], dtype=int))
