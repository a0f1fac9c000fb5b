"""One row of headline figures per run, shared by the command line, benchmarks and reports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Column:
    """One headline figure of a run: its key in the summary row, its label in tables and its
    direction (``lower``: a lower value is better)."""

    key: str
    label: str
    lower: bool = False

    @property
    def direction(self) -> str:
        return "lower" if self.lower else "higher"


_c = Column  # the tables below: key, label, lower is better


def score_columns(score: str, higher_is_better: bool) -> list[Column]:
    """A task kind's own columns, named after its score (``final_accuracy``, ...)."""
    lower = not higher_is_better
    return [_c(f"final_{score}", f"final {score}", lower),
            _c(f"average_incremental_{score}", f"average incremental {score}", lower)]


def _scored(prefix: str, label: str) -> list[Column]:
    """The same figure for the score of every registered kind (``validation_final_...``)."""
    from retain.kinds import KINDS

    return [_c(f"{prefix}{k.score}", label.format(score=k.score), not k.higher_is_better)
            for k in KINDS.values()]


SHARED: list[Column] = [
    _c("forgetting", "forgetting", True),
    _c("bwt", "backward transfer"),
    _c("plasticity", "plasticity"),
]
RETENTION_AND_COST: list[Column] = [
    _c("retention_wordsim353", "retention wordsim353 (ratio)"),
    _c("retention_simlex999", "retention simlex999 (ratio)"),
    _c("retention_lee", "retention lee (ratio)"),
    _c("retention_embedding_drift", "retention embedding drift (ratio)"),
    _c("retention_min", "retention, lowest ratio"),
    _c("retention_shakespeare_perplexity", "retention Shakespeare perplexity (ratio)", True),
    _c("retention_kl_from_untouched", "retention KL from untouched (nats/token)", True),
    *(_c(f"retention_english_{d}_{what}", f"retention {d} {label}", True)
      for d in ("definitions", "news", "encyclopedia")
      for what, label in (("perplexity", "perplexity (ratio)"), ("kl", "KL (nats/token)"))),
    _c("retention_worst_perplexity", "retention, worst English perplexity (ratio)", True),
    _c("trainable_parameters", "trainable parameters", True),
    _c("stored_parameters", "stored parameters", True),
    _c("train_seconds", "train seconds", True),
    _c("boundary_seconds", "boundary seconds", True),
    _c("median_step_seconds", "median step seconds", True),
    _c("peak_memory_mb", "peak memory MB", True),
    _c("inference_ratio", "inference time vs untouched (ratio)", True),
    _c("startup_seconds", "start-up seconds (model, data, probe)", True),
    _c("tasks_seconds", "task seconds (train, boundaries, eval)", True),
    _c("retention_seconds", "retention seconds", True),
    _c("inference_seconds", "inference timing seconds", True),
    _c("wall_seconds", "wall seconds (the four above)", True),
]


def columns() -> list[Column]:
    """Every headline column, in table order: each registered kind's score columns, then the
    figures every kind shares (a kind added to ``retain.kinds.KINDS`` brings its own)."""
    from retain.kinds import KINDS

    own = [c for k in KINDS.values() for c in score_columns(k.score, k.higher_is_better)]
    return _unique([*own, *SHARED,
                    *_scored("task_incremental_final_", "task-incremental final {score}"),
                    *_scored("validation_final_", "validation final {score} (--validation)"),
                    *RETENTION_AND_COST])


def _unique(cols: list[Column]) -> list[Column]:
    seen: dict[str, Column] = {}
    for c in cols:
        seen.setdefault(c.key, c)
    return list(seen.values())


def column(key: str) -> Column | None:
    return next((c for c in columns() if c.key == key), None)


def printed() -> list[str]:
    """The columns `retain compare` prints (the report has them all)."""
    from retain.kinds import KINDS

    return [*(f"final_{k.score}" for k in KINDS.values()), "forgetting", "plasticity",
            *(k.retention_key for k in KINDS.values()), "retention_kl_from_untouched",
            "stored_parameters", "wall_seconds"]


def summary_row(results: dict[str, Any]) -> dict[str, Any]:
    """The headline figures of one ``results.json`` (None where a figure is undefined)."""
    m, c = results["metrics"], results["cost"]
    score = results["score"]["name"]
    row: dict[str, Any] = {"method": results["method"], "head": results["head"]}
    for key in (f"final_{score}", f"average_incremental_{score}", "forgetting", "bwt",
                "plasticity"):
        row[key] = m.get(key)
    if results.get("validation_metrics"):  # --validation: the figure a sweep chooses on
        row[f"validation_final_{score}"] = results["validation_metrics"].get(f"final_{score}")
    if results.get("task_incremental_metrics"):
        row[f"task_incremental_final_{score}"] = results["task_incremental_metrics"].get(
            f"final_{score}")
    retention = results.get("retention") or {}
    if "kl_from_untouched" in retention:  # language models: perplexity ratio and KL
        row["retention_shakespeare_perplexity"] = retention["shakespeare_perplexity"]["ratio"]
        row["retention_kl_from_untouched"] = retention["kl_from_untouched"]["score"]
        held_out = [k.removesuffix("_perplexity") for k in retention
                    if k.endswith("_perplexity") and k != "shakespeare_perplexity"]
        for name in held_out:  # a benchmark's own held-out English (lmfar)
            row[f"retention_{name}_perplexity"] = retention[f"{name}_perplexity"]["ratio"]
            row[f"retention_{name}_kl"] = retention[f"{name}_kl"]["score"]
        if held_out:
            row["retention_worst_perplexity"] = max(
                v["ratio"] for k, v in retention.items() if k.endswith("_perplexity"))
    else:  # encoders: every ratio, higher is better
        ratios = {k: v["ratio"] for k, v in retention.items()}
        for k, v in ratios.items():
            row[f"retention_{k}"] = v
        known = [v for v in ratios.values() if v is not None]
        row["retention_min"] = min(known) if known else None
    for key in ("trainable_parameters", "stored_parameters", "train_seconds", "boundary_seconds",
                "median_step_seconds", "peak_memory_mb", "wall_seconds"):
        row[key] = c.get(key)
    for key in ("inference_ratio", "startup_seconds", "tasks_seconds",
                "retention_seconds", "inference_seconds"):  # not in older results
        if key in c:
            row[key] = c[key]
    if c.get("inference_ratio_spread") is not None:
        row["inference_ratio_spread"] = c["inference_ratio_spread"]
    return row


def format_table(results: dict[str, Any]) -> str:
    row = summary_row(results)
    shown = [(c.key, c.label) for c in columns() if c.key in row]
    width = max(len(label) for _, label in shown)
    title = (f"{results['method']} on {results['stream']} (head: {results['head']}; backbone: "
             f"{backbone_name(results['config'].get('backbone'))})")
    out = [title, "-" * len(title)]
    for key, label in shown:
        line = f"{label:<{width}}  {format_value(row[key], digits(key, 4)):>12}"
        if row.get(f"{key}_spread") is not None:
            line += f"  (spread {format_spread(row[f'{key}_spread'], digits(key, 4))})"
        out.append(line)
    return "\n".join(out)


def time_line(results: dict[str, Any]) -> str:
    """Where a run's wall time went, in one line."""
    c = results["cost"]
    head = c.get("head_seconds", 0.0)
    parts = [("start-up", c.get("startup_seconds")), ("training", c.get("train_seconds")),
             ("task-boundary passes", c["boundary_seconds"] - head),
             ("head statistics and solves", head), ("evaluation", c.get("eval_seconds")),
             ("retention", c.get("retention_seconds")),
             ("inference timing", c.get("inference_seconds"))]
    return ("where the time went: " + ", ".join(f"{name} {v:.1f} s" for name, v in parts
                                                  if v is not None)
            + f" (wall {c['wall_seconds']:.1f} s)")


def backbone_name(backbone: str | None) -> str:
    """A backbone as the summary names it: the tiny random ones say so (smoke runs use them)."""
    from retain.catalogue import TINY

    return f"{backbone}, random weights" if backbone in TINY else str(backbone)


def digits(key: str, default: int) -> int:
    """Decimals a figure is shown with: whole MB, seconds to a tenth (a step's to 1e-4), the
    inference ratio to a hundredth (its spread is wider)."""
    if key.endswith("_mb"):
        return 0
    if key == "inference_ratio":
        return 2
    if key.endswith("seconds") and key != "median_step_seconds":
        return 1
    return default


def format_spread(spread: list[float], digits: int) -> str:
    """An interval as ``low-high``."""
    return "-".join(format_value(v, digits) for v in spread)


def format_value(v: Any, digits: int = 4) -> str:
    """``n/a`` for undefined figures, thousands separators for counts, no ``-0.0000``."""
    if v is None or v != v:
        return "n/a"
    if isinstance(v, int):
        return f"{v:,}"
    text = f"{v:,.{digits}f}"
    return text[1:] if text.startswith("-") and float(text.replace(",", "")) == 0 else text
