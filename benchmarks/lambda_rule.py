"""How the analytic head's rule for lambda decides its final accuracy on a frozen backbone
(issue 40), per rule of ``select`` and, for comparison, each lambda of the grid held for the
whole stream (JSON).

    python benchmarks/lambda_rule.py --benchmark wordnet45 --ks 1,4
    python benchmarks/lambda_rule.py --benchmark debian30 --ks 4
    python benchmarks/lambda_rule.py --benchmark wordnet45 --selects pooled --no-fixed  # merged

The benchmark's quick stream through the frozen backbone once (the features cached by
``feature_layers.py``: every hidden state pooled and L2-normalised, so K = 1 here is the
normalised last state, where a run's K = 1 reads it unnormalised), then the real
``AnalyticHead`` (M 5000, its default grid) fed task by task as a run feeds it. Every 10th
training item of a task (by position) is a validation item, never fed to the head (as
``--validation 0.1`` keeps one); of the rest, the head holds out every 5th to pick lambda. On a
frozen backbone the head after the last task is ridge regression on every item fed with the
last task's lambda, so the final accuracy (mean over tasks of each task's accuracy) depends on
the rule only through that last pick; the "fixed" rows give it for every lambda of the grid,
the ceiling of any rule. A rule is chosen on the validation figure; the test figure is
reported beside it.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from driver import save_table
from feature_layers import features

from retain.data.stream import Split, Task
from retain.methods.heads.analytic import SELECT, AnalyticConfig, AnalyticHead


def run_rule(data, k: int, select: str, lambdas: list[float] | None = None) -> dict:
    (xtr, ytr, ttr), (xte, yte, tte) = data["train"], data["test"]
    width = data["hidden"]
    xtr, xte = xtr[:, -k * width:].float(), xte[:, -k * width:].float()
    options = {"select": select} | ({"lambdas": lambdas} if lambdas else {})
    config = AnalyticConfig(**options)
    head = AnalyticHead(xtr.shape[1], int(max(ytr.max(), yte.max())) + 1, config)
    tasks = int(ttr.max()) + 1
    valid = torch.zeros(len(ytr), dtype=torch.bool)
    for t in range(tasks):
        rows = ttr == t
        x, y = xtr[rows], ytr[rows]
        kept = torch.arange(len(y)) % 10 != 9
        valid[rows.nonzero().squeeze(1)[~kept]] = True
        x, y = x[kept], y[kept]
        task = Task(t, sorted({int(c) for c in y}), Split([], np.zeros(0, int)),
                    Split([], np.zeros(0, int)))
        batches = [{"x": x[i:i + 256], "labels": y[i:i + 256],
                    "index": torch.arange(i, min(i + 256, len(x)))}
                   for i in range(0, len(x), 256)]
        head.begin_task(task)
        head.end_task(task, lambda b=batches: b, lambda b: b["x"])

    def final(x, y, t_of):
        with torch.no_grad():
            pred = head.logits(x).argmax(-1)
        return sum(float((pred[t_of == t] == y[t_of == t]).double().mean())
                   for t in range(tasks)) / tasks

    return {"select": select, "picks": [c["lambda"] for c in head.choices],
            "validation_final_accuracy": final(xtr[valid], ytr[valid], ttr[valid]),
            "final_accuracy": final(xte, yte, tte)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--benchmark", default="wordnet45", choices=("wordnet45", "debian30"))
    p.add_argument("--ks", default="1,4")
    p.add_argument("--selects", default=",".join(SELECT), help="rules of select to run")
    p.add_argument("--no-fixed", action="store_true", help="no row per lambda of the grid")
    args = p.parse_args()
    data = features(args.benchmark)
    grid = AnalyticConfig().lambdas
    rows = []
    for k in map(int, args.ks.split(",")):
        for select in args.selects.split(","):
            rows.append({"label": f"K={k} {select}", "k": k, **run_rule(data, k, select)})
            print(rows[-1], flush=True)
        for lam in [] if args.no_fixed else grid:
            rows.append({"label": f"K={k} fixed {lam:g}", "k": k,
                         **run_rule(data, k, "accuracy", [lam])})
            print(rows[-1], flush=True)
    save_table(f"lambda_rule_{args.benchmark}.json", rows, benchmark=args.benchmark,
               profile="quick", projection=5000, lambdas=grid)


if __name__ == "__main__":
    main()
