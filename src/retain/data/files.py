"""The user's own data.

- Classification: CSV or JSON Lines with ``text`` and ``label`` columns. Optional columns:
  ``split`` (``train`` / ``test``; otherwise 80/20 per class), ``task`` (the file's own
  tasks, in order of first appearance, each with the classes of its rows; otherwise
  ``--classes-per-task`` classes per task in the class order) and ``domain`` (required for
  ``--scenario domain``, where ``task`` also serves: one task per domain, in order of first
  appearance). The profile's ``cap`` keeps the first items of each class (of each domain and
  class in a domain-incremental stream). Labels are strings
  or integers; classes are the sorted distinct labels, and class order indices refer to that
  sorted list.
- Language modelling (``--kind lm``): CSV or JSON Lines with ``text`` and ``task`` columns; one
  task per distinct ``task`` value, in order of first appearance, its texts made into sequences
  as lm3 does (``retain.data.lm3``).
- Images: a directory (``retain.data.images``).

The profile's caps apply to the user's data as to a benchmark's.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from retain.data.stream import (
    Stream,
    class_incremental,
    class_order_for,
    domain_incremental,
    split_per_class,
)
from retain.errors import RetainError
from retain.kinds import CLASSIFICATION, LM
from retain.profiles import Profile


def read_records(path: str | Path) -> list[dict]:
    try:
        return _read_records(path)
    except UnicodeDecodeError as e:
        raise RetainError(f"data file '{path}' is not UTF-8 text ({e.reason} at byte {e.start}); "
                          "convert it to UTF-8") from None


def _read_records(path: str | Path) -> list[dict]:
    p = Path(path).expanduser()
    if p.is_dir():
        raise RetainError(f"'{path}' is a directory: --data takes a CSV / JSON Lines file, or "
                          "an image folder with one sub-folder per class")
    if not p.is_file():
        raise RetainError(f"data file '{path}' does not exist")
    suffix = p.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        rows = []
        with open(p, encoding="utf-8-sig") as f:  # a byte-order mark is not part of a key
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise RetainError(f"{path}:{n}: not a JSON object ({e.msg}); each line must "
                                      'be like {"text": "...", "label": "..."}') from None
                if not isinstance(row, dict):
                    raise RetainError(f"{path}:{n}: expected a JSON object per line")
                rows.append(row)
        return rows
    if suffix in (".csv", ".tsv"):
        with open(p, encoding="utf-8-sig", newline="") as f:  # spreadsheets write a BOM
            return list(csv.DictReader(f, delimiter=delimiter(p)))
    raise RetainError(f"data file '{path}': unknown format '{suffix}' (use .csv, .tsv or .jsonl)")


def delimiter(path: str | Path) -> str:
    """A .tsv's tab; a .csv's separator as its first line shows it: ',' unless the header
    holds none and ';', a tab or '|' does (spreadsheets in many locales write ';')."""
    p = Path(path).expanduser()
    if p.suffix.lower() == ".tsv":
        return "\t"
    with open(p, encoding="utf-8-sig", newline="") as f:
        header = f.readline()
    if "," in header:
        return ","
    return next((d for d in (";", "\t", "|") if d in header), ",")


def _label_key(value) -> tuple:
    # integers sort numerically, strings alphabetically, integers first
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, int) or (isinstance(value, str) and value.strip().lstrip("-").isdigit()):
        return (0, int(value), "")
    if isinstance(value, str) and value.strip():
        return (1, 0, value.strip())
    raise ValueError


def file_stream(plan, backbone=None) -> Stream:
    """The stream of a plan's ``data`` (a file, or an image directory)."""
    config, profile = plan.config, plan.profile
    if Path(config.data).expanduser().is_dir():
        from retain.data.images import image_stream

        return image_stream(config, profile)
    stream = READERS[config.kind](config, profile, backbone)
    stream.kind = plan.kind  # a reader may serve several kinds: the run's is the stream's
    return stream


def rows_with(path: str, columns: tuple[str, ...], need: str) -> list[dict]:
    """The file's rows, refused with a one-line error when empty or missing a column."""
    rows = read_records(path)
    if not rows:
        raise RetainError(f"data file '{path}' has no rows")
    for col in columns:
        if col not in rows[0]:
            hint = ""
            if col == "label" and {"text", "task"} <= set(rows[0]):
                hint = " (a 'text' + 'task' file is a language-modelling stream: add --kind lm)"
            elif Path(path).suffix.lower() == ".csv":
                found = delimiter(path)
                hint = f" (read as CSV separated by {found!r})"
            raise RetainError(f"data file '{path}' has no '{col}' column (columns: "
                              f"{', '.join(rows[0])}){hint}; {need}")
    return rows


def lm_file_stream(config, profile: Profile, backbone) -> Stream:
    from retain.data.lm3 import lm_stream

    path = config.data
    rows = rows_with(path, ("text", "task"), "a language-modelling stream needs 'text' and "
                     "'task' (one task per distinct value)")
    domains: dict[str, list[str]] = {}
    for n, row in enumerate(rows, 1):
        if not isinstance(row.get("text"), str) or not row["text"].strip():
            raise RetainError(f"{path}: row {n}: empty or missing text")
        if row.get("task") in (None, ""):
            raise RetainError(f"{path}: row {n}: empty or missing task")
        domains.setdefault(str(row["task"]), []).append(row["text"])
    return lm_stream(Path(path).name, domains, backbone.tokenizer, profile)


def classification_file_stream(config, profile: Profile) -> Stream:
    path = config.data
    rows = rows_with(path, ("text", "label"), "it needs 'text' and 'label'")
    keys = []
    for n, row in enumerate(rows, 1):
        try:
            keys.append(_label_key(row.get("label")))
        except ValueError:
            raise RetainError(f"{path}: row {n}: label {row.get('label')!r} does not parse "
                              "(use a non-empty string or an integer)") from None
        if not isinstance(row.get("text"), str) or not row["text"].strip():
            raise RetainError(f"{path}: row {n}: empty or missing text")
    classes = sorted(set(keys))
    index = {k: i for i, k in enumerate(classes)}
    names = [str(k[1]) if k[0] == 0 else k[2] for k in classes]
    labels = np.asarray([index[k] for k in keys])
    domains = None
    if config.scenario == "domain":
        column = "domain" if "domain" in rows[0] or "task" not in rows[0] else "task"
        if any(r.get(column) in (None, "") for r in rows):
            n = next(i for i, r in enumerate(rows, 1) if r.get(column) in (None, ""))
            raise RetainError(f"--scenario domain needs a '{column}' value on every row of "
                              f"'{path}' (row {n} has none)")
        domains = [str(r[column]) for r in rows]
    # the profile's cap: the first items of each class (of each domain and class)
    groups = labels if domains is None else np.unique(
        [f"{d}\x00{c}" for d, c in zip(domains, labels, strict=True)], return_inverse=True)[1]
    keep = capped(groups, profile.cap)
    rows, labels, groups = [rows[i] for i in keep], labels[keep], groups[keep]
    if domains is not None:
        domains = [domains[i] for i in keep]
    texts = [r["text"] for r in rows]
    if "split" in rows[0]:
        splits = [str(r.get("split", "")).strip().lower() for r in rows]
        bad = sorted(set(splits) - {"train", "test"})
        if bad:
            raise RetainError(f"{path}: split column has values {bad}; use 'train' or 'test'")
        is_train = np.asarray([s == "train" for s in splits])
    else:  # 80/20 per class (per domain and class in a domain-incremental stream)
        train_idx, _ = split_per_class(groups, None)
        is_train = np.isin(np.arange(len(rows)), train_idx)
    name = Path(path).name
    items = [{"text": t} for t in texts]
    if domains is not None:
        order = list(dict.fromkeys(domains))
        return domain_incremental(name, items, labels, names, domains, order, is_train)
    if "task" in rows[0]:  # the file's own tasks, in order of first appearance
        return _tasks_from_column(config, rows, items, labels, names, is_train, profile)
    order = class_order_for(len(classes), config.class_order_seed, config.class_order)
    return class_incremental(name, items, labels, names, order, profile.classes_per_task,
                             is_train, groups=profile.tasks, scenario=config.scenario)


def _tasks_from_column(config, rows: list[dict], items: list[dict], labels: np.ndarray,
                       names: list[str], is_train: np.ndarray, profile: Profile) -> Stream:
    """Tasks from a classification file's ``task`` column: one per distinct value in order of
    first appearance, each with the classes of its rows (sorted); a class in one task only."""
    path = config.data
    tasks: dict[str, list[int]] = {}
    owner: dict[int, str] = {}
    for n, (row, label) in enumerate(zip(rows, labels, strict=True), 1):
        task = row.get("task")
        if task in (None, ""):
            raise RetainError(f"{path}: row {n}: empty task (the 'task' column names each row's "
                              "task; fill it on every row or drop the column)")
        task, label = str(task), int(label)
        if owner.setdefault(label, task) != task:
            raise RetainError(f"{path}: class '{names[label]}' is in tasks '{owner[label]}' and "
                              f"'{task}': in a {config.scenario}-incremental stream each class "
                              "belongs to one task")
        if label not in tasks.setdefault(task, []):
            tasks[task].append(label)
    if config.class_order is not None:
        raise RetainError("--class-order and a 'task' column both order the classes: drop one")
    order = [c for classes in tasks.values() for c in sorted(classes)]
    return class_incremental(Path(path).name, items, labels, names, order, 1, is_train,
                             groups=profile.tasks, scenario=config.scenario,
                             sizes=[len(c) for c in tasks.values()], task_names=list(tasks))


def capped(labels: np.ndarray, cap: int | None) -> np.ndarray:
    """Indices that keep the first ``cap`` items of each class in file order (all: None)."""
    if cap is None:
        return np.arange(len(labels))
    keep = np.concatenate([np.flatnonzero(labels == c)[:cap] for c in np.unique(labels)])
    return np.sort(keep)


# each task kind's file reader: (config, profile, backbone) -> Stream
READERS = {CLASSIFICATION.name: lambda config, profile, backbone:
           classification_file_stream(config, profile),
           LM.name: lm_file_stream}
