"""Learning against forgetting as frontiers, not points: from the curve points of language-model
runs (``--probe-every``), each configuration's lower envelope of the new task's perplexity
(learning, lower is better) against the worst English perplexity ratio (forgetting, lower is
better), and the figures read off it at matched amounts of learning. Pure functions over
``results.json`` dictionaries (naming a configuration reads its method's option defaults).

A *configuration* is a method with its options (every option that differs from the method's
default for the task kind is in its name); the runs of one configuration at several learning
rates (and steps) pool their points into one envelope. The *reference* is full fine-tuning
(``seq-ft`` with no option): matched points are multiples of its best perplexity."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

MATCHED = (1.1, 1.25, 1.5)  # new-task perplexity as a multiple of full fine-tuning's best
BOUNDS = (1.05, 1.02)  # the worst English ratio allowed for the constrained best
REFERENCE = "seq-ft"


@dataclasses.dataclass(frozen=True)
class Point:
    """One curve point: ``x`` the task's perplexity, ``y`` the worst English ratio, ``kl`` the
    mean English KL (nats per token); where it came from in the other fields."""

    x: float
    y: float
    kl: float = float("nan")
    step: int = 0
    lr: float = float("nan")


def envelope(points: list[Point], y: str = "y") -> list[Point]:
    """The points no other point beats on both axes (``x`` and the field ``y``), by ``x``
    increasing (so the field decreasing). A point off the envelope changes nothing."""
    out: list[Point] = []
    for p in sorted(points, key=lambda p: (p.x, getattr(p, y), p.lr, p.step)):
        if not math.isfinite(p.x) or not math.isfinite(getattr(p, y)):
            continue
        if not out or getattr(p, y) < getattr(out[-1], y):
            out.append(p)
    return out


def value_at(front: list[Point], x: float, y: str = "y") -> float | None:
    """The field ``y`` on the envelope where the task's perplexity is ``x``, interpolated
    linearly in ``log x`` between the envelope's points; None where the configuration never
    learnt that much (``x`` left of every point). Right of the last point: its value (the best
    the configuration kept, at any amount of learning)."""
    if not front or x < front[0].x:
        return None
    for a, b in zip(front, front[1:], strict=False):
        if a.x <= x <= b.x:
            if b.x == a.x:
                return getattr(b, y)
            t = (math.log(x) - math.log(a.x)) / (math.log(b.x) - math.log(a.x))
            return getattr(a, y) + t * (getattr(b, y) - getattr(a, y))
    return getattr(front[-1], y)


def best_within(points: list[Point], bound: float) -> float | None:
    """The constrained best: the lowest task perplexity of the points whose worst English
    ratio is at most ``bound`` (measured points, no interpolation); None where none keeps
    English so well."""
    kept = [p.x for p in points if p.y <= bound and math.isfinite(p.x)]
    return min(kept) if kept else None


def curve(results: dict[str, Any], task: int = 1, heldout: bool = False) -> list[Point]:
    """The curve points of one run on one task (1-based; the untouched point before the first
    task counts for task 1): ``heldout`` reads the task's held-out perplexity (``--holdout``),
    on which a rate is chosen; otherwise its test perplexity, which is reported."""
    curves = results.get("curves") or {}
    key = "heldout_perplexity" if heldout else "task_perplexity"
    lr = float(results["config"]["lr"])
    out = []
    for p in curves.get("points", []):
        if p["task"] != task or key not in p:
            continue
        kl = p.get("english_kl")
        out.append(Point(float(p[key]), float(max(p["english_ratio"].values())),
                         float(sum(kl.values()) / len(kl)) if kl else float("nan"),
                         int(p["task_step"]), lr))
    return out


def label(results: dict[str, Any]) -> str:
    """A run's configuration: its method and every method option that differs from the
    method's default for the run's task kind (the learning rate, steps and seed are not part
    of it)."""
    cfg = results["config"]
    defaults = _default_options(cfg["method"], cfg["kind"])
    given = {k: v for k, v in cfg["method_options"].items() if defaults.get(k, v) != v
             or k not in defaults}
    from retain.options import option_text

    return " ".join([cfg["method"], *(f"{k}={option_text(v)}"
                                      for k, v in sorted(given.items()))])


def _default_options(method: str, kind: str) -> dict[str, Any]:
    """The method's options on a stream of ``kind`` when none is given (as resolved)."""
    from retain.catalogue import METHODS
    from retain.kinds import get_kind
    from retain.methods import get_method_class

    if method not in METHODS:
        return {}
    cls = get_method_class(method)
    return dataclasses.asdict(cls.config_class.from_options(
        cls.info.options(get_kind(kind)), method))


def table(runs: list[dict[str, Any]], task: int = 1, reference: str = REFERENCE,
          given: tuple[float, float | None] | None = None) -> dict[str, Any]:
    """The frontier table of ``runs`` (``results.json`` dictionaries with curves) on ``task``:
    per configuration, its envelope (test perplexity), the worst English ratio and the mean
    English KL at each matched point, the best perplexity within each English bound, the rate
    chosen on held-out sequences, its equal-step values and costs. Matched points are
    multiples of the reference's best test perplexity (on held-out sequences for the choice);
    ``given``: those two bests from an earlier table, for runs added to it without the
    reference's runs."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        if curve(r, task):
            groups.setdefault(label(r), []).append(r)
    if given is not None:
        ref_best, ref_held = given
    elif reference not in groups:
        ref_best = ref_held = None
    else:
        ref_best = min(p.x for r in groups[reference] for p in curve(r, task))
        held = [p.x for r in groups[reference] for p in curve(r, task, heldout=True)]
        ref_held = min(held) if held else None
    rows = []
    for name, members in groups.items():
        points = [p for r in members for p in curve(r, task)]
        front = envelope(points)
        kl_front = envelope(points, "kl")
        row: dict[str, Any] = {
            "configuration": name, "method": members[0]["method"],
            "rates": sorted({float(r["config"]["lr"]) for r in members}),
            "seeds": sorted({int(r["config"]["seed"]) for r in members}),
            "envelope": [dataclasses.asdict(p) for p in front],
            "kl_envelope": [dataclasses.asdict(p) for p in kl_front],
            "points": [dataclasses.asdict(p) for p in points],
            "best_perplexity": front[0].x if front else None,
        }
        for f in MATCHED:
            x = f * ref_best if ref_best else None
            row[f"ratio_at_{f}x"] = value_at(front, x) if x else None
            row[f"kl_at_{f}x"] = value_at(kl_front, x, "kl") if x else None
        for b in BOUNDS:
            row[f"best_within_{b}"] = best_within(points, b)
        chosen = choose_rate(members, task, ref_held)
        row["chosen_lr"] = chosen["config"]["lr"] if chosen else None
        if chosen is not None:
            last = curve(chosen, task)[-1]
            row["equal_step"] = {"step": last.step, "perplexity": last.x, "ratio": last.y,
                                 "kl": last.kl}
            options = chosen["config"]["method_options"]
            if "rank" in options and "alpha" in options:  # LoRA: alpha / r
                row["scale"] = options["alpha"] / options["rank"]
            elif "alpha" in options:  # PLATE, Share: alpha as it multiplies the update
                row["scale"] = options["alpha"]
            cost = chosen.get("cost", {})
            row.update({k: cost.get(k) for k in ("trainable_parameters", "stored_parameters",
                                                  "median_step_seconds")})
        rows.append(row)
    return {"task": task, "reference": reference, "reference_best_perplexity": ref_best,
            "reference_best_heldout_perplexity": ref_held, "matched": list(MATCHED),
            "bounds": list(BOUNDS), "rows": rows}


def choose_rate(members: list[dict[str, Any]], task: int, ref_held: float | None
                ) -> dict[str, Any] | None:
    """The run (its rate) of one configuration chosen on held-out sequences: the lowest worst
    English ratio on its own held-out envelope at the middle matched point (1.25x the
    reference's best held-out perplexity); where no run reaches it, the run that learnt most
    (the lowest held-out perplexity). Runs without held-out points: the one that learnt most
    on test, and the row says so by ``chosen_on``."""
    scored = [(r, curve(r, task, heldout=True)) for r in members]
    if not all(points for _, points in scored):
        return min(members, key=lambda r: min(p.x for p in curve(r, task)))
    target = MATCHED[1] * ref_held if ref_held else None
    reached = ([(value_at(envelope(points), target), r) for r, points in scored]
               if target else [])
    reached = [(v, r) for v, r in reached if v is not None]
    if reached:
        return min(reached, key=lambda vr: vr[0])[1]
    return min(scored, key=lambda rp: min(p.x for p in rp[1]))[0]


def tables(runs: list[dict[str, Any]], reference: str = REFERENCE) -> list[dict[str, Any]]:
    """:func:`table` for every task the runs' curves reach."""
    tasks = sorted({p["task"] for r in runs for p in (r.get("curves") or {}).get("points", [])})
    return [table(runs, task, reference) for task in tasks]


def load_runs(paths: list[str]) -> list[dict[str, Any]]:
    """The ``results.json`` of every run under ``paths`` (run folders, sweep folders or
    files), each once, in path order."""
    import json
    from pathlib import Path

    from retain.errors import RetainError

    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            found += sorted(p for p in path.rglob("results.json") if "checkpoint" not in p.parts)
        else:
            raise RetainError(f"{path} is neither a run folder nor a results.json")
    runs, seen = [], set()
    for p in found:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            results = json.loads(p.read_text())
            results["_path"] = str(p.parent)
            runs.append(results)
    if not runs:
        raise RetainError(f"no results.json under {', '.join(paths)}: give finished runs")
    return runs


def markdown(table: dict[str, Any], spreads: dict[str, dict[str, list[float]]] | None = None
             ) -> str:
    """The table as Markdown: one row per configuration. With ``spreads`` (configuration ->
    column -> values over seeds), each figure is followed by its range over the seeds."""
    def fmt(v: Any, digits: int = 3) -> str:
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            return "-"
        if isinstance(v, int):
            return f"{v / 1e6:.2f}M" if v >= 10_000 else str(v)
        return f"{v:.{digits}f}" if abs(v) < 10 else f"{v:.1f}"

    def cell(row: dict[str, Any], key: str, digits: int = 3) -> str:
        text = fmt(row.get(key), digits)
        values = (spreads or {}).get(row["configuration"], {}).get(key)
        if values and len(values) > 1:
            text += f" ({fmt(min(values), digits)}-{fmt(max(values), digits)})"
        return text

    ref = table["reference_best_perplexity"]
    head = (["configuration", "rates", "best ppl"]
            + [f"ratio @ {f}x ({fmt(f * ref, 1) if ref else '-'})" for f in table["matched"]]
            + [f"KL @ {f}x" for f in table["matched"]]
            + [f"best ppl, ratio <= {b}" for b in table["bounds"]]
            + ["chosen lr", "equal step: ppl / ratio", "trainable", "stored", "step s"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in sorted(table["rows"], key=lambda r: (r["configuration"] != table["reference"],
                                                    r["configuration"])):
        eq = row.get("equal_step")
        cells = ([f"`{row['configuration']}`", ", ".join(f"{r:g}" for r in row["rates"]),
                  cell(row, "best_perplexity", 1)]
                 + [cell(row, f"ratio_at_{f}x") for f in table["matched"]]
                 + [cell(row, f"kl_at_{f}x") for f in table["matched"]]
                 + [cell(row, f"best_within_{b}", 1) for b in table["bounds"]]
                 + [f"{row['chosen_lr']:g}" if row.get("chosen_lr") else "-",
                    f"{fmt(eq['perplexity'], 1)} / {fmt(eq['ratio'])} (step {eq['step']})"
                    if eq else "-",
                    fmt(row.get("trainable_parameters")), fmt(row.get("stored_parameters")),
                    fmt(row.get("median_step_seconds"), 2)])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


SPREAD_COLUMNS = ("best_perplexity", *(f"ratio_at_{f}x" for f in MATCHED),
                  *(f"kl_at_{f}x" for f in MATCHED), *(f"best_within_{b}" for b in BOUNDS))


def seed_spreads(runs: list[dict[str, Any]], task: int = 1, reference: str = REFERENCE,
                 given: dict[int, tuple[float, float | None]] | None = None
                 ) -> dict[str, dict[str, list[float]]]:
    """Per configuration and column of :func:`table`, the values of each training seed's own
    table, from the runs whose configuration and rate were run with more than one seed (so
    that every seed pools the same rates), each seed matched to its own reference's best: the
    noise bar of a comparison. A seed without the reference's runs matches nothing (its values
    are None and left out) unless ``given`` holds its bests (seed -> test, held-out)."""
    seeds_of: dict[tuple[str, float], set[int]] = {}
    for r in runs:
        seeds_of.setdefault((label(r), float(r["config"]["lr"])), set()).add(
            int(r["config"]["seed"]))
    repeated = [r for r in runs if len(seeds_of[(label(r), float(r["config"]["lr"]))]) > 1]
    seeds = sorted({int(r["config"]["seed"]) for r in repeated})
    out: dict[str, dict[str, list[float]]] = {}
    for seed in seeds:
        for row in table([r for r in repeated if int(r["config"]["seed"]) == seed], task,
                         reference, (given or {}).get(seed))["rows"]:
            for key in SPREAD_COLUMNS:
                if row.get(key) is not None:
                    out.setdefault(row["configuration"], {}).setdefault(key, []).append(row[key])
    return out


def spread_markdown(spreads: dict[str, dict[str, list[float]]]) -> str:
    """:func:`seed_spreads` as Markdown: per configuration, each column's values seed by seed
    (seed order), and their range."""
    columns = [c for c in SPREAD_COLUMNS if any(c in v for v in spreads.values())]
    lines = ["| configuration | " + " | ".join(c.replace("_", " ") for c in columns) + " |",
             "|" + "---|" * (len(columns) + 1)]
    for name, values in sorted(spreads.items()):
        cells = []
        for c in columns:
            vs = values.get(c, [])
            cells.append(" / ".join(f"{v:.3f}" if v < 10 else f"{v:.1f}" for v in vs)
                         + (f" (range {max(vs) - min(vs):.3g})" if len(vs) > 1 else "")
                         if vs else "-")
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)
