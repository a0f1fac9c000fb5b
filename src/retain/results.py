"""``results.json`` of a run: one schema for every task kind (the score matrices and their
summary, retention, the costs, versions), and the process's peak memory it reports."""

from __future__ import annotations

import platform
import resource
import statistics
import sys
from typing import Any

import torch
from accelerate import Accelerator

from retain import metrics
from retain.config import RunConfig
from retain.data.stream import Stream
from retain.loop import Record
from retain.methods.base import ContinualMethod, count_unique


def _versions() -> dict[str, str]:
    import accelerate
    import peft
    import transformers

    import retain

    return {"retain": retain.__version__, "python": sys.version.split()[0],
            "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "accelerate": accelerate.__version__,
            "platform": platform.platform()}


def reset_peak_memory(device: torch.device) -> None:
    """Start a fresh peak for this run (several runs may share a process)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: writing 5 resets the resident-set high-water mark (VmHWM)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_memory_mb(device: torch.device) -> float:
    """GPU: peak allocated by torch. CPU: peak resident set size of the process."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def results_json(cfg: RunConfig, stream: Stream, method: ContinualMethod, record: Record,
             ret: dict | None, accelerator: Accelerator, phases: dict[str, float],
             measured: dict[str, Any]) -> dict[str, Any]:
    """``results.json``: one schema for every task kind; ``score`` names the matrix and its
    direction."""
    kind = stream.kind
    sizes = [len(t.test) for t in stream.tasks]

    def summary(matrix: list[list[float]]) -> dict[str, Any]:
        out = metrics.summary(matrix, sizes, kind.score, kind.higher_is_better)
        if not method.info.continual:  # rows before the last are the untrained model
            for key in (f"average_incremental_{kind.score}", "forgetting", "bwt", "plasticity",
                        "relative_forgetting"):
                if key in out:
                    out[key] = float("nan")
        return out

    recorded = {"matrix": record.rows, "task_incremental": record.til_rows}
    rows = kind.main_rows(recorded, cfg.scenario)
    results: dict[str, Any] = {
        "method": cfg.method,
        "head": cfg.head,
        "scenario": cfg.scenario,
        "kind": kind.name,
        "stream": stream.name,
        "config": cfg.to_dict(),
        "class_order": stream.class_order,
        "class_names": stream.class_names,
        "tasks": [{"name": t.name, "classes": t.classes, "train": t.trained_on
                   if t.trained_on is not None else len(t.train), "test": len(t.test),
                   **({"held_out": len(t.heldout)} if t.heldout is not None else {})}
                  for t in stream.tasks],
        "score": {"name": kind.score, "direction": kind.direction},
        "matrix": rows,
        "metrics": summary(rows),
    }
    for key, matrix in kind.matrices(recorded, cfg.scenario).items():
        results[key] = matrix
        if key == "task_incremental_matrix":
            results["task_incremental_metrics"] = summary(matrix)
    if record.validation_rows:  # --validation: what a sweep chooses on
        held = [len(t.heldout) if t.heldout is not None else 0 for t in stream.tasks]
        results["validation_matrix"] = record.validation_rows
        results["validation_metrics"] = metrics.summary(record.validation_rows, held,
                                                        kind.score, kind.higher_is_better)
    results["retention"] = ret
    results["cost"] = _cost(stream, method, record, accelerator, phases, measured)
    results["per_task"] = record.per_task
    results["versions"] = _versions()
    return results


def _cost(stream: Stream, method: ContinualMethod, record: Record, accelerator: Accelerator,
          phases: dict[str, float], measured: dict[str, Any]) -> dict[str, Any]:
    """``results["cost"]``: what the method trains and stores, and where the time went."""
    train_s = sum(p["train_seconds"] for p in record.per_task)
    boundary_s = sum(p["boundary_seconds"] for p in record.per_task)
    steps = record.step_seconds
    stored = method.stored_parameters()
    lora = method.lora_per_task()
    head = count_unique(t for n, t in method.stored_tensors().items() if n.startswith("head."))
    return {
        "trainable_parameters": record.trainable_parameters,
        "stored_parameters": stored,
        # one LoRA of the method's rank on its layers per task, against what the method stores
        # beyond its head
        "stored_ratio_vs_lora_per_task": (len(stream) * lora / max(stored - head, 1)
                                          if lora else None),
        "train_seconds": train_s,
        "boundary_seconds": boundary_s,
        # of the boundary seconds: the head's statistics and solves (resumed older records
        # have none)
        "head_seconds": sum(p.get("head_seconds", 0.0) for p in record.per_task),
        "eval_seconds": sum(p["eval_seconds"] for p in record.per_task),
        "boundary_share": boundary_s / max(train_s + boundary_s, 1e-9),
        "median_step_seconds": statistics.median(steps) if steps else 0.0,
        "steps": len(steps),
        # peak memory, and inference seconds per batch as deployed against the untouched
        # backbone (retain.inference)
        **measured,
        # start-up (backbone, data, the untouched probe), every task (training, boundaries,
        # evaluation), retention, the inference timing; summed over a run's sessions
        **phases,
        "wall_seconds": sum(phases.values()),
        "device": str(accelerator.device),
        "processes": accelerator.num_processes,
    }
