"""Checks of the files and folders a command names, from light modules only (no torch): the
command line runs them before any import or work, so that a wrong path costs no start-up and
nothing is written or lost."""

from __future__ import annotations

import os
from pathlib import Path

from retain.errors import RetainError

# the suffixes ``retain predict --out`` writes, and their format
OUTPUT_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl",
                  ".ndjson": "jsonl"}


def check_folder(path: str | Path, flag: str = "--out", inside_run: bool = False) -> None:
    """Refuse a folder to write that is a file, or lies under one, or lies inside a run's
    folder (a folder holding ``checkpoint/state.json``): anywhere in it unless ``inside_run``
    (``evaluate --out RUN/eval``), and never in the run's own ``checkpoint/`` or ``test/``."""
    p = Path(path).expanduser()
    for q in p.parents:
        if (q / "checkpoint" / "state.json").is_file():
            own = p.relative_to(q).parts[0] in ("checkpoint", "test")
            if own or not inside_run:
                raise RetainError(f"{flag} {path} lies inside the run in {q} (it would write "
                                  f"among the run's own files): choose a folder outside it")
    for q in (p, *p.parents):
        if q.exists():
            if not q.is_dir():
                where = "" if q == p else f": {q}"
                raise RetainError(f"{flag} {path}{where} is a file, not a folder; choose "
                                  f"another {flag}")
            return


def check_seeds(seeds: list[int]) -> None:
    """Seeds of a comparison: at least one, none negative, none twice."""
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise RetainError(f"--seeds must be distinct integers 0 or more, got "
                          f"{','.join(map(str, seeds)) or 'none'}")


def check_run_folder(directory: str | Path) -> Path:
    """The state file of the run in ``directory`` (a ``retain run --out`` folder)."""
    state = Path(directory).expanduser() / "checkpoint" / "state.json"
    if not state.is_file():
        raise RetainError(f"{directory} holds no checkpoint: give the --out directory of a "
                          "`retain run`")
    return state


def check_run_out(out: str | Path, resume: bool, overwrite: bool) -> None:
    """``retain run``'s ``--out`` against its ``--resume`` and ``--overwrite``: continue only a
    run that is there, replace one only when asked."""
    path = Path(out).expanduser()
    held = (path / "checkpoint" / "state.json").is_file()
    if resume and overwrite:
        raise RetainError("--resume continues the run in --out and --overwrite replaces it: "
                          "give one of them")
    if resume and not held:
        raise RetainError(f"nothing to resume: {out} holds no checkpoint; drop --resume to start "
                          "a new run there")
    if not (resume or overwrite) and (held or (path / "results.json").is_file()):
        raise RetainError(f"{out} holds an earlier run: add --resume to continue it, --overwrite "
                          "to replace it, or choose another --out")


def output_format(dest: str | Path | None) -> str:
    """``csv``, ``tsv`` or ``jsonl`` by the file's suffix (standard output: csv)."""
    if dest is None:
        return "csv"
    suffix = Path(dest).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise RetainError(f"unknown output format '{suffix}': use .csv, .tsv or .jsonl")
    return OUTPUT_FORMATS[suffix]


def check_predictions_out(out: str | Path | None, data: str | Path, overwrite: bool) -> None:
    """``retain predict --out``: a known suffix, never its own ``--data`` input, and an existing
    file only with ``--overwrite``."""
    output_format(out)
    if not os.path.exists(os.path.expanduser(data)):
        raise RetainError(f"data file '{data}' does not exist")
    if out is None:
        return
    path = Path(out).expanduser()
    check_folder(path.parent, "--out", inside_run=True)
    if path.is_dir():
        raise RetainError(f"--out {out} is a folder: give a .csv, .tsv or .jsonl file")
    if path.exists() and path.samefile(Path(data).expanduser()):
        raise RetainError(f"--out {out} is the --data input: write the predictions to another "
                          "file")
    if path.exists() and not overwrite:
        raise RetainError(f"--out {out} exists: add --overwrite to replace it, or choose "
                          "another file")


def check_export_to(directory: str | Path, to: str | Path, overwrite: bool) -> Path:
    """``retain export --to``: outside the run's folder (an export there would write into the
    run, or replace it), and an existing folder only when it is an earlier export and
    ``--overwrite`` is given; return the resolved path."""
    dest = Path(to).expanduser().resolve()
    run = Path(directory).expanduser().resolve()
    if dest == run or dest in run.parents or run in dest.parents:
        raise RetainError(f"--to {to} holds the run being exported or lies inside it (an "
                          f"export there would write into the run): choose a folder outside "
                          f"{directory}")
    check_folder(dest, "--to")
    if dest.is_dir() and any(dest.iterdir()):
        if not overwrite:
            raise RetainError(f"{dest} exists and is not empty: choose another --to, or add "
                              "--overwrite to replace an earlier export")
        if not (dest / "retain.json").is_file():
            raise RetainError(f"{dest} is not an earlier export (no retain.json): choose an "
                              "empty or new --to")
    return dest


def label_spellings(value) -> list[str]:
    """The class names a label may stand for: as written (trimmed), then as a training file's
    integer label is named (``"07"`` and ``7`` name class ``"7"``)."""
    text = str(value).strip()
    out = [text]
    if not isinstance(value, bool) and text.lstrip("-").isdigit() and str(int(text)) != text:
        out.append(str(int(text)))
    return out


def check_data_for_run(directory: str | Path, data: str | Path, task: int | None,
                       labelled: bool) -> None:
    """``predict`` / ``evaluate``: the file, ``--task`` and (``labelled``) the labels against
    what the run's checkpoint says of its stream, before any model is built: a file with no
    rows, a task the run has not learnt, a label that is none of its classes."""
    import json

    from retain.data.files import read_records

    state = json.loads(check_run_folder(directory).read_text())
    stream = state.get("stream") or {}
    done = state.get("tasks_done")
    from retain.kinds import KINDS

    kind = KINDS.get(stream.get("kind", ""))
    if kind is not None:
        kind.check_task_option(task)
    if task is not None and done is not None and not 1 <= task <= done:
        raise RetainError(f"--task must be between 1 and {done} (the tasks this run has "
                          f"learnt), got {task}")
    if Path(data).expanduser().is_dir():
        return
    rows = read_records(data)
    if not rows:
        raise RetainError(f"nothing to {'evaluate' if labelled else 'predict'}: '{data}' has "
                          "no rows")
    names = set(stream.get("class_names") or [])
    if not labelled or not names:
        return
    for n, row in enumerate(rows, 1):
        value = row.get("label")
        if value is None or (isinstance(value, str) and not value.strip()):
            raise RetainError(f"row {n} has no 'label' value: evaluating needs a 'label' column "
                              "(and 'text' or 'image')")
        if not any(c in names for c in label_spellings(value)):
            shown = sorted(names)
            listed = ", ".join(shown[:10]) + (f", ... ({len(shown)} in all)" if len(shown) > 10
                                               else "")
            raise RetainError(f"row {n}: label '{value}' is not a class of this run; its "
                              f"classes are {listed}")
