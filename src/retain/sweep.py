"""A grid of method options on one stream, and the plasticity-retention frontier it traces.

Each point is an ordinary run in ``OUT/<key=value,...>/`` (finished points are not run again,
interrupted ones resume); ``OUT/frontier.json`` holds every point's summary row and
``OUT/frontier.png`` plots plasticity and final accuracy against retention."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from retain import checkpoint
from retain.config import RunConfig
from retain.errors import RetainError
from retain.summary import summary_row


def grid_points(grid: dict[str, list[str]]) -> list[dict[str, str]]:
    if not grid or any(not values for values in grid.values()):
        raise RetainError("a sweep needs at least one --grid KEY=V1,V2,... with values")
    return [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]


def point_name(point: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in point.items())


def frontier_row(results: dict[str, Any], label: str, options: dict[str, str] | None = None
                 ) -> dict[str, Any]:
    return {"label": label, "options": options or {}, **summary_row(results)}


def sweep(config: RunConfig, grid: dict[str, list[str]], baselines: list[str] | None = None,
          progress: bool = True) -> dict[str, Any]:
    """Run every point of ``grid`` (method options) with ``config`` and write the frontier."""
    from accelerate import PartialState

    from retain.engine import run_or_load
    from retain.reporting.figures import frontier_figure

    out = Path(config.out)
    points = grid_points(grid)
    rows = []
    for point in tqdm(points, desc="sweep", unit="run", disable=not progress):
        cfg = dataclasses.replace(config, out=str(out / point_name(point)),
                                  method_options={**config.method_options, **point})
        results = run_or_load(cfg, progress)
        rows.append(frontier_row(results, point_name(point), point))
    refs = []
    for path in baselines or []:
        results = json.loads(Path(path).read_text())
        refs.append(frontier_row(results, f"{results['method']} ({results['head']})"))
    cfg = config.resolved()
    frontier = {"method": cfg.method, "benchmark": cfg.benchmark or cfg.data,
                "profile": cfg.profile, "seed": cfg.seed, "grid": grid, "points": rows,
                "baselines": refs}
    if PartialState().is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        checkpoint.write_json(out / "frontier.json", frontier)
        frontier_figure(frontier, out / "frontier.png")
    PartialState().wait_for_everyone()
    return frontier
