"""Every method with every head scheme that applies, on one stream: the table of issue 12.

    python benchmarks/heads.py --profile quick                  # the whole grid, one at a time
    python benchmarks/heads.py --only inflora/analytic,plate/aligned
    python benchmarks/heads.py --worker 0/3 & ...; python benchmarks/heads.py --collect
    python benchmarks/heads.py --tag cpu --only ntk-cl/prototypes,seq-lora/growing

Each run lives in ``runs/heads/<profile>[-<tag>]/<label>/`` and the rows are gathered into
``benchmarks/results/heads_<profile>[-<tag>].json`` (a tag keeps one machine's rows together).
A finished run is read, not run again. Beside the summary row, each statistics head on a
backbone that moves gets a *refit* accuracy: the same head scheme rebuilt from every task's
training data on the final backbone (what drift compensation of the stored statistics could at
most recover), and every run the accuracy of the first task's classes after each task (column 1
of the matrix), which shows how stale a head goes. ``--collect`` only gathers the rows.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from driver import classification_table, load_rows, run_row, save_table, stamp

from retain.catalogue import HEADS

STAT_HEADS = ("prototypes", "analytic", "aligned")
ALL_HEADS = tuple(HEADS)  # every head, retain.catalogue.HEADS


def grid() -> dict[str, dict]:
    """label -> RunConfig fields, the main table first, then the variants."""
    g: dict[str, dict] = {}
    for method in ("frozen-ncm", "first-session"):
        for head in STAT_HEADS:
            g[f"{method}/{head}"] = {"method": method, "head": head}
    g["joint/growing"] = {"method": "joint", "head": "growing"}
    for method in ("inflora", "plate", "seq-lora"):
        for head in ALL_HEADS:
            g[f"{method}/{head}"] = {"method": method, "head": head}
    ranpac = "1e-8,1e-6,1e-4,1e-2,1,1e2,1e4,1e6,1e8"  # RanPAC's grid, with its squared error
    for m, opts in (("M2000", {"projection": 2000}), ("M0", {"projection": 0}),
                    ("mse", {"select": "mse", "lambdas": ranpac}),
                    ("M2000-mse", {"projection": 2000, "select": "mse", "lambdas": ranpac})):
        g[f"frozen-ncm/analytic-{m}"] = {"method": "frozen-ncm", "head": "analytic",
                                         "head_options": opts}
    g["frozen-ncm/aligned-diagonal"] = {"method": "frozen-ncm", "head": "aligned",
                                        "head_options": {"covariance": "diagonal"}}
    g["frozen-ncm/growing"] = {"method": "frozen-ncm", "head": "growing"}
    for method in ("inflora", "plate", "seq-lora", "first-session"):
        for lr in (5e-3, 5e-2):  # the task-local classifier trains 10x / 100x faster
            g[f"{method}/analytic-head-lr{lr:g}"] = {"method": method, "head": "analytic",
                                                     "head_lr": lr}
    for label, method, head, lr in (("inflora/analytic-head-lr0.1", "inflora", "analytic", 0.1),
                                    ("inflora/analytic-head-lr0.2", "inflora", "analytic", 0.2),
                                    ("plate/analytic-head-lr0.2", "plate", "analytic", 0.2),
                                    ("inflora/aligned-head-lr0.05", "inflora", "aligned", 5e-2),
                                    ("plate/aligned-head-lr0.05", "plate", "aligned", 5e-2)):
        g[label] = {"method": method, "head": head, "head_lr": lr}
    # the backbone at half its learning rate, the classifier fast (run on the CPU)
    g["inflora/analytic-lr0.00025-head-lr0.05"] = {"method": "inflora", "head": "analytic",
                                                   "lr": 2.5e-4, "head_lr": 5e-2}
    paper = {"w_reg": 1e-3}  # NTK-CL's rows: the paper's pull (its default until issue 40)
    for head in STAT_HEADS:  # NTK-CL: the intended loss forms, then the authors' code's
        g[f"ntk-cl/{head}"] = {"method": "ntk-cl", "head": head, "method_options": paper}
        g[f"ntk-cl/{head}-official"] = {"method": "ntk-cl", "head": head,
                                        "method_options": {**paper, "official_losses": True}}
    g["ntk-cl/prototypes-head-lr0.05"] = {"method": "ntk-cl", "head": "prototypes",
                                          "head_lr": 5e-2, "method_options": paper}
    for head in ("prototypes", "analytic"):  # the fusion a plain mean, the classifier fast
        g[f"ntk-cl/{head}-mean"] = {"method": "ntk-cl", "head": head, "head_lr": 5e-2,
                                    "method_options": {**paper, "fusion": "mean"}}
    every = {"select": "all"}  # growth's classification default until issue 40
    for head in ALL_HEADS:  # growth: every block's MLP, then a third chosen by gradient
        g[f"grow/{head}"] = {"method": "grow", "head": head, "method_options": every}
    g["grow/analytic-gradient-third"] = {"method": "grow", "head": "analytic",
                                         "method_options": {"select": "gradient"}}
    for w in (0.1, 1.0):  # a stronger pull towards where each task started
        for head in STAT_HEADS:
            g[f"ntk-cl/{head}-wreg{w:g}"] = {"method": "ntk-cl", "head": head,
                                             "method_options": {"w_reg": w}}
    g["ntk-cl/prototypes-bypassed"] = {"method": "ntk-cl", "head": "prototypes",
                                       "method_options": {**paper,
                                                          "retention_view": "bypassed"}}
    return g


def refit_accuracy(cfg, method) -> float:
    """Final class-incremental accuracy of the run's head scheme rebuilt on the final backbone
    from every task's training data (no training involved: prototypes and analytic)."""
    from accelerate import Accelerator

    from retain.loop import Engine

    plan = cfg.plan()
    cfg = plan.config
    stream = plan.build_stream(method.backbone)
    acc = Accelerator(cpu=cfg.cpu)
    method.head = plan.head.build(method.feature_width, stream.num_classes).to(acc.device)
    engine = Engine(cfg, stream, method.backbone, method, acc, progress=False)
    for task in stream.tasks:
        engine.boundary(lambda t, b: method.head.absorb(t, b, method.features), task)
    matrix = engine.evaluate(stream.tasks)["matrix"]
    return sum(matrix) / len(matrix)


def run_one(label: str, fields: dict, profile: str, seed: int, refit: bool = True,
            tag: str = "") -> dict:
    from retain import RunConfig
    from retain.engine import train_stream

    out = Path("runs/heads") / (profile + (f"-{tag}" if tag else "")) / label.replace("/", "--")
    done = out / "row.json"
    if done.is_file():
        return json.loads(done.read_text())
    cfg = RunConfig(profile=profile, seed=seed, out=str(out), **fields)
    start = time.perf_counter()
    results, method = train_stream(cfg, resume=(out / "checkpoint").is_dir(), progress=False)
    row = run_row(label, results, first_task_accuracy=[r[0] for r in results["matrix"]],
                  task_incremental_first_task_accuracy=[
                      r[0] for r in results["task_incremental_matrix"]],
                  run_seconds=time.perf_counter() - start)
    if results["head"] == "analytic":
        row["lambdas"] = [c["lambda"] for c in method.head.choices]
    moving = results["cost"]["trainable_parameters"] > 0 and results["method"] != "joint"
    if results["head"] in ("prototypes", "analytic") and moving and refit:
        row["refit_final_accuracy"] = refit_accuracy(cfg, method)
    row = stamp(row)  # this invocation's command and commit, kept when --collect gathers it
    done.write_text(json.dumps(row, indent=1))
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="quick")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", default="", help="comma-separated labels (default: all)")
    p.add_argument("--worker", default="0/1", help="I/N: run every N-th label from the I-th")
    p.add_argument("--collect", action="store_true", help="only gather finished rows")
    p.add_argument("--list", action="store_true", help="print the labels")
    p.add_argument("--markdown", action="store_true", help="print the saved rows as a table")
    p.add_argument("--tag", default="", help="keep these runs and rows apart (e.g. cpu)")
    p.add_argument("--no-refit", action="store_true", help="skip the refit accuracy")
    args = p.parse_args()
    name = args.profile + (f"-{args.tag}" if args.tag else "")
    labels = [x for x in args.only.split(",") if x] or list(grid())
    if args.list:
        print("\n".join(labels))
        return
    if args.markdown:
        print(classification_table(load_rows(f"heads_{name}.json")))
        return
    if not args.collect:
        i, n = map(int, args.worker.split("/"))
        for label in labels[i::n]:
            try:
                row = run_one(label, grid()[label], args.profile, args.seed, not args.no_refit,
                              args.tag)
            except Exception as e:  # noqa: BLE001  (one failed run must not stop the others)
                print(json.dumps({"label": label, "error": repr(e)}), flush=True)
                continue
            print(json.dumps({k: row.get(k) for k in ("label", "final_accuracy",
                                                      "refit_final_accuracy", "run_seconds")}),
                  flush=True)
    # rows saved earlier stay (their run folders may be gone); finished runs replace them
    finished = [Path("runs/heads") / name / label.replace("/", "--") / "row.json"
                for label in grid()]
    rows = [json.loads(path.read_text()) for path in finished if path.is_file()]
    save_table(f"heads_{name}.json", rows, order=list(grid()))


if __name__ == "__main__":
    main()
