"""A benchmark's headline table over three training seeds (issue 40): every seed method and the
baselines a user compares against, mean and spread, each run also scored on a validation split
so that defaults can be chosen on it (JSON).

    python benchmarks/seeds.py --benchmark wordnet45                 # quick profile, seeds 0,1,2
    python benchmarks/seeds.py --benchmark debian30 --methods plate,seq-lora --seeds 0,1

One ``retain compare`` per benchmark (``runs/seeds/<benchmark>/<profile>/``: finished runs are
read, not run again), with ``--validation 0.1``; the class order is the benchmark's (fixed:
wordnet45 ``RandomState(1993)``, debian30 ``RandomState(2024)``), only the training seed varies.
Rows go to ``benchmarks/results/seeds_<benchmark>_<profile>.json``: per method its mean and
sample standard deviation over the seeds of every summary figure, the validation figure beside
the test one, and each run's wall seconds. Hours on 2 CPU cores (48 quick runs for both
benchmarks): a GPU's work.
"""

from __future__ import annotations

import argparse

from driver import save

from retain import RunConfig
from retain.comparison import compare

METHODS = ("frozen-ncm,first-session,seq-lora,joint,inflora,plate,share,ntk-cl,grow")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--benchmark", default="wordnet45", choices=("wordnet45", "debian30"))
    p.add_argument("--profile", default="quick")
    p.add_argument("--methods", default=METHODS)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--validation", type=float, default=0.1)
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    config = RunConfig(benchmark=args.benchmark, profile=args.profile,
                       validation=args.validation,
                       out=f"runs/seeds/{args.benchmark}/{args.profile}")
    comparison = compare(config, args.methods.split(","), seeds, progress=False)
    rows = []
    for name, entry in comparison["methods"].items():
        rows.append({"method": name, "head": entry["head"], "seeds": seeds,
                     "mean": entry["mean"], "std": entry["std"],
                     "wall_seconds": [r["cost"]["wall_seconds"] for r in entry["runs"]]})
        mean = entry["mean"]
        print(f"{name}: final accuracy {mean.get('final_accuracy', float('nan')):.3f} "
              f"(validation {mean.get('validation_final_accuracy', float('nan')):.3f})",
              flush=True)
    save(f"seeds_{args.benchmark}_{args.profile}.json",
         {"benchmark": args.benchmark, "profile": args.profile, "validation": args.validation,
          "class_order": comparison["class_orders"], "rows": rows})


if __name__ == "__main__":
    main()
