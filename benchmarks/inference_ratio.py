"""Run methods N times each and collect the inference ratio every run reports with its spread.

    python benchmarks/inference_ratio.py --methods frozen-ncm,seq-lora --runs 5 --profile smoke

The runs alternate between the methods (so that a busy spell of the machine falls on all of
them), each ``retain run --method M --profile P --out OUT/M_i --quiet``. Saves
``benchmarks/results/inference_ratio_<profile>.json``: every run's ``inference_ratio``,
``inference_ratio_spread`` (10th to 90th percentile of the paired per-round ratios) and whether
the spread holds 1, with the exact commands, the commit (``benchmarks/driver.py``) and the
machine's load average.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from driver import commit, save


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default="frozen-ncm,seq-lora")
    p.add_argument("--runs", type=int, default=5, help="runs per method")
    p.add_argument("--profile", default="smoke")
    p.add_argument("--out", default="runs/inference_ratio", help="where the runs go (replaced)")
    p.add_argument("--note", default="", help="the machine's state, saved with the figures")
    args = p.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    load_before = os.getloadavg()
    at_start = commit()  # the code the runs ran
    rows = []
    for i in range(1, args.runs + 1):
        for method in methods:
            run_dir = out / f"{method}_{i}"
            cmd = [str(Path(sys.executable).parent / "retain"), "run", "--method", method,
                   "--profile", args.profile, "--out", str(run_dir), "--quiet"]
            started = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            cost = json.loads((run_dir / "results.json").read_text())["cost"]
            low, high = cost["inference_ratio_spread"]
            rows.append({"method": method, "run": i, "inference_ratio": cost["inference_ratio"],
                         "inference_ratio_spread": [low, high],
                         "one_within_spread": low <= 1 <= high,
                         "inference_rounds": cost["inference_rounds"],
                         "inference_path": cost["inference_path"],
                         "inference_seconds_per_batch": cost["inference_seconds_per_batch"],
                         "inference_seconds_per_batch_untouched":
                             cost["inference_seconds_per_batch_untouched"],
                         "run_seconds": time.perf_counter() - started,
                         "command": " ".join(cmd)})
            print(f"{method} run {i}: {cost['inference_ratio']:.2f} "
                  f"[{low:.2f}-{high:.2f}] ({cost['inference_rounds']} rounds)", flush=True)
    from retain.inference import ratio_and_spread

    report = {"spread": " ".join(ratio_and_spread.__doc__.split()),
              **({"commit_at_start": at_start} if commit() != at_start else {}),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "load_average_before": load_before,
                          "load_average_after": os.getloadavg()},
              "note": args.note,
              "all_within_spread": all(r["one_within_spread"] for r in rows),
              "runs": rows}
    print(f"1 within every run's spread: {report['all_within_spread']}")
    save(f"inference_ratio_{args.profile}.json", report)


if __name__ == "__main__":
    main()
