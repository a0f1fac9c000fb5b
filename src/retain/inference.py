"""Inference cost: seconds per batch of the model as deployed after the stream, as a ratio to
the untouched backbone on the same batch (``docs/using.md`` lists it with the other costs).

"As deployed" is what ``retain export`` writes: the method's changes merged into the backbone
(``merged_model``), so a method that merges costs what the backbone costs, and a grown one
what its wider MLPs cost. A method whose modules do not fold into the backbone (NTK-CL) is
timed as it runs. The untouched side is a fresh copy of the pretrained backbone, loaded after
the stream; the two alternate on the same batch. Both sides stop at the pooled features
(next-token logits for a language model): the head is left out of both, as it is the same
small product for every method.

The figure is the median of paired ratios, one per round (deployed over untouched, timed one
right after the other), and its spread the 10th to 90th percentile of those ratios: two models
of equal cost read about 1 with 1 inside the spread however busy the machine (the spread then
widens), while a median of each side apart lets a busy moment fall on one side only. The
middle 80%, not the middle half: on a shared CPU the load comes in spells longer than a round,
so the rounds are fewer independent draws than they seem, and the interquartile range of 30
of them left 1 out of one run in ten on two equal models
(``benchmarks/results/inference_ratio_smoke_interquartile.json``)."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable

import torch
from accelerate import Accelerator

from retain.backbones import Backbone
from retain.data.stream import Stream
from retain.errors import RetainError
from retain.kinds import Kind

Forward = Callable[[dict[str, torch.Tensor]], torch.Tensor]


def probe_batch(stream: Stream, backbone: Backbone, batch_size: int, max_length: int,
                device: torch.device) -> dict[str, torch.Tensor]:
    """The first ``batch_size`` test items of the first task that has them (a run that keeps
    no test splits has none for tasks of earlier sessions), batched as the engine does."""
    task = next(t for t in stream.tasks if len(t.test))
    items = list(task.test.items[:batch_size])
    batch = backbone.batch(items, max_length)
    return {k: v.to(device) for k, v in batch.items()}


def deployed_forward(method, kind: Kind) -> tuple[Forward, str]:
    """The forward of the model as exported (``"merged"``), or of the method as it runs where
    it cannot merge (``"as trained"``)."""
    try:
        merged = method.merged_model().eval()
    except RetainError:
        return kind.method_output(method), "as trained"
    return kind.output(method.backbone, merged), "merged"


@torch.no_grad()
def paired_seconds(forwards: dict[str, Forward], batch: dict[str, torch.Tensor],
                   accelerator: Accelerator, rounds: tuple[int, int] = (30, 100),
                   warmup: int = 3, budget_seconds: float = 3.0) -> dict[str, list[float]]:
    """Wall seconds of each ``forward(batch)`` in every timed round, under the run's autocast.
    Every forward runs once a round, in an order reversed each round (so that none runs first
    more often); ``warmup`` rounds are discarded, then at least ``rounds[0]`` rounds are timed,
    and more (an even number, at most ``rounds[1]``) while they have taken under
    ``budget_seconds``."""
    if rounds[0] < 2:
        raise ValueError("the spread needs at least two timed rounds")
    names = list(forwards)
    times: dict[str, list[float]] = {name: [] for name in names}
    spent, i = 0.0, 0
    while True:
        done = i - warmup
        if done >= rounds[1] or (done >= rounds[0] and done % 2 == 0
                                 and spent >= budget_seconds):
            return times
        for name in names if i % 2 == 0 else names[::-1]:
            _synchronise(accelerator.device)
            start = time.perf_counter()
            with accelerator.autocast():
                forwards[name](batch)
            _synchronise(accelerator.device)
            if done >= 0:
                times[name].append(time.perf_counter() - start)
                spent += times[name][-1]
        i += 1


def ratio_and_spread(deployed: list[float], untouched: list[float]
                     ) -> tuple[float, list[float]]:
    """The median of the per-round ratios ``deployed / untouched`` and their 10th to 90th
    percentile ``[low, high]``, rounded outwards to ratios measured: those ranked
    ``floor((n - 1) / 10)`` from either end (so the median lies between them)."""
    ratios = sorted(d / u for d, u in zip(deployed, untouched, strict=True))
    k = (len(ratios) - 1) // 10
    return statistics.median(ratios), [ratios[k], ratios[-1 - k]]


# the default measurement (``--inference-rounds`` not given): at least 2 timed rounds after one
# warm-up, more (up to BUDGETED_ROUNDS) while the whole measurement stays within SHARE of the
# run's time before it
SHARE = 0.02
BUDGETED_ROUNDS = 30


def inference_cost(method, load_untouched: Callable[[], torch.nn.Module],
                   batch: dict[str, torch.Tensor], kind: Kind, accelerator: Accelerator,
                   rounds: int | None, run_seconds: float = 0.0
                   ) -> dict[str, float | int | str | None]:
    """The ``cost`` fields: median seconds per batch of the model as deployed and of a fresh
    copy of the pretrained backbone (``load_untouched()``), the median of their paired ratios
    with its spread (10th to 90th percentile) and number of rounds, and which model was timed.
    ``rounds`` given: at least that many rounds, more (up to 100) while they took under
    ``rounds / 10`` seconds. ``rounds`` None (the default): 2 to :data:`BUDGETED_ROUNDS`
    rounds, within :data:`SHARE` of ``run_seconds`` (the run before it) for the whole
    measurement, copies and warm-up included, so that it costs a run at most that much.
    A measurement that fails (out of memory with the two copies, a merge that fails) is
    reported on standard error and left out (None), so that the run's results are written."""
    method.eval()
    started = time.perf_counter()
    try:
        forward, path = deployed_forward(method, kind)
        untouched = load_untouched().to(accelerator.device).eval()
        forwards = {"deployed": forward, "untouched": kind.output(method.backbone, untouched)}
        if rounds is None:
            left = SHARE * run_seconds - (time.perf_counter() - started)
            seconds = paired_seconds(forwards, batch, accelerator, rounds=(2, BUDGETED_ROUNDS),
                                     warmup=1, budget_seconds=left)
        else:
            seconds = paired_seconds(forwards, batch, accelerator,
                                     rounds=(rounds, max(rounds, 100)), budget_seconds=rounds / 10)
    except Exception as e:  # noqa: BLE001  (a cost figure must not lose the run's results)
        if accelerator.is_main_process:
            print(f"inference cost not measured: {type(e).__name__}: {e}".splitlines()[0],
                  file=sys.stderr)
        return {"inference_ratio": None, "inference_ratio_spread": None,
                "inference_path": "not measured"}
    finally:
        forward = untouched = None  # the copies go before the results are written
        if accelerator.device.type == "cuda":
            torch.cuda.empty_cache()
    ratio, spread = ratio_and_spread(seconds["deployed"], seconds["untouched"])
    return {"inference_seconds_per_batch": statistics.median(seconds["deployed"]),
            "inference_seconds_per_batch_untouched": statistics.median(seconds["untouched"]),
            "inference_ratio": ratio,
            "inference_ratio_spread": spread,
            "inference_rounds": len(seconds["deployed"]),
            "inference_path": path,
            "inference_batch_size": len(next(iter(batch.values())))}


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
