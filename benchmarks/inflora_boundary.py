"""Where InfLoRA's task-boundary time goes: the statistics passes over the task's training data
against the decompositions (design of ``B_t``, memory update), for the first tasks of a profile,
without training in between.

    python benchmarks/inflora_boundary.py --profile quick --tasks 2

Saves ``benchmarks/results/inflora_boundary_<profile>.json``. Run nothing beside it."""

from __future__ import annotations

import argparse
import json
import time

from accelerate import Accelerator
from driver import save

from retain import RunConfig
from retain.backbones import load_backbone
from retain.loop import Engine
from retain.methods.inflora import InfLoRA, SubspaceMemory


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="quick")
    p.add_argument("--tasks", type=int, default=2)
    args = p.parse_args()
    seconds = {"statistics_passes": 0.0, "design": 0.0, "update": 0.0}

    def timed(fn, key):
        def wrapper(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                seconds[key] += time.perf_counter() - t0
        return wrapper

    for cls, name, key in ((InfLoRA, "input_covariances", "statistics_passes"),
                           (SubspaceMemory, "design", "design"),
                           (SubspaceMemory, "update", "update")):
        setattr(cls, name, timed(getattr(cls, name), key))
    plan = RunConfig(method="inflora", profile=args.profile, retention=False,
                    out="runs/inflora_boundary").plan()
    cfg = plan.config
    stream = plan.build_stream()
    backbone = load_backbone(cfg.backbone)
    method = plan.build_method()
    method.setup(backbone, stream)
    engine = Engine(cfg, stream, backbone, method, Accelerator(cpu=True), progress=False)
    boundary = 0.0
    for task in stream.tasks[:args.tasks]:
        boundary += engine.boundary(method.begin_task, task)
        boundary += engine.boundary(method.end_task, task)
    report = {"profile": args.profile, "tasks": args.tasks, "boundary_seconds": boundary,
              **{f"{k}_seconds": v for k, v in seconds.items()},
              "memories": len(method.memories), "targeted_layers": len(method.layers)}
    print(json.dumps(report, indent=1))
    save(f"inflora_boundary_{args.profile}.json", report)


if __name__ == "__main__":
    main()
