"""Where finished runs would have ended under each rule of the analytic head for lambda (issue
40), from their last checkpoints, without training again (JSON).

    python benchmarks/rule_after.py --benchmark debian30            # every analytic-head entry
    python benchmarks/rule_after.py --benchmark wordnet45 --only inflora,share
    python benchmarks/rule_after.py --benchmark debian30 --only inflora --lambdas 1e5,1e6

The head's solution never feeds back into training (a task-local classifier gives the loss), so
a run's backbone, its statistics ``G`` and ``Q`` and each task's held-out score of every lambda
are the same whatever ``select`` says; only the lambda the head ends with differs, and with it
the final accuracy (``accuracy`` and ``pooled`` store the same scores, so either rule's run
gives both: ``retain.methods.heads.analytic.picked``; the average incremental accuracy would
need every task's checkpoint and is not given). Each finished run of ``seeds.py``
(``runs/seeds/<benchmark>/<profile>/runs/<entry>/seed<S>/``, its entry's config) is rebuilt
from its checkpoint, its head solved at each rule's lambda and scored on the test and
validation splits; the run's own rule must give its own final figures back (checked, else the
script stops; entries done before it are saved). Runs made with ``mse``, or with another head,
are left out. ``--lambdas`` adds, per entry, the same figures with the head solved at each
given lambda (values beyond the grid: whether the grid stops short; the validation split says,
the rules cannot). Rows, per entry and rule: the lambdas and the mean ± spread over the seeds found,
to ``benchmarks/results/rule_after_<benchmark>_<profile>.json`` (merged by label). A frozen
backbone's rows can be held against a run made with the rule itself (``seeds.py``'s
``-pooled`` entries); ``tests/test_statistics_heads.py`` does so for a trained one.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

from driver import load_rows, save_table
from seeds import ENTRIES

from retain import RunConfig
from retain.engine import prepared_engine
from retain.methods.heads.analytic import AnalyticHead, picked
from retain.metrics import final_score

RULES = ("accuracy", "pooled")


def finals(folder: Path, config: RunConfig, rules=RULES, fixed=()) -> dict[str, dict]:
    """Per rule: the lambda it picks from the run's stored scores and the final test and
    validation accuracy of the run's last checkpoint with the head solved at it; per lambda of
    ``fixed`` (key ``lambda=X``), the same with the head solved at that lambda (values beyond
    the grid, which no rule could pick: where the validation split says the grid should go)."""
    engine = prepared_engine(config, folder / "checkpoint")
    head, tasks = engine.method.head, engine.stream.tasks
    if not isinstance(head, AnalyticHead):
        raise SystemExit(f"{folder}: its head is not the analytic head")
    out = {}
    for key, lam in [*((rule, picked(head.choices, rule)) for rule in rules),
                     *((f"lambda={lam:g}", lam) for lam in fixed)]:
        head.resolve(lam)
        test = engine.evaluate(tasks)["matrix"]
        out[key] = {"lambda": head.ridge, "final_accuracy": _final(test),
                    "validation_final_accuracy": _final(engine.validate(tasks))}
    return out


def _final(row: list[float]) -> float:
    """The final accuracy of a score matrix whose last row is ``row``."""
    return final_score([row[: i + 1] for i in range(len(row))])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--benchmark", default="wordnet45", choices=("wordnet45", "debian30"))
    p.add_argument("--profile", default="quick")
    p.add_argument("--only", help="comma-separated entries of seeds.py (default: every "
                                  "analytic-head entry with a finished run)")
    p.add_argument("--lambdas", default="",
                   help="comma-separated lambdas to solve each run's final head at as well, "
                        "whatever the rules pick (rows 'ENTRY [lambda=X]')")
    args = p.parse_args()
    fixed = [float(x) for x in args.lambdas.split(",") if x]
    if any(not (math.isfinite(x) and x > 0) for x in fixed):
        p.error(f"--lambdas must be positive numbers, got {args.lambdas}")
    base = Path(f"runs/seeds/{args.benchmark}/{args.profile}/runs")
    labels = args.only.split(",") if args.only else list(ENTRIES)
    unknown = [x for x in labels if x not in ENTRIES]
    if unknown:
        p.error(f"unknown entries {unknown}; known: {', '.join(ENTRIES)}")
    for label in labels:
        fields = ENTRIES[label]
        found = sorted((base / label.replace("/", "--").replace(":", "--")).glob(
            "seed*/results.json"))
        seeds, per_rule = [], {key: [] for key in [*RULES, *(f"lambda={x:g}" for x in fixed)]}
        for results_file in found:
            results = json.loads(results_file.read_text())
            own_rule = results["config"]["head_options"].get("select", "accuracy")
            if results["config"]["head"] != "analytic" or own_rule not in RULES:
                break  # the entry's runs share their head and rule
            seed = results["config"]["seed"]
            config = RunConfig(benchmark=args.benchmark, profile=args.profile,
                               validation=results["config"]["validation"], seed=seed,
                               out=str(results_file.parent), **fields)
            got = finals(results_file.parent, config, fixed=fixed)
            own = got[own_rule]
            for key in ("final_accuracy", "validation_final_accuracy"):
                stored = (results["metrics"] if key == "final_accuracy"
                          else results["validation_metrics"])["final_accuracy"]
                if abs(own[key] - stored) > 1e-9:
                    raise SystemExit(f"{results_file}: its own rule gives {key} {own[key]}, "
                                     f"the run {stored}: the rebuild is not the run")
            seeds.append(seed)
            for key, value in got.items():
                per_rule[key].append(value)
            print(label, seed, {r: (g["lambda"], round(g["final_accuracy"], 4),
                                    round(g["validation_final_accuracy"], 4))
                                for r, g in got.items()}, flush=True)
        rows = []
        for rule, runs in per_rule.items():
            if not runs:
                continue
            keys = ("final_accuracy", "validation_final_accuracy")
            rows.append({"label": f"{label} [{rule}]", "entry": label, "rule": rule,
                         "seeds": seeds, "lambdas": [r["lambda"] for r in runs],
                         "mean": {k: statistics.fmean(r[k] for r in runs) for k in keys},
                         "std": {k: statistics.stdev(r[k] for r in runs) if len(runs) > 1
                                 else math.nan for k in keys}})
        if rows:  # each entry as it is done, the table in entry order, then rule order
            name = f"rule_after_{args.benchmark}_{args.profile}.json"
            save_table(name, rows, order=_order([*load_rows(name), *rows]),
                       benchmark=args.benchmark, profile=args.profile)


def _order(rows: list[dict]) -> list[str]:
    """The rows' labels by seeds.py's entry order, then the rules, then lambdas by value."""
    entries = {e: i for i, e in enumerate(ENTRIES)}

    def key(row: dict) -> tuple:
        rule = row["rule"]
        fixed = rule.startswith("lambda=")
        return (entries.get(row["entry"], len(entries)), fixed,
                float(rule.split("=", 1)[1]) if fixed else RULES.index(rule))

    return [r["label"] for r in sorted(rows, key=key)]


if __name__ == "__main__":
    main()
