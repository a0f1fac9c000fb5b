"""The Python API: ``retain.run``, ``compare``, ``report`` and ``load``, the same calls as the
command line. Errors are :class:`~retain.errors.RetainError` and name the Python argument
(``method_options``), not the command-line flag (``--set``)."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from retain.checks import check_run_out, check_seeds
from retain.config import RunConfig
from retain.errors import RetainError
from retain.pythonic import python_errors


def _config(config: RunConfig | None, fields: dict[str, Any]) -> RunConfig:
    names = {f.name for f in dataclasses.fields(RunConfig)}
    unknown = sorted(set(fields) - names)
    if unknown:
        raise RetainError(f"unknown RunConfig field(s) {', '.join(unknown)} (fields: "
                          f"{', '.join(sorted(names))})")
    if config is None:
        return RunConfig(**fields)
    return dataclasses.replace(config, **fields) if fields else config


def _clear_run(out: Path) -> None:
    """Remove an earlier run's own files from ``out``, on the main process only: its checkpoint
    (state and weights files, the folder itself only once empty) when it has a state, its
    ``results.json``, ``config.toml`` and training log, its kept test splits (``test/``) and
    its TensorBoard events (``tensorboard/``). Anything else there stays."""
    import shutil

    from accelerate import PartialState

    from retain import checkpoint

    state = PartialState()
    ckpt = out / "checkpoint"
    if state.is_main_process:
        if checkpoint.read_state(ckpt) is not None:
            for path in ckpt.iterdir():
                if path.name in (checkpoint.STATE, checkpoint.STATE + ".tmp") or re.fullmatch(
                        r"weights-\d+\.safetensors(\.tmp)?", path.name):
                    path.unlink()
            if not any(ckpt.iterdir()):
                ckpt.rmdir()
        for name in ("results.json", "config.toml", "train_log.jsonl"):
            for path in (out / name, out / (name + ".tmp")):
                path.unlink(missing_ok=True)
        test = out / "test"
        if test.is_dir():
            for path in test.iterdir():
                if re.fullmatch(r"task-\d+\.jsonl(\.tmp)?", path.name):
                    path.unlink()
            if not any(test.iterdir()):
                test.rmdir()
        tb = out / "tensorboard"
        if tb.is_dir() and all(p.name.startswith("events.out.tfevents") for p in tb.iterdir()):
            shutil.rmtree(tb)
    state.wait_for_everyone()


@python_errors
def run(config: RunConfig | None = None, *, resume: bool = False, overwrite: bool = False,
        progress: bool = True, sessions: list[dict[str, Any]] | None = None,
        **fields: Any) -> dict[str, Any]:
    """Run one method on a continual stream and return its results (also written to
    ``out/results.json``). Give a :class:`RunConfig`, or its fields as keywords:
    ``retain.run(method="plate", profile="smoke", out="runs/plate")``. ``overwrite=True``
    replaces an earlier run in ``out`` (so a notebook cell can run twice); ``resume=True``
    continues one from its checkpoint. ``sessions``: later sessions to learn after it, each
    ``{"data", "classes_per_task", "options"}`` (what a run's ``config.toml`` lists,
    :func:`retain.config_toml.read_sessions`): the whole run replayed."""
    cfg = _config(config, fields)
    check_run_out(cfg.out, resume, overwrite)
    from retain.checkpoint import owned, read_state
    from retain.engine import learn
    from retain.engine import run as _run

    cfg.resolved()  # a bad config fails before anything is made or removed
    # the launcher's rank (torchrun, accelerate launch): the process group is not up yet
    with owned(cfg.out, int(os.environ.get("RANK", "0")) == 0):
        if overwrite:
            _clear_run(Path(cfg.out))
        results = _run(cfg, resume=resume, progress=progress)
    state = read_state(Path(cfg.out) / "checkpoint") or {}
    for session in (sessions or [])[max(len(state.get("sessions", [])) - 1, 0):]:
        results, _ = learn(cfg.out, session["data"], session.get("classes_per_task"),
                           progress=progress, options=session.get("options"))
    return results


@python_errors
def compare(config: RunConfig | None = None, methods: str | list[str] = "all",
            seeds: Iterable[int] = (0,), *, overwrite: bool = False, progress: bool = True,
            **fields: Any) -> dict[str, Any]:
    """Run several methods on the same stream and seeds (``methods``: names, or ``"all"``
    that serve the stream's kind) and write ``comparison.json`` and the report in ``out``.
    Finished runs are reused; ``overwrite=True`` runs these methods and seeds again (other
    runs in ``out`` stay)."""
    from retain.comparison import compare as _compare
    from retain.comparison import method_names, run_folder

    cfg, seeds = _config(config, fields), list(seeds)
    check_seeds(seeds)
    names = method_names(methods if isinstance(methods, str) else ",".join(methods),
                         cfg.resolved().kind)
    if overwrite:
        for name in names:
            for seed in seeds:
                _clear_run(run_folder(cfg.out, name, seed))
    return _compare(cfg, names, seeds, progress=progress)


@python_errors
def report(directory: str | Path) -> list[Path]:
    """Rebuild the report of a comparison from its saved results (no training); return the
    files written (``report.md``, ``report.html``, figures). Of a run's folder: that run's
    report, in ``RUN/report/``."""
    from retain.reporting import build_report

    run = Path(directory)
    if (run / "results.json").is_file():  # one run: a comparison of it, in RUN/report/
        from retain.comparison import compare_runs

        compare_runs([run], run / "report")
        directory = run / "report"
    return build_report(directory)


@python_errors
def load(directory: str | Path, cpu: bool = True):
    """A finished (or checkpointed) run, rebuilt to predict and export:
    ``retain.load("runs/plate").predict(["a text", ...])``; see :class:`retain.trained.Trained`."""
    from retain.trained import load as _load

    return _load(directory, cpu=cpu)
