"""Several methods on the same stream, class order and seeds, one after another.

Each run lives in ``OUT/runs/<method>/seed<k>/`` (a finished run is not run again, an interrupted
one resumes); ``OUT/comparison.json`` holds every run's results with the mean and standard
deviation over seeds, and the report (``report.md``, ``report.html``, figures) is built from it.
:func:`compare_runs` builds the same from finished runs made apart (``retain run --out``)."""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from retain import checkpoint
from retain.config import RunConfig, filled
from retain.errors import RetainError
from retain.summary import summary_row


def entry(name: str) -> tuple[str, str | None]:
    """A comparison's entry, ``METHOD`` or ``METHOD:PRESET`` (the method with one of its named
    settings, ``retain list METHOD``): the method and the preset (None: the config's)."""
    method, _, preset = name.partition(":")
    return method.strip(), preset.strip() or None


def method_names(spec: str, kind: str | None = None) -> list[str]:
    """``all`` (every registered method that serves ``kind``) or a comma-separated list of
    registered names, each optionally ``:PRESET``."""
    from retain.methods import REGISTRY, get_method_class

    if spec.strip() == "all":
        names = [n for n, c in REGISTRY.items() if kind is None or kind in c.info.kinds]
    else:
        names = [":".join(filter(None, entry(m))) for m in spec.split(",") if m.strip()]
    if not names:
        raise RetainError("--methods needs at least one method name, or 'all'")
    for name in names:
        get_method_class(entry(name)[0])  # a clear error for an unknown name
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


def assemble(runs: dict[str, list[dict[str, Any]]], seeds: list[int]) -> dict[str, Any]:
    """``comparison.json``: every method's runs (one per seed, in ``seeds``' order) with the
    mean and standard deviation over seeds of its summary figures."""
    first_runs = next(iter(runs.values()))
    methods = {}
    for name, results in runs.items():
        mean, std = mean_std([summary_row(r) for r in results])
        methods[name] = {"head": results[0]["head"], "mean": mean, "std": std, "runs": results}
    orders = {str(seed): r["class_order"] for seed, r in zip(seeds, first_runs, strict=True)}
    profiles = dict.fromkeys(r["config"]["profile"] for rs in runs.values() for r in rs)
    return {"benchmark": first_runs[0]["stream"], "profile": ", ".join(profiles),
            "kind": first_runs[0]["kind"], "scenario": first_runs[0]["scenario"],
            "seeds": seeds, "class_orders": orders,
            "methods": methods}


def run_folder(out: str | Path, name: str, seed: int) -> Path:
    """Where a comparison keeps an entry's run of one seed (``METHOD--PRESET`` for a preset)."""
    return Path(out) / "runs" / name.replace(":", "--") / f"seed{seed}"


def compare(config: RunConfig, methods: list[str], seeds: list[int], progress: bool = True
            ) -> dict[str, Any]:
    """Run every method for every seed on ``config``'s stream and build the report."""
    from accelerate import PartialState

    from retain.engine import run_or_load

    if not seeds:
        raise RetainError("--seeds needs at least one seed")
    if config.head not in (None, "growing") and "joint" in methods:
        raise RetainError(f"joint takes only --head growing: drop joint from --methods, or "
                          f"drop --head {config.head}")
    def configured(name: str, **fields: Any) -> RunConfig:
        method, preset = entry(name)
        return dataclasses.replace(config, method=method, preset=preset or config.preset,
                                   **fields)

    for name in methods:  # every entry's config refused before the first run, not after
        configured(name, out=str(Path(config.out) / "runs")).plan()
    out = Path(config.out)
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    jobs = [(m, s) for m in methods for s in seeds]
    bar = tqdm(jobs, desc="compare", unit="run", disable=not progress)
    for k, (method, seed) in enumerate(bar, 1):
        bar.set_postfix_str(f"{method}, seed {seed}")
        run_dir = run_folder(out, method, seed)
        if progress and PartialState().is_main_process:  # the run's own lines follow this one
            state = "finished, read back" if (run_dir / "results.json").is_file() else "running"
            tqdm.write(f"compare, run {k} of {len(jobs)}: {method}, seed {seed} ({state}, "
                       f"{run_dir})")
        cfg = configured(method, seed=seed, out=str(run_dir))
        runs[method].append(run_or_load(cfg, progress))
    comparison = assemble(runs, seeds)
    if PartialState().is_main_process:
        _write(out, comparison)
    PartialState().wait_for_everyone()
    return comparison


def compare_runs(directories: list[str | Path], out: str | Path) -> dict[str, Any]:
    """The comparison and report of finished runs (``retain run --out`` folders) in ``out``,
    without training. Runs of one method and options are the seeds of one row (its name, or
    with the first run's folder where one method comes with several options); every row needs the
    same seeds. Refused: a run not finished, runs of different streams (name, kind, scenario,
    classes, number of tasks) or of one seed with different class orders."""
    if not directories:
        raise RetainError("--runs needs at least one run folder")
    out = Path(out)
    if (out / "results.json").is_file():
        raise RetainError(f"{out} holds a run: choose another --out for the comparison")
    loaded = [(Path(d), _finished(Path(d))) for d in directories]
    first_dir, first = loaded[0]
    orders: dict[int, tuple[Path, dict[str, Any]]] = {}
    groups: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
    for directory, results in loaded:
        differ = [key for key, value in _stream(results).items()
                  if value != _stream(first)[key]]
        if differ:
            raise RetainError(f"{directory} and {first_dir} are runs on different streams "
                              f"({', '.join(differ)} differ): compare runs of one stream")
        seed = results["config"]["seed"]
        seen, reference = orders.setdefault(seed, (directory, results))
        if [reference[k] for k in ("class_order", "tasks")] != [results[k] for k in (
                "class_order", "tasks")]:
            raise RetainError(f"{directory} and {seen} have seed {seed} with different class "
                              f"orders or tasks: compare runs made with one class order per "
                              f"seed")
        options = {k: v for k, v in filled(results["config"]).items()
                   if k not in ("seed", "class_order_seed", "out")}  # orders: checked above
        groups.setdefault(json.dumps(options, sort_keys=True), []).append((directory, results))
    runs: dict[str, list[dict[str, Any]]] = {}
    seeds = sorted(orders)
    for members in groups.values():
        method = members[0][1]["method"]  # with its preset, as compare names the entry
        method += f":{preset}" if (preset := members[0][1]["config"].get("preset")) else ""
        several = sum(m[0][1]["method"] == members[0][1]["method"]
                      for m in groups.values()) > 1
        label = f"{method} ({members[0][0]})" if several else method
        by_seed = {}
        for directory, results in members:
            seed = results["config"]["seed"]
            if seed in by_seed:
                raise RetainError(f"{directory} and {by_seed[seed][0]} are the same run (method, "
                                  f"options and seed {seed}): give each once")
            by_seed[seed] = (directory, results)
        if sorted(by_seed) != seeds:
            raise RetainError(f"{label} has seeds {sorted(by_seed)} where the comparison has "
                              f"{seeds}: give every method the same seeds")
        runs[label] = [by_seed[seed][1] for seed in seeds]
    comparison = assemble(runs, seeds)
    _write(out, comparison)
    return comparison


def _stream(results: dict[str, Any]) -> dict[str, Any]:
    """What every run of one stream shares, whatever its class order."""
    return {"stream": results["stream"], "kind": results["kind"],
            "scenario": results["scenario"], "classes": sorted(results["class_names"]),
            "tasks": len(results["tasks"])}


def _finished(directory: Path) -> dict[str, Any]:
    """The results of the finished run in ``directory`` (refused: none, or unfinished)."""
    done = directory / "results.json"
    if done.is_file():
        try:
            return json.loads(done.read_text(), parse_constant=float)
        except json.JSONDecodeError as e:
            raise RetainError(f"{done} is not valid JSON ({e.msg}): give a finished run's "
                              f"folder") from None
    state = checkpoint.read_state(directory / "checkpoint")
    if state is not None:
        raise RetainError(f"{directory} is not finished ({state['tasks_done']} of "
                          f"{len(state['stream']['tasks'])} tasks done, no results.json): "
                          f"finish it with `retain run --resume --out {directory}` and its "
                          f"options")
    raise RetainError(f"{directory} holds no finished run (no results.json): give the --out "
                      f"folders of finished `retain run`s")


def _write(out: Path, comparison: dict[str, Any]) -> None:
    from retain.reporting import build_report

    out.mkdir(parents=True, exist_ok=True)
    checkpoint.write_json(out / "comparison.json", comparison)
    build_report(out)
