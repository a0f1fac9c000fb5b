"""lmfar frontiers (issue 36): one new task (German) from the untouched SmolLM2, 60 steps, curves
every 10 steps on held-out and test sequences, each configuration at a grid of learning rates;
then the envelopes and the figures at matched amounts of learning (``retain.frontier``).

    python benchmarks/lmfar_frontier.py                          # stage A, every run
    python benchmarks/lmfar_frontier.py --only seq-ft,lora-all   # some configurations
    python benchmarks/lmfar_frontier.py --seeds 1,2 --only ...   # stage B: more seeds
    python benchmarks/lmfar_frontier.py --table                  # no training: the table
    python benchmarks/lmfar_frontier.py --added                  # runs added to the saved table
    python benchmarks/lmfar_frontier.py --seeds 0,1,2 --only seq-ft,lora-all --lrs 3e-5,1e-4,1e-3 \
        --spreads                                                 # stage B on its own file
    python benchmarks/lmfar_frontier.py --only plate-r8-official --lrs 0.003 --probe 32
        # the same run with 32 probe sequences each: the probe's own noise against the seeds'

Each run is ``retain run --benchmark lmfar --profile quick`` with ``COMMON`` and its own fields,
in ``runs/lmfar_frontier/<configuration>_lr<rate>[_seed<s>]/`` (a finished run is read, not run
again); the tables go to ``benchmarks/results/frontier_lmfar.json`` and the figure to
``docs/figures/lmfar_frontier.png``; with ``--spreads``, only the seed spreads of the runs named,
each seed's table and every run's curve points to ``frontier_lmfar_seeds.json`` (the main
table stays). One run at a time: nothing else beside it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from driver import load, save

from retain import RunConfig
from retain.engine import run_or_load
from retain.frontier import curve, load_runs, markdown, seed_spreads, spread_markdown, table, tables
from retain.reporting.figures import envelope_figure

COMMON = dict(benchmark="lmfar", profile="quick", tasks=1, steps=60, probe_every=10,
              probe_task_sequences=8, probe_english_sequences=8, holdout=8, retention=False,
              inference_rounds=2)

# configuration -> (RunConfig fields, learning rates); rates spaced by about 3x, as many as
# one session on 2 cores ran (about 5 minutes a run; growth's 60 steps longer)
LORA_ALL = {"target_modules": ["all-linear"]}
STAGE_A = {
    "seq-ft": ({"method": "seq-ft"}, [3e-5, 1e-4, 3e-4]),
    "lora-all": ({"method": "seq-lora", "method_options": LORA_ALL}, [3e-4, 1e-3, 3e-3]),
    "plate-r8": ({"method": "plate", "method_options": {"selection": "exact"}}, [1e-3, 3e-3]),
    "plate-r8-official": ({"method": "plate", "method_options": {"selection": "official"}},
                          [1e-3, 3e-3, 1e-2, 3e-2]),
    "top10": ({"method": "seq-ft", "method_options": {"top_blocks": 10}}, [1e-4]),
    "share": ({"method": "share"}, [4e-3]),
    "grow-all": ({"method": "grow"}, [1e-4]),
    "grow-third": ({"method": "grow", "method_options": {"select": "spread"}}, [1e-4, 3e-4]),
    "plate-r32-tau0.98": ({"method": "plate", "method_options": {"r": 32, "tau": 0.98,
                                                                 "selection": "official"}},
                          [1e-3, 3e-3]),
}
# stage B, seed 1 where the verdicts are decided:
#   --seeds 1 --only seq-ft,lora-all,grow-all --lrs 3e-5,1e-4,1e-3
RUNS = Path("runs/lmfar_frontier")
FIGURE = Path("docs/figures/lmfar_frontier.png")


def folder(name: str, lr: float, seed: int, probe: int = 8) -> Path:
    """A run's folder; runs with other probe sizes apart, out of the tables."""
    return ((RUNS if probe == 8 else Path(f"{RUNS}_probe{probe}"))
            / (f"{name}_lr{lr:g}" + (f"_seed{seed}" if seed else "")))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", help="comma-separated configurations (default: all)")
    p.add_argument("--seeds", default="0", help="comma-separated training seeds")
    p.add_argument("--lrs", help="only these rates (comma-separated)")
    p.add_argument("--table", action="store_true", help="no training: tables from the runs")
    p.add_argument("--no-table", action="store_true", help="train only: no table written")
    p.add_argument("--added", action="store_true",
                   help="the runs under runs/lmfar_frontier added to the saved table (their "
                        "configurations' rows replaced, matched to its reference's best)")
    p.add_argument("--spreads", action="store_true",
                   help="the seed spreads of the runs named only, to frontier_lmfar_seeds.json")
    p.add_argument("--probe", type=int, default=8,
                   help="task and English probe sequences of each curve point (not 8: run in "
                        "folders of their own, compared point by point with the 8-sequence "
                        "run of the same configuration, rate and seed; frontier_lmfar_probe.json)")
    args = p.parse_args()
    if args.probe != 8 and (args.table or args.added or args.spreads):
        p.error("--probe runs and checks a run; the tables take the 8-sequence runs only")
    names = args.only.split(",") if args.only else list(STAGE_A)
    if not (args.table or args.added):  # --added: no training, the runs that are there
        for seed in map(int, args.seeds.split(",")):
            for name in names:
                fields, rates = STAGE_A[name]
                for lr in rates:
                    if args.lrs and lr not in {float(x) for x in args.lrs.split(",")}:
                        continue
                    cfg = RunConfig(**{**COMMON, "probe_task_sequences": args.probe,
                                       "probe_english_sequences": args.probe}, **fields,
                                    lr=lr, seed=seed, out=str(folder(name, lr, seed, args.probe)))
                    res = run_or_load(cfg, progress=False)
                    print(f"{name} lr {lr:g} seed {seed}: {res['cost']['wall_seconds']:.0f} s")
                    if args.probe != 8:
                        probe_check(name, lr, seed, args.probe, res)
    if args.no_table or args.probe != 8:
        return
    runs = load_runs([str(RUNS)])
    if args.added:
        added(runs)
        return
    if args.spreads:
        seeds, lrs = set(map(int, args.seeds.split(","))), args.lrs
        named = [r for r in runs if r["_path"].split("/")[-1].split("_lr")[0] in names
                 and int(r["config"]["seed"]) in seeds
                 and (not lrs or float(r["config"]["lr"]) in {float(x) for x in lrs.split(",")})]
        spreads = seed_spreads(named)
        save("frontier_lmfar_seeds.json", {
            "common": COMMON, "runs": {r["_path"]: {"config": r["config"],
                                                    "curves": r["curves"]} for r in named},
            "tables": {s: tables([r for r in named if r["config"]["seed"] == s])
                       for s in sorted(seeds)},
            "seed_spreads": spreads})
        print(spread_markdown(spreads))
        return
    found = tables([r for r in runs if r["config"]["seed"] == 0])
    spreads = seed_spreads(runs)
    save("frontier_lmfar.json", {"common": COMMON, "configurations": {
        k: {"fields": v[0], "rates": v[1]} for k, v in STAGE_A.items()},
        "runs": sorted(r["_path"] for r in runs), "tables": found, "seed_spreads": spreads})
    envelope_figure(found, FIGURE, "lmfar: German from the untouched SmolLM2-135M, 60 steps "
                    "(seed 0)")
    for t in found:
        print(markdown(t))
    print(spread_markdown(spreads))


def probe_check(name: str, lr: float, seed: int, probe: int, wide: dict) -> None:
    """A run with ``probe`` sequences per probe against the same run with 8 (its folder, or
    the curves saved in ``added_runs``): training is the same (probes run in evaluation mode),
    the 8 are the first of the ``probe``, so each point's difference is what the smaller probe
    adds to the noise. Saved by configuration in ``frontier_lmfar_probe.json``."""
    path = str(folder(name, lr, seed))
    saved = load("frontier_lmfar.json").get("added_runs", {})
    if not Path(path, "results.json").is_file() and path not in saved:
        raise SystemExit(f"no 8-sequence run {path} to compare with: run it first (without "
                         "--probe)")
    narrow = load_runs([path])[0] if Path(path, "results.json").is_file() else saved[path]
    rows = []
    for a, b in zip(curve(narrow), curve(wide), strict=True):
        assert a.step == b.step
        rows.append({"step": a.step, "task_perplexity": [a.x, b.x], "worst_ratio": [a.y, b.y],
                     "mean_kl": [a.kl, b.kl]})
    gaps = {k: max(abs(r[k][1] - r[k][0]) for r in rows)
            for k in ("task_perplexity", "worst_ratio", "mean_kl")}
    try:
        checks = load("frontier_lmfar_probe.json").get("checks", {})
    except FileNotFoundError:
        checks = {}
    checks[f"{name} lr {lr:g} seed {seed}"] = {"sizes": [8, probe], "points": rows,
                                              "largest_difference": gaps}
    save("frontier_lmfar_probe.json", {"common": COMMON, "checks": checks})
    print(f"8 against {probe} probe sequences, largest difference: {gaps}")


def added(runs: list[dict]) -> None:
    """Runs of a later session merged into the saved table: the earlier sessions' added runs
    (saved with their curves in ``added_runs``) join the runs here unless run again, the
    configurations of all of them replace their rows (the oldest runs' folders are gone; their
    rows keep their points), every figure matched to the saved reference's best (seed 0;
    seeds 1 and 2 for the spreads from the saved spreads and ``frontier_lmfar_seeds.json``)."""
    saved, seeds = load("frontier_lmfar.json"), load("frontier_lmfar_seeds.json")
    here = {r["_path"] for r in runs}  # earlier sessions' added runs, kept where not run again
    runs = runs + [{**v, "method": v["config"]["method"], "_path": k}
                   for k, v in saved.get("added_runs", {}).items() if k not in here]
    base = saved["tables"][0]
    ref_seed2 = seeds["tables"]["2"][0]
    given = {0: (base["reference_best_perplexity"], base["reference_best_heldout_perplexity"]),
             1: (saved["seed_spreads"]["seq-ft"]["best_perplexity"][1], None),
             2: (ref_seed2["reference_best_perplexity"],
                 ref_seed2["reference_best_heldout_perplexity"])}
    new = table([r for r in runs if r["config"]["seed"] == 0], 1, given=given[0])
    names = {row["configuration"] for row in new["rows"]}
    merged = {**base, "rows": [r for r in base["rows"] if r["configuration"] not in names]
              + new["rows"]}
    spreads = seed_spreads(runs, given=given)
    save("frontier_lmfar.json", {
        "common": COMMON, "configurations": {k: {"fields": v[0], "rates": v[1]}
                                             for k, v in STAGE_A.items()},
        "runs": sorted(set(saved["runs"]) | {r["_path"] for r in runs}),
        "rows_run_again": sorted(names), "tables": [merged],
        "seed_spreads": {**saved["seed_spreads"], **spreads},
        "added_runs": {r["_path"]: {"config": r["config"], "curves": r["curves"],
                                    "cost": r["cost"]} for r in runs}})
    envelope_figure([merged], FIGURE, "lmfar: German from the untouched SmolLM2-135M, 60 steps "
                    "(seed 0)")
    print(markdown(merged))
    print(spread_markdown(spreads))


if __name__ == "__main__":
    main()
