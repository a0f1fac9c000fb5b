"""Figures (PNG) from saved results: every axis labelled, titles name the benchmark."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def frontier_figure(frontier: dict[str, Any], path: Path) -> None:
    """Plasticity and final accuracy against retention, one line per value of the grid's first
    key through the values of its second, baselines as black markers."""
    keys = list(frontier["grid"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharex=True)
    groups: dict[str, list[dict]] = {}
    for row in frontier["points"]:
        groups.setdefault(f"{keys[0]}={row['options'][keys[0]]}", []).append(row)
    for ax, metric, label in ((axes[0], "plasticity", "plasticity (accuracy on the task just "
                               "learned)"), (axes[1], "final_accuracy", "final accuracy "
                                             "(all tasks)")):
        for name, rows in groups.items():
            xs = [r["retention_min"] for r in rows]
            ys = [r[metric] for r in rows]
            (line,) = ax.plot(xs, ys, "o-", label=name)
            for r, x, y in zip(rows, xs, ys, strict=True):
                rest = ",".join(f"{k}={r['options'][k]}" for k in keys[1:])
                if rest:
                    ax.annotate(rest, (x, y), textcoords="offset points", xytext=(4, 4),
                                fontsize=7, color=line.get_color())
        for i, r in enumerate(frontier.get("baselines", [])):
            ax.plot(r["retention_min"], r[metric], marker="sk^Dv"[i % 5], color="black",
                    linestyle="none", label=r["label"])
        ax.set_xlabel("retention (lowest ratio to the untouched backbone: WordSim353, "
                      "SimLex-999, Lee, drift)", fontsize=8)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{frontier['method']} plasticity-retention frontier on "
                 f"{frontier['benchmark']} ({frontier['profile']}, seed {frontier['seed']})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
