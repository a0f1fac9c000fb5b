"""Run methods one after another on a benchmark profile and save a summary table (JSON).

    python benchmarks/baselines.py --profile quick --methods frozen-ncm,seq-lora,seq-ft,joint

Each run's full results stay in ``runs/baselines/<profile>/<method>/results.json``; the summary
goes to ``benchmarks/results/baselines_<profile>.json`` and is printed. Run nothing else beside
it: timings taken next to another job are worthless on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from retain import RunConfig, run

ROOT = Path(__file__).resolve().parent


def summarise(results: dict, wall: float) -> dict:
    m, c = results["metrics"], results["cost"]
    row = {"method": results["method"], "head": results["head"],
           "final_accuracy": m["final_accuracy"],
           "average_incremental_accuracy": m["average_incremental_accuracy"],
           "forgetting": m["forgetting"], "plasticity": m["plasticity"],
           "task_incremental_final": results.get("task_incremental_metrics", {})
           .get("final_accuracy"),
           "trainable_parameters": c["trainable_parameters"],
           "stored_parameters": c["stored_parameters"],
           "median_step_seconds": c["median_step_seconds"], "wall_seconds": wall}
    for k, v in (results.get("retention") or {}).items():
        row[f"retention_{k}"] = v["ratio"]
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="quick")
    p.add_argument("--methods", default="frozen-ncm,seq-lora,seq-ft,joint")
    p.add_argument("--heads", default="", help="comma list of method:head extras, e.g. "
                   "frozen-ncm:growing")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    jobs = [(m, None) for m in args.methods.split(",") if m]
    jobs += [tuple(x.split(":")) for x in args.heads.split(",") if x]
    rows = []
    for method, head in jobs:
        out = Path("runs/baselines") / args.profile / (method + (f"-{head}" if head else ""))
        start = time.perf_counter()
        cfg = RunConfig(method=method, profile=args.profile, seed=args.seed, head=head,
                        out=str(out))
        results = run(cfg, resume=(out / "checkpoint").exists(), progress=False)
        rows.append(summarise(results, time.perf_counter() - start))
        print(json.dumps(rows[-1]), flush=True)
    dest = ROOT / "results" / f"baselines_{args.profile}.json"
    dest.write_text(json.dumps(rows, indent=1))
    print(f"saved {dest}")


if __name__ == "__main__":
    main()
