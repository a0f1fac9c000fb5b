"""A benchmark's headline table over three training seeds (issue 40): the seed methods, the
baselines a user compares against and named variants, mean and spread, each run also scored on a
validation split so that defaults are chosen on it, never on the test split (JSON).

    python benchmarks/seeds.py --benchmark wordnet45                 # quick profile, seeds 0,1,2
    python benchmarks/seeds.py --benchmark debian30 --only plate,seq-lora --seeds 0,1

Each entry of ``ENTRIES`` is a label and the RunConfig fields it adds (a method, its head, a
preset); every run is ``retain run --benchmark B --profile P --validation 0.1 --seed S`` with
them, in ``runs/seeds/<benchmark>/<profile>/runs/<label>/seed<S>/`` (a finished run is read, not
run again). The class order is the benchmark's (fixed: wordnet45 ``RandomState(1993)``, debian30
``RandomState(2024)``); only the training seed varies. ``frozen-ncm`` trains nothing and draws
nothing at random (its analytic head's projection has its own fixed seed): it runs once and
stands for every seed (``seed_free`` in the JSON; spread 0 by construction). Rows go to
``benchmarks/results/seeds_<benchmark>_<profile>.json``: per entry the mean and sample standard
deviation over the seeds of every summary figure (the validation figure beside the test one)
and each run's wall seconds, merged by label into what the file holds; the comparison report
of the entries run to the run folder. One run at a time.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from driver import save_table

from retain import RunConfig
from retain.comparison import _write, assemble
from retain.engine import run_or_load

ENTRIES: dict[str, dict] = {
    "frozen-ncm": {"method": "frozen-ncm"},
    "frozen-ncm/analytic": {"method": "frozen-ncm", "head": "analytic"},
    "frozen-ncm/analytic-layers4": {"method": "frozen-ncm", "head": "analytic",
                                    "feature_layers": 4},
    "frozen-ncm/analytic-layers4-pooled": {"method": "frozen-ncm", "head": "analytic",
                                           "feature_layers": 4,
                                           "head_options": {"select": "pooled"}},
    "first-session": {"method": "first-session"},
    "first-session:layup": {"method": "first-session", "preset": "layup"},
    "first-session:layup/pooled": {"method": "first-session", "preset": "layup",
                                   "head_options": {"select": "pooled"}},
    "seq-lora": {"method": "seq-lora"},
    "joint": {"method": "joint"},
    "inflora": {"method": "inflora"},
    "plate": {"method": "plate"},
    "share": {"method": "share"},
    # the paper's settings, retain's defaults until issue 40 (its runs were made so)
    "ntk-cl": {"method": "ntk-cl", "head": "prototypes", "method_options": {"w_reg": 1e-3}},
    # every block grown: retain's classification default until issue 40 (its runs were made so)
    "grow": {"method": "grow", "method_options": {"select": "all"}},
    # the analytic head's pooled rule for lambda with each seed method that uses the head
    **{f"{m}/pooled": {"method": m, "head_options": {"select": "pooled"}}
       for m in ("inflora", "plate", "share")},
    "grow/pooled": {"method": "grow", "head_options": {"select": "pooled"},
                    "method_options": {"select": "all"}},  # beside "grow": every block
    # NTK-CL with the one setting that beat the frozen backbone on wordnet45 (methods/ntk-cl.md)
    "ntk-cl/analytic-wreg0.1": {"method": "ntk-cl", "head": "analytic",
                                "method_options": {"w_reg": 0.1}},
    # towards 0.70 (issue 40): InfLoRA's adapted features read as LayUP reads them
    "inflora/layers4-pooled": {"method": "inflora", "head": "analytic", "feature_layers": 4,
                               "head_options": {"select": "pooled"}},
    # towards 0.70: a wider projection (M = 10000, RanPAC's own; benchmarks/feature_layers.py
    # --widths measures what M = 5000 leaves of the frozen features' accuracy)
    "frozen-ncm/analytic-layers4-pooled-M10000": {
        "method": "frozen-ncm", "head": "analytic", "feature_layers": 4,
        "head_options": {"select": "pooled", "projection": 10000}},
    "first-session:layup/pooled-M10000": {
        "method": "first-session", "preset": "layup",
        "head_options": {"select": "pooled", "projection": 10000}},
    # each seed method's named presets (retain list METHOD): default against preset
    **{f"{m}:{preset}": {"method": m, "preset": preset}
       for m, preset in (("inflora", "paper"), ("plate", "authors"), ("share", "paper"),
                         ("ntk-cl", "paper"), ("ntk-cl", "authors"), ("grow", "paper"))},
}
SEED_FREE = ("frozen-ncm",)  # methods that train nothing and draw nothing at random


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--benchmark", default="wordnet45", choices=("wordnet45", "debian30"))
    p.add_argument("--profile", default="quick")
    p.add_argument("--only", help="comma-separated labels of ENTRIES (default: all)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--validation", type=float, default=0.1)
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    labels = args.only.split(",") if args.only else list(ENTRIES)
    unknown = [x for x in labels if x not in ENTRIES]
    if unknown:
        p.error(f"unknown entries {unknown}; known: {', '.join(ENTRIES)}")
    out = Path(f"runs/seeds/{args.benchmark}/{args.profile}")
    runs: dict[str, list[dict]] = {}
    for label in labels:
        fields = ENTRIES[label]
        free = fields["method"] in SEED_FREE
        for seed in seeds[:1] if free else seeds:
            folder = out / "runs" / label.replace("/", "--").replace(":", "--") / f"seed{seed}"
            cfg = RunConfig(benchmark=args.benchmark, profile=args.profile,
                            validation=args.validation, seed=seed, out=str(folder), **fields)
            res = run_or_load(cfg, progress=False)
            runs.setdefault(label, []).append(res)
            print(f"{label} seed {seed}: final accuracy {res['metrics']['final_accuracy']:.4f}, "
                  f"{res['cost']['wall_seconds']:.0f} s", flush=True)
        if free:
            runs[label] = runs[label] * len(seeds)
    comparison = assemble(runs, seeds)
    _write(out, comparison)
    rows = [{"label": label, "method": ENTRIES[label]["method"], "fields": ENTRIES[label],
             "head": entry["head"], "seeds": seeds, "mean": entry["mean"], "std": entry["std"],
             "wall_seconds": [r["cost"]["wall_seconds"] for r in entry["runs"]]}
            for label, entry in comparison["methods"].items()]
    save_table(f"seeds_{args.benchmark}_{args.profile}.json", rows, order=list(ENTRIES),
               benchmark=args.benchmark, profile=args.profile, validation=args.validation,
               seed_free=list(SEED_FREE), class_order=comparison["class_orders"])


if __name__ == "__main__":
    main()
