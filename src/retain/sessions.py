"""Sessions of a run (``retain learn``): the stream of every session's tasks, the kind of a
later session's file, and what each session records (its options, training items and seconds)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from retain.backbones import Backbone
from retain.config import Plan, RunConfig
from retain.data.stream import Stream
from retain.run_folder import read_test

# a session's own seconds (results["sessions"][k]["seconds"]); the run's cost sums them
SESSION_SECONDS = ("startup_seconds", "tasks_seconds", "retention_seconds", "inference_seconds")


def earlier_sessions(out: Path, saved: dict[str, Any]) -> list[dict[str, Any]]:
    """The sessions so far, each with its training items and seconds (from ``results.json``,
    written after the checkpoint); a run's first session is the run itself."""
    import json

    written = out / "results.json"
    results = json.loads(written.read_text()) if written.is_file() else {}
    if "sessions" in saved:
        known = results.get("sessions", [])
        return [{**s, **{k: known[i][k] for k in ("train_items", "seconds")
                         if i < len(known) and k in known[i]}}
                for i, s in enumerate(saved["sessions"])]
    cfg = saved["config"]
    first = {"data": cfg.get("data") or cfg.get("benchmark"), "first_task": 0,
             "classes_per_task": cfg.get("classes_per_task"), "options": {}}
    if results:
        first["train_items"] = sum(t["train"] for t in results["tasks"])
        first["seconds"] = {k: results["cost"].get(k, 0.0) for k in SESSION_SECONDS}
    return [first]


def check_learn_kind(plan: Plan, data: str) -> None:
    """A file of another task kind than the run's, refused by its columns."""
    plan.kind.check_session_file(data, _columns(data), Path(data).expanduser().is_dir(),
                                 str(plan.config.out))


def learnt_stream(plan: Plan, saved: dict[str, Any], backbone: Backbone) -> Stream:
    """The stream of a run's sessions: the tasks of the earlier sessions (from the checkpoint's
    outline, with their kept test splits), then the tasks of the newest session's file."""
    cfg = plan.config
    out, session = Path(cfg.out), saved["sessions"][-1]
    known = session["first_task"]
    outline = {**saved["stream"], "tasks": saved["stream"]["tasks"][:known]}
    old = Stream.from_outline(outline, [read_test(out, i) for i in range(known)])
    new_cfg = dataclasses.replace(cfg, data=session["data"], benchmark=None, tasks=None,
                                  class_order=None, classes_per_task=(
                                      session["classes_per_task"] or cfg.classes_per_task))
    new = _file_plan(plan, new_cfg).build_stream(backbone)
    if "task" not in _columns(session["data"]) and not session["classes_per_task"] and (
            plan.kind.one_task_without_column(cfg.scenario)):
        one = dataclasses.replace(new_cfg, classes_per_task=new.num_classes)
        new = _file_plan(plan, one).build_stream(backbone)  # no task column, no
        # --classes-per-task: one task
    return old.extended(new)


def _file_plan(plan: Plan, config: RunConfig) -> Plan:
    """The run's plan reading a later session's file: ``config`` as given (no profile's cap
    on tasks: every task of the file is learnt), the run's kind, method and head."""
    return dataclasses.replace(plan, config=config, profile=config.run_profile(),
                               benchmark=None)


def _columns(data: str) -> set[str]:
    from retain.data.files import read_records

    if Path(data).expanduser().is_dir():
        return set()
    rows = read_records(data)
    return set(rows[0]) if rows else set()


def session_seconds(sessions: list[dict[str, Any]], phases: dict[str, float], record,
                    stream: Stream) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """The sessions with the newest one's own seconds and training items, and the run's
    seconds summed over them. ``phases``: this session's start-up, retention and inference
    seconds, and every session's task seconds (the record's)."""
    sessions = [dict(s) for s in sessions]
    before = sum(s.get("seconds", {}).get("tasks_seconds", 0.0) for s in sessions[:-1])
    own = {**phases, "tasks_seconds": record.wall_seconds - before}
    sessions[-1]["seconds"] = own
    sessions[-1]["train_items"] = sum(len(t.train) for t in
                                      stream.tasks[sessions[-1]["first_task"]:])
    return sessions, {k: sum(s.get("seconds", {}).get(k, 0.0) for s in sessions[:-1]) + own[k]
                      for k in SESSION_SECONDS}
