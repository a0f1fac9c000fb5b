"""A grid over run options (``lr``, ``steps``, ``seed``, any field of ``retain run``) and method
options together, on one stream, and the frontier it traces.

Each point is an ordinary run in ``OUT/<key=value,...>/`` (finished points are not run again,
interrupted ones resume); ``OUT/frontier.json`` holds every point's summary row.
``OUT/frontier.png`` plots plasticity and the final score against retention; on a
language-model stream run with ``--probe-every``, ``frontier.json`` also holds
:func:`retain.frontier.tables` of the points' curves and ``frontier.png`` draws their
envelopes instead."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from retain.config import RunConfig
from retain.errors import RetainError
from retain.summary import summary_row

# fields of a run that a grid may not set: they name the run, or hold other options
NOT_GRIDDED = ("method", "out", "method_options", "head_options", "benchmark", "data")


def grid_points(grid: dict[str, list[str]]) -> list[dict[str, str]]:
    if not grid or any(not values for values in grid.values()):
        raise RetainError("a sweep needs at least one --grid KEY=V1,V2,... with values")
    return [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]


def point_name(point: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in point.items())


def point_config(config: RunConfig, point: dict[str, str], out: Path) -> RunConfig:
    """``config`` with a grid point: keys that are fields of the run (``lr``, ``steps``,
    ``seed``, ...) set those, typed as the field is; the rest are method options."""
    fields = {f.name: f for f in dataclasses.fields(RunConfig)}
    run, options = {}, {}
    for key, value in point.items():
        if key in NOT_GRIDDED:
            raise RetainError(f"--grid {key} cannot vary within a sweep: run one sweep per "
                              f"{key}")
        if key in fields:
            run[key] = _typed(key, value, getattr(config, key), fields[key].type)
        else:
            options[key] = value
    return dataclasses.replace(config, out=str(out / point_name(point)), **run,
                               method_options={**config.method_options, **options})


def _typed(key: str, value: str, current: Any, annotation: Any) -> Any:
    """The grid's text as the run field's type (its current value's, else its annotation's)."""
    from retain.options import _coerce, _example

    try:
        return _coerce(key, value, current if current is not None else _example(annotation))
    except RetainError:
        raise RetainError(f"--grid {key}={value}: not a number") from None


def frontier_row(results: dict[str, Any], label: str, options: dict[str, str] | None = None
                 ) -> dict[str, Any]:
    return {"label": label, "options": options or {}, **summary_row(results)}


def choose(rows: list[dict[str, Any]], kind) -> dict[str, Any] | None:
    """The point with the best validation score (``--validation``): its label, that score and
    its test figure, the one to report (None where the points hold no validation score). The
    test figures of the other points choose nothing."""
    key = f"validation_final_{kind.score}"
    scored = [r for r in rows if r.get(key) is not None]
    if not scored:
        return None
    best = (max if kind.higher_is_better else min)(scored, key=lambda r: r[key])
    return {"label": best["label"], key: best[key],
            f"final_{kind.score}": best.get(f"final_{kind.score}")}


def sweep(config: RunConfig, grid: dict[str, list[str]], baselines: list[str] | None = None,
          progress: bool = True) -> dict[str, Any]:
    """Run every point of ``grid`` with ``config`` and write the frontier."""
    from accelerate import PartialState

    from retain import checkpoint
    from retain.engine import run_or_load
    from retain.frontier import tables
    from retain.reporting.figures import envelope_figure, frontier_figure

    out = Path(config.out)
    points = grid_points(grid)
    configs = [point_config(config, point, out) for point in points]  # refused before any run
    rows, runs = [], []
    for point, cfg in tqdm(list(zip(points, configs, strict=True)), desc="sweep", unit="run",
                           disable=not progress):
        results = run_or_load(cfg, progress)
        runs.append(results)
        rows.append(frontier_row(results, point_name(point), point))
    refs, ref_runs = [], []
    for path in baselines or []:
        results = json.loads(Path(path).read_text())
        ref_runs.append(results)
        refs.append(frontier_row(results, f"{results['method']} ({results['head']})"))
    plan = config.plan()
    cfg, kind = plan.config, plan.kind
    frontier = {"method": cfg.method, "benchmark": cfg.benchmark or cfg.data, "kind": cfg.kind,
                "score": {"name": kind.score, "direction": kind.direction},
                "retention_key": kind.retention_key, "profile": cfg.profile, "seed": cfg.seed,
                "grid": grid, "points": rows, "baselines": refs}
    if any(r.get("curves") for r in runs):
        frontier["envelopes"] = tables(runs + ref_runs)
    chosen = choose(rows, kind)
    if chosen is not None:
        frontier["chosen"] = chosen
    if PartialState().is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        checkpoint.write_json(out / "frontier.json", frontier)
        if "envelopes" in frontier:
            envelope_figure(frontier["envelopes"], out / "frontier.png",
                            f"{cfg.method} sweep on {frontier['benchmark']} ({cfg.profile})")
        else:
            frontier_figure(frontier, out / "frontier.png")
    PartialState().wait_for_everyone()
    return frontier
