"""Run methods one after another on a benchmark profile and save a summary table (JSON).

    python benchmarks/baselines.py --profile quick --methods frozen-ncm,seq-lora,seq-ft,joint

Each run's full results stay in ``runs/baselines/<profile>/<method>/results.json``; the rows
(``benchmarks/driver.py``'s format, labelled ``method/head``) go to
``benchmarks/results/baselines_<profile>.json`` (replacing earlier rows of the same label) and
are printed. A finished run of the same config in that folder is read, not run again. Run nothing
else beside it: timings taken next to another job are worthless on 2 cores.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from driver import run_row, save_table

from retain import RunConfig
from retain.engine import run_or_load


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
        cfg = RunConfig(method=method, profile=args.profile, seed=args.seed, head=head,
                        out=str(out))
        results = run_or_load(cfg, progress=False)  # a finished run with this config is read
        rows.append(run_row(f"{results['method']}/{results['head']}", results))
        print(json.dumps({k: rows[-1][k] for k in ("label", "final_accuracy")}), flush=True)
        save_table(f"baselines_{args.profile}.json", rows)


if __name__ == "__main__":
    main()
