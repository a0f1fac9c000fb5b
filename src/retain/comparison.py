"""Several methods on the same stream, class order and seeds, one after another.

Each run lives in ``OUT/runs/<method>/seed<k>/`` (a finished run is not run again, an interrupted
one resumes); ``OUT/comparison.json`` holds every run's results with the mean and standard
deviation over seeds, and the report (``report.md``, ``report.html``, figures) is built from it."""

from __future__ import annotations

import dataclasses
import math
import statistics
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from retain import checkpoint
from retain.config import RunConfig
from retain.errors import RetainError
from retain.summary import summary_row


def method_names(spec: str, kind: str | None = None) -> list[str]:
    """``all`` (every registered method that serves ``kind``) or a comma-separated list of
    registered names."""
    from retain.methods import REGISTRY, get_method_class

    names = [n for n, c in REGISTRY.items() if kind is None or kind in c.kinds] \
        if spec.strip() == "all" else [
        m.strip() for m in spec.split(",") if m.strip()]
    if not names:
        raise RetainError("--methods needs at least one method name, or 'all'")
    for name in names:
        get_method_class(name)  # a clear error for an unknown name
    return names


def mean_std(rows: list[dict[str, Any]]) -> tuple[dict[str, float], dict[str, float]]:
    """Mean and sample standard deviation over seeds of every numeric summary figure
    (NaN where a figure is undefined; standard deviation NaN with one seed)."""
    mean, std = {}, {}
    for key in rows[0]:
        values = [r.get(key) for r in rows]
        if not all(isinstance(v, int | float) or v is None for v in values):
            continue
        finite = [float(v) for v in values if v is not None and not math.isnan(v)]
        mean[key] = statistics.fmean(finite) if finite else math.nan
        std[key] = statistics.stdev(finite) if len(finite) > 1 else math.nan
    return mean, std


def assemble(config: RunConfig, runs: dict[str, list[dict[str, Any]]], seeds: list[int]
             ) -> dict[str, Any]:
    first_runs = next(iter(runs.values()))
    methods = {}
    for name, results in runs.items():
        mean, std = mean_std([summary_row(r) for r in results])
        methods[name] = {"head": results[0]["head"], "mean": mean, "std": std, "runs": results}
    orders = {str(seed): r["class_order"] for seed, r in zip(seeds, first_runs, strict=True)}
    return {"benchmark": first_runs[0]["stream"], "profile": config.profile,
            "scenario": config.scenario, "seeds": seeds, "class_orders": orders,
            "methods": methods}


def compare(config: RunConfig, methods: list[str], seeds: list[int], progress: bool = True
            ) -> dict[str, Any]:
    """Run every method for every seed on ``config``'s stream and build the report."""
    from accelerate import PartialState

    from retain.engine import run_or_load
    from retain.reporting import build_report

    if not seeds:
        raise RetainError("--seeds needs at least one seed")
    if config.head not in (None, "growing") and "joint" in methods:
        raise RetainError(f"joint takes only --head growing: drop joint from --methods, or "
                          f"drop --head {config.head}")
    out = Path(config.out)
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    jobs = [(m, s) for m in methods for s in seeds]
    bar = tqdm(jobs, desc="compare", unit="run", disable=not progress)
    for method, seed in bar:
        bar.set_postfix_str(f"{method}, seed {seed}")
        run_dir = out / "runs" / method / f"seed{seed}"
        cfg = dataclasses.replace(config, method=method, seed=seed, out=str(run_dir))
        runs[method].append(run_or_load(cfg, progress))
    comparison = assemble(config, runs, seeds)
    if PartialState().is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        checkpoint.write_json(out / "comparison.json", comparison)
        build_report(out)
    PartialState().wait_for_everyone()
    return comparison
