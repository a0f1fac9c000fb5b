"""Figures (PNG) from saved results: every axis labelled, titles name the benchmark."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import (  # noqa: E402
    FuncFormatter,
    MaxNLocator,
    SymmetricalLogLocator,
)

from retain.metrics import as_square  # noqa: E402

RETENTION_AXIS = ("retention (lowest ratio to the untouched backbone: WordSim353, SimLex-999, "
                  "Lee, drift)")


def _count(v: float) -> str:
    """A count as people write it: 0, 500, 20k, 1.5M, 2G."""
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:g}{unit}"
    return f"{v:g}"


def _num(v: Any) -> float:
    return math.nan if v is None else float(v)


def _save(fig, path: Path, title: str) -> None:
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def frontier_figure(frontier: dict[str, Any], path: Path) -> None:
    """Plasticity and the final score against retention, one line per value of the grid's first
    key through the values of its second, baselines as black markers (accuracy and the lowest
    retention ratio on a classification stream; perplexity and the worst English ratio on a
    language-model one)."""
    keys = list(frontier["grid"])
    score, x_key = frontier["score"]["name"], frontier["retention_key"]
    lm = frontier["score"]["direction"] == "lower"  # perplexity: retention read as a loss
    if lm and all(r.get(x_key) is None for r in frontier["points"]):
        x_key = "retention_shakespeare_perplexity"  # a stream without held-out English
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharex=True)
    groups: dict[str, list[dict]] = {}
    for row in frontier["points"]:
        groups.setdefault(f"{keys[0]}={row['options'][keys[0]]}", []).append(row)
    for ax, metric, label in ((axes[0], "plasticity", f"plasticity ({score} on the task just "
                               "learned)"), (axes[1], f"final_{score}", f"final {score} "
                                             "(all tasks)")):
        for name, rows in groups.items():
            xs = [_num(r.get(x_key)) for r in rows]
            ys = [_num(r[metric]) for r in rows]
            (line,) = ax.plot(xs, ys, "o-", label=name)
            for r, x, y in zip(rows, xs, ys, strict=True):
                rest = ",".join(f"{k}={r['options'][k]}" for k in keys[1:])
                if rest:
                    ax.annotate(rest, (x, y), textcoords="offset points", xytext=(4, 4),
                                fontsize=7, color=line.get_color())
        for i, r in enumerate(frontier.get("baselines", [])):
            ax.plot(_num(r.get(x_key)), _num(r[metric]), marker="s^Dvo"[i % 5], color="black",
                    linestyle="none", label=r["label"])
        ax.set_xlabel("retention (worst English perplexity ratio; right: lost)" if lm
                      else RETENTION_AXIS, fontsize=8)
        ax.set_ylabel(label)
        if lm:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    _save(fig, path, f"{frontier['method']} plasticity-retention frontier on "
          f"{frontier['benchmark']} ({frontier['profile']}, seed {frontier['seed']})")


def envelope_figure(tables: list[dict[str, Any]], path: Path, title: str) -> None:
    """Each configuration's curve points (faint) and lower envelope: the task's test perplexity
    (x, log) against the worst English ratio (left) and the mean English KL (right), one row of
    panels per task; dotted lines at the matched points (multiples of full fine-tuning's best)."""
    fig, axes = plt.subplots(len(tables), 2, figsize=(12, 4.8 * len(tables)), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    names = sorted({row["configuration"] for t in tables for row in t["rows"]})
    for (left, right), table in zip(axes, tables, strict=True):
        for ax, y, front, label in ((left, "y", "envelope", "worst English perplexity ratio"),
                                    (right, "kl", "kl_envelope", "mean English KL "
                                     "(nats/token)")):
            for row in table["rows"]:
                c = colours[names.index(row["configuration"]) % len(colours)]
                ax.plot([p["x"] for p in row["points"]], [p[y] for p in row["points"]], ".",
                        color=c, alpha=0.3)
                ax.plot([p["x"] for p in row[front]], [p[y] for p in row[front]], "-o",
                        color=c, ms=4, label=row["configuration"])
            if table["reference_best_perplexity"]:
                for f in table["matched"]:
                    ax.axvline(f * table["reference_best_perplexity"], ls=":", color="grey",
                               lw=1)
            ax.set_xscale("log")
            ax.set_xlabel(f"task {table['task']} test perplexity (log; left: learnt)")
            ax.set_ylabel(f"{label} (up: lost)")
            ax.grid(alpha=0.3)
        left.axhline(1.0, ls=":", color="grey", lw=1)
    axes[0][0].legend(fontsize=7)
    _save(fig, path, title)


def title(comparison: dict[str, Any], what: str) -> str:
    seeds = ", ".join(str(s) for s in comparison["seeds"])
    plural = "s" if len(comparison["seeds"]) > 1 else ""
    mean = " (mean over seeds)" if plural else ""
    return (f"{what} on {comparison['benchmark']} ({comparison['profile']} profile, "
            f"seed{plural} {seeds}){mean}")


def _score(comparison: dict[str, Any]) -> tuple[str, bool]:
    """The score the comparison's matrices hold (accuracy or perplexity) and its direction."""
    first = next(iter(comparison["methods"].values()))["runs"][0]
    score = first["score"]
    return score["name"], score["direction"] == "higher"


def score_matrices(comparison: dict[str, Any], path: Path) -> None:
    """One heatmap per method: the score on task i (column) after training task t (row)."""
    methods = comparison["methods"]
    score, higher = _score(comparison)
    values = [as_square(r["matrix"])
              for e in methods.values() for r in e["runs"]]
    lo, hi = (0.0, 1.0) if higher else (float(np.nanmin(values)), float(np.nanmax(values)))
    cols = min(3, len(methods))
    rows = math.ceil(len(methods) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.8 * rows), squeeze=False)
    for ax, (name, entry) in zip(axes.flat, methods.items(), strict=False):
        m = np.mean([as_square(r["matrix"])
                     for r in entry["runs"]], axis=0)
        im = ax.imshow(m, vmin=lo, vmax=hi, cmap="viridis" if higher else "viridis_r")
        t = len(m)
        for i in range(t):
            for j in range(i + 1):
                dark = (m[i, j] - lo) / max(hi - lo, 1e-9) < 0.5
                # two digits without the leading zero (".96"), sized to the cell
                text = f"{m[i, j]:.2f}".lstrip("0") if higher else f"{m[i, j]:.0f}"
                ax.text(j, i, "1" if text == "1.00" else text, ha="center", va="center",
                        fontsize=max(6.5, min(11.0, 80 / t)),
                        color="white" if dark == higher else "black")
        ax.set_xticks(range(t), [str(i + 1) for i in range(t)])
        ax.set_yticks(range(t), [str(i + 1) for i in range(t)])
        ax.set_xlabel("evaluated task")
        ax.set_ylabel("after training task")
        joint = math.isnan(_num(entry["mean"].get(f"average_incremental_{score}")))
        note = ", trains at the last task only" if joint else ""
        ax.set_title(f"{name} ({entry['head']}{note})", fontsize=10)
    for ax in list(axes.flat)[len(methods):]:
        ax.axis("off")
    fig.colorbar(im, ax=axes, shrink=0.8, label=score)
    fig.suptitle(title(comparison, f"{score.capitalize()} matrices"))
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _styles(comparison: dict[str, Any]) -> dict[str, dict[str, str]]:
    """One colour and marker per method, the same in every figure of a report."""
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {name: {"color": colours[i % len(colours)], "marker": "osD^vP*Xhp"[i % 10]}
            for i, name in enumerate(comparison["methods"])}


def score_curves(comparison: dict[str, Any], path: Path) -> None:
    """Mean score over the tasks seen so far, after each task, for every method."""
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    styles = _styles(comparison)
    score, higher = _score(comparison)
    for name, entry in comparison["methods"].items():
        curves = np.array([r["metrics"][f"{score}_per_task"] for r in entry["runs"]])
        x = np.arange(1, curves.shape[1] + 1)
        mean = curves.mean(0)
        (line,) = ax.plot(x, mean, "-", label=f"{name} ({entry['head']})", markersize=4,
                          **styles[name])
        if len(curves) > 1:
            ax.fill_between(x, curves.min(0), curves.max(0), color=line.get_color(), alpha=0.2)
        if math.isnan(_num(entry["mean"].get(f"average_incremental_{score}"))):
            line.set_linestyle("--")  # not continual (joint): only the last point is trained
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # tasks are whole
    ax.set_xlabel("tasks learned")
    ax.set_ylabel(f"{score} on all tasks seen so far" + ("" if higher else " (lower is better)"))
    if higher:
        ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path, title(comparison, f"{score.capitalize()} after each task"))


def _scatter(ax, comparison: dict[str, Any], x_key: str, y_key: str) -> None:
    """One marker per method (error bars: standard deviation over seeds), with a legend."""
    styles = _styles(comparison)
    for name, entry in comparison["methods"].items():
        x, y = _num(entry["mean"].get(x_key)), _num(entry["mean"].get(y_key))
        if math.isnan(x) or math.isnan(y):
            continue
        xerr, yerr = (_num(entry.get("std", {}).get(k)) for k in (x_key, y_key))
        ax.errorbar(x, y, xerr=None if math.isnan(xerr) else xerr,
                    yerr=None if math.isnan(yerr) else yerr, linestyle="none", markersize=8,
                    capsize=3, label=name, **styles[name])
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # nothing drawn where every figure is undefined
        ax.legend(fontsize=8)


def score_vs_retention(comparison: dict[str, Any], path: Path) -> None:
    """Final score and plasticity against retention of pretrained capability."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    score, higher = _score(comparison)
    x_key, x_label = ("retention_min", RETENTION_AXIS) if higher else (
        "retention_kl_from_untouched", "KL(untouched || adapted) on Shakespeare, nats per token "
        "(0 = unchanged)")
    for ax, key, label in ((axes[0], f"final_{score}", f"final {score} (all tasks)"),
                           (axes[1], "plasticity", f"plasticity ({score} on the task just "
                                                   "learned)")):
        _scatter(ax, comparison, x_key, key)
        ax.set_xlabel(x_label, fontsize=8)
        ax.set_ylabel(label)
    _save(fig, path, title(comparison, f"{score.capitalize()} against retention"))


def cost_vs_score(comparison: dict[str, Any], path: Path) -> None:
    """Final score against stored parameters and against wall time."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    score, _ = _score(comparison)
    _scatter(axes[0], comparison, "stored_parameters", f"final_{score}")
    axes[0].set_xscale("symlog", linthresh=1e3)
    axes[0].xaxis.set_major_locator(SymmetricalLogLocator(linthresh=1e3, base=10,
                                                          subs=[1, 2, 5]))
    axes[0].xaxis.set_major_formatter(FuncFormatter(lambda v, _: _count(v)))
    axes[0].set_xlabel("stored parameters beyond the untouched backbone (log scale)")
    _scatter(axes[1], comparison, "wall_seconds", f"final_{score}")
    axes[1].set_xlabel("wall time of the run (seconds)")
    axes[0].set_ylabel(f"final {score} (all tasks)")
    _save(fig, path, title(comparison, f"Cost against final {score}"))


def training_loss(comparison: dict[str, Any], path: Path, window: int = 20) -> None:
    """Every optimiser step's loss (the first run of each method), a moving mean that restarts
    at each task boundary, and the boundaries; one panel per head (each head trains its own
    loss, so their values do not share an axis); runs saved without a log are left out."""
    styles = _styles(comparison)
    panels: dict[str, list[str]] = {}
    for name, entry in comparison["methods"].items():
        if (entry["runs"][0].get("training_log") or {}).get("loss"):
            panels.setdefault(str(entry["runs"][0].get("head") or ""), []).append(name)
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(9 * max(len(panels), 1) ** 0.5,
                                                              4.5), squeeze=False)
    for ax, (head, names) in zip(axes[0], panels.items(), strict=False):
        bounds: list[int] = []
        for name in names:
            log = comparison["methods"][name]["runs"][0]["training_log"]
            loss, tasks = np.asarray(log["loss"], dtype=float), np.asarray(log["task"])
            steps = np.arange(1, len(loss) + 1)
            color = styles[name]["color"]
            ax.plot(steps, loss, alpha=0.25, lw=0.8, color=color)
            for i, task in enumerate(dict.fromkeys(tasks.tolist())):  # each task on its own
                at = np.flatnonzero(tasks == task)
                n = min(window, len(at))
                mean = np.convolve(loss[at], np.ones(n) / n, "valid")
                ax.plot(steps[at][len(at) - len(mean):], mean, lw=1.6, color=color,
                        label=name if i == 0 else None)
            bounds = bounds or [int(i) + 1 for i in np.flatnonzero(np.diff(tasks))]
        for b in bounds:
            ax.axvline(b + 0.5, ls=":", color="grey", lw=1)
        ax.set_xlabel("optimiser step (all tasks, in order)")
        ax.set_ylabel("training loss" + (f" (head: {head})" if head else ""))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if not panels:
        axes[0][0].text(0.5, 0.5, "no training log saved (nothing trained, or runs from before "
                        "it)", ha="center", va="center", transform=axes[0][0].transAxes)
    _save(fig, path, title(comparison, "Training loss"))


def _curve_points(comparison: dict[str, Any]):
    """Per method with curves: steps, task perplexity, worst English ratio, task ends."""
    for name, entry in comparison["methods"].items():
        points = (entry["runs"][0].get("curves") or {}).get("points") or []
        if not points:
            continue
        steps = np.array([p["step"] for p in points])
        task = np.array([p["task_perplexity"] for p in points])
        worst = np.array([max(p["english_ratio"].values()) for p in points])
        ends = [i for i, p in enumerate(points) if i + 1 == len(points)
                or points[i + 1]["task"] != p["task"] and p["task_step"] > 0]
        yield name, steps, task, worst, ends


def _no_curves(ax) -> None:
    ax.text(0.5, 0.5, "no curves recorded (retain run --probe-every N)", ha="center",
            va="center", transform=ax.transAxes)


def learning_vs_forgetting(comparison: dict[str, Any], path: Path) -> None:
    """PLATE's picture: new-task perplexity against the English perplexity ratio."""
    fig, ax = plt.subplots(figsize=(7.5, 5))
    styles = _styles(comparison)
    drawn = False
    for name, _, task, worst, ends in _curve_points(comparison):
        ax.plot(task, worst, "-", lw=1.2, color=styles[name]["color"], label=name, alpha=0.8)
        ax.plot(task[ends], worst[ends], linestyle="none", markersize=8, **styles[name])
        drawn = True
    if drawn:
        ax.set_xscale("log")
        ax.axhline(1.0, ls=":", color="grey", lw=1)
        ax.legend(fontsize=8)
    else:
        _no_curves(ax)
    ax.set_xlabel("current task's test perplexity (log; left: learnt)")
    ax.set_ylabel("worst English perplexity ratio to the untouched model (up: lost)")
    ax.grid(alpha=0.3)
    _save(fig, path, title(comparison, "Learning against forgetting"))


def curves_over_steps(comparison: dict[str, Any], path: Path) -> None:
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6.5), sharex=True)
    styles = _styles(comparison)
    drawn, bounds = False, []
    for name, steps, task, worst, ends in _curve_points(comparison):
        top.plot(steps, task, "-", color=styles[name]["color"], label=name)
        bottom.plot(steps, worst, "-", color=styles[name]["color"], label=name)
        bounds = bounds or [steps[i] for i in ends[:-1]]
        drawn = True
    for ax in (top, bottom):
        for b in bounds:
            ax.axvline(b + 0.5, ls=":", color="grey", lw=1)
        ax.grid(alpha=0.3)
    if drawn:
        top.set_yscale("log")
        top.legend(fontsize=8)
    else:
        _no_curves(top)
    top.set_ylabel("current task's test perplexity")
    bottom.set_ylabel("worst English ratio")
    bottom.set_xlabel("optimiser step (all tasks, in order)")
    _save(fig, path, title(comparison, "Learning and forgetting over steps"))
