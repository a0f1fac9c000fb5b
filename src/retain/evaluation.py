"""Scoring a labelled file with a trained run (``retain evaluate``), on top of
:meth:`Trained.predict <retain.trained.Trained.predict>`.

- Classification: the file's ``text`` (or ``image``) and ``label`` columns; the accuracy over
  all rows, per class, per task (the run's task that holds the row's class; for a
  domain-incremental run, the task named by the row's ``domain``, or ``task``), and the
  confusion matrix (rows: the true class, columns: the predicted one, in the stream's class
  order).
- Language modelling: the file's ``text`` and optional ``task`` columns; the perplexity over
  all rows and per ``task`` value: ``exp`` of the token-weighted mean of the rows' log
  perplexities (the mean negative log-likelihood over all their scored tokens).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from retain.checkpoint import finite
from retain.checks import label_spellings
from retain.errors import RetainError

Trained = Any  # a retain.trained.Trained (not imported: trained.py calls this module)

_SHOWN = 30  # class names listed in an error message, at most


def evaluate(trained: Trained, data: str | Path | list, task: int | None = None,
             batch_size: int | None = None) -> dict[str, Any]:
    """Score ``data`` (a CSV / JSON Lines file, or a list of row dicts) with ``trained``; see
    this module's docstring for what the returned dict holds."""
    return finite(trained.kind.evaluate_rows(trained, data, task, batch_size))


def perplexity_scores(trained: Trained, data: str | Path | list, task: int | None,
                      batch_size: int | None) -> dict[str, Any]:
    """A language-modelling run's scores of ``data`` (``Kind.evaluate_rows``)."""
    rows = trained.predict(data, batch_size, task)  # refuses a task for this kind
    return _language_modelling(trained, rows)


def classification_scores(trained: Trained, data: str | Path | list, task: int | None,
                          batch_size: int | None) -> dict[str, Any]:
    """A classification run's scores of ``data`` (``Kind.evaluate_rows``)."""
    known = trained._task(task)
    rows = trained.rows(data)
    labels = _labels(trained, rows)
    if known is not None:
        _check_task_rows(trained, known, labels)
    preds = trained.predict(rows, batch_size, task)
    index = {name: i for i, name in enumerate(trained.class_names)}
    predicted = [index[p["class"]] for p in preds]
    return _classification(trained, rows, labels, predicted)


# --- classification --------------------------------------------------------------------------
def _labels(trained: Trained, rows: list[dict]) -> list[int]:
    """Each row's class position; a label missing or not among the run's classes is refused."""
    index = {name: i for i, name in enumerate(trained.class_names)}
    out = []
    for n, row in enumerate(rows, 1):
        value = row.get("label")
        if value is None or (isinstance(value, str) and not value.strip()):
            raise RetainError(f"row {n} has no 'label' value: evaluating needs a 'label' column "
                              "(and 'text' or 'image')")
        found = next((index[c] for c in label_spellings(value) if c in index), None)
        if found is None:
            names = trained.class_names
            shown = ", ".join(names[:_SHOWN]) + (f", ... ({len(names)} in all)"
                                                 if len(names) > _SHOWN else "")
            raise RetainError(f"row {n}: label '{value}' is not a class of this run; its "
                              f"classes are {shown}")
        out.append(found)
    return out


def _check_task_rows(trained: Trained, known, labels: list[int]) -> None:
    inside = set(known.classes)
    outside = [n for n, c in enumerate(labels, 1) if c not in inside]
    if outside:
        n = outside[0]
        classes = ", ".join(trained.class_names[c] for c in known.classes)
        raise RetainError(f"--task {known.index + 1}: row {n}'s label "
                          f"'{trained.class_names[labels[n - 1]]}' is not one of task "
                          f"{known.index + 1}'s classes ({classes}); {len(outside)} of "
                          f"{len(labels)} rows are not: leave out --task, or keep task "
                          f"{known.index + 1}'s rows only")


def _accuracy(hits: int, items: int) -> float | None:
    return hits / items if items else None


def _classification(trained: Trained, rows: list[dict], labels: list[int],
                    predicted: list[int]) -> dict[str, Any]:
    names = trained.class_names
    matrix = [[0] * len(names) for _ in names]
    for true, pred in zip(labels, predicted, strict=True):
        matrix[true][pred] += 1
    hits = sum(matrix[c][c] for c in range(len(names)))
    per_class = {names[c]: {"items": sum(matrix[c]), "accuracy": _accuracy(matrix[c][c],
                                                                           sum(matrix[c]))}
                 for c in range(len(names)) if sum(matrix[c])}
    return {"kind": trained.kind.name, "items": len(labels),
            "accuracy": _accuracy(hits, len(labels)), "per_class": per_class,
            "per_task": _per_task(trained, rows, labels, predicted),
            "confusion": {"classes": list(names), "matrix": matrix}}


def _per_task(trained: Trained, rows: list[dict], labels: list[int],
              predicted: list[int]) -> list[dict[str, Any]]:
    """Accuracy per task of the run: the task that holds the row's class or, for a
    domain-incremental run (every task holds every class), the task named by the row's
    ``domain`` (or, without that column, ``task``) value: a domain no task is named after gets
    ``task: null``, and a file without either column no rows here."""
    tasks = trained.stream.tasks
    if trained.stream.scenario == "domain":
        # the column a training file names its domains with: 'domain', else 'task'
        column = next((c for c in ("domain", "task")
                       if any(r.get(c) not in (None, "") for r in rows)), None)
        if column is None:
            return []
        by_name = {t.name: t.index for t in tasks}
        keys: list[tuple[int | None, str | None]] = []
        for row in rows:
            name = None if row.get(column) in (None, "") else str(row[column]).strip()
            keys.append((by_name.get(name) if name is not None else None, name))
    else:
        of_class = {c: t.index for t in tasks for c in t.classes}
        keys = [(of_class.get(c), tasks[of_class[c]].name if c in of_class else None)
                for c in labels]
    groups: dict[tuple[int | None, str | None], list[int]] = {}
    for key, true, pred in zip(keys, labels, predicted, strict=True):
        groups.setdefault(key, [0, 0])
        groups[key][0] += 1
        groups[key][1] += int(true == pred)
    order = sorted(groups, key=lambda k: (k[0] is None, -1 if k[0] is None else k[0]))
    return [{"task": None if k[0] is None else k[0] + 1, "name": k[1], "items": groups[k][0],
             "accuracy": _accuracy(groups[k][1], groups[k][0])} for k in order]


# --- language modelling ----------------------------------------------------------------------
def _pooled(rows: list[dict]) -> dict[str, Any]:
    """Items, scored tokens and ``exp`` of the token-weighted mean log perplexity."""
    scored = [(r["tokens"], r["perplexity"]) for r in rows if r["tokens"] and r["perplexity"]]
    tokens = sum(n for n, _ in scored)
    if not tokens:
        return {"items": len(rows), "tokens": 0, "perplexity": None}
    mean = sum(n * math.log(p) for n, p in scored) / tokens
    return {"items": len(rows), "tokens": tokens,
            "perplexity": math.exp(mean) if mean < 709 else math.inf}


def _language_modelling(trained: Trained, rows: list[dict]) -> dict[str, Any]:
    per_task = []
    if any(r.get("task") not in (None, "") for r in rows):
        groups: dict[str | None, list[dict]] = {}
        for row in rows:
            value = row.get("task")
            groups.setdefault(None if value in (None, "") else str(value), []).append(row)
        per_task = [{"task": k, **_pooled(g)} for k, g in groups.items()]
    return {"kind": trained.kind.name, **_pooled(rows), "per_task": per_task}


# --- files -----------------------------------------------------------------------------------
def summary_line(result: dict[str, Any]) -> str:
    """One line for people: the overall figure and how many rows it covers."""
    if "accuracy" in result:
        acc = result["accuracy"]
        return (f"accuracy {acc:.4f} over {result['items']} rows" if acc is not None
                else f"no accuracy: {result['items']} rows")
    ppl = result["perplexity"]
    return (f"perplexity {ppl:.4g} over {result['tokens']} tokens of {result['items']} rows"
            if ppl is not None else f"no perplexity: {result['items']} rows, no scored token")


def confusion_csv(result: dict[str, Any]) -> str:
    """The confusion matrix as CSV: a header ``true\\predicted`` then the class names, and one
    row per true class."""
    conf = result["confusion"]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["true\\predicted", *conf["classes"]])
    for name, counts in zip(conf["classes"], conf["matrix"], strict=True):
        writer.writerow([name, *counts])
    return buf.getvalue()


def write_evaluation(result: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """``evaluation.json`` and, for classification, ``confusion.csv`` and ``confusion.png`` in
    ``out_dir`` (made if needed), each written whole or not at all; return their paths."""
    from retain.checkpoint import write_json

    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "evaluation.json"]
    write_json(paths[0], result)
    if "confusion" in result:
        csv_path, png_path = out / "confusion.csv", out / "confusion.png"
        tmp = csv_path.with_name(f".{csv_path.name}.tmp")
        tmp.write_text(confusion_csv(result), encoding="utf-8")
        tmp.replace(csv_path)
        tmp = png_path.with_name(f".{png_path.name}.tmp.png")
        _confusion_figure(result, tmp)
        tmp.replace(png_path)
        paths += [csv_path, png_path]
    return paths


def _confusion_figure(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = result["confusion"]["classes"]
    counts = np.asarray(result["confusion"]["matrix"], dtype=int)
    n = len(names)
    side = min(4 + 0.35 * n, 24)
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    image = ax.imshow(counts, cmap="Blues")
    fig.colorbar(image, ax=ax, label="rows")
    ticks = list(range(n))
    font = max(4, min(9, 300 // max(n, 1)))
    ax.set_xticks(ticks, names, rotation=90, fontsize=font)
    ax.set_yticks(ticks, names, fontsize=font)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    top = counts.max() if counts.size else 0
    for i in range(n):
        for j in range(n):
            if counts[i, j]:
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=font,
                        color="white" if counts[i, j] > top / 2 else "black")
    acc = result["accuracy"]
    ax.set_title(f"accuracy {acc:.4f} over {result['items']} rows" if acc is not None
                 else f"{result['items']} rows")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
