"""How many of the frozen backbone's last hidden states the analytic head should read
(``--feature-layers K``, LayUP), chosen on held-out training items (JSON).

    python benchmarks/feature_layers.py --benchmark wordnet45
    python benchmarks/feature_layers.py --benchmark debian30 --ks 1,2,3,4,5
    python benchmarks/feature_layers.py --benchmark wordnet45 --ks 1,4,6 --widths 10000,inf

The benchmark's stream (quick profile, its class order) through the frozen backbone once, every
hidden state pooled and L2-normalised (``Backbone.features`` with every layer); for each K the
last K of them, the analytic head's random ReLU projection (seed 0; width M, below) and a ridge
regression on all training items of all tasks: on a frozen backbone that is the head after the
last task (its statistics are sums over tasks), with one lambda for the stream instead of one
per task. lambda and K are scored on every 5th training item (held out, the rest fitted); the
test figure (the mean over tasks of each task's accuracy, the stream's final accuracy) is
reported beside it and chooses nothing. Features are cached in ``runs/feature_layers/``, by
benchmark name only (the quick profile, MiniLM): delete the file after changing either. A frozen
backbone and one lambda for the whole stream: the head's own rule picks lambda per task, on the
task's held-out items (see docs/heads.md for what that does to the gain).

``--widths`` sets the projection's width M (default 5000, the head's); ``inf`` is the limit
M -> infinity, where ridge on ``ReLU(f R)`` becomes kernel ridge regression with the first-order
arc-cosine kernel (Cho and Saul, NeurIPS 2009: ``E[ReLU(w.x) ReLU(w.y)]`` over Gaussian ``w`` is
``|x| |y| (sin t + (pi - t) cos t) / (2 pi)``, t the angle between x and y), solved in its dual
form over the training items, its lambda per unit of width (M = 5000's grid over 5000). It
needs every training item's features at once, so it is no continual head: it says how much a
finite M leaves out of what this head's random features tend to as M grows. Rows
are merged by label into the saved file (``K=k`` for M = 5000, ``K=k M=m`` otherwise).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import torch
from driver import load_rows, save_table

from retain import RunConfig
from retain.backbones import load_backbone
from retain.data import build_stream

LAMBDAS = (10.0, 100.0, 1e3, 1e4, 1e5, 1e6)


def features(benchmark: str) -> dict:
    """Per split: every hidden state's pooled, normalised features, labels and task indices;
    ``hidden``: the width of one state."""
    cache = Path(f"runs/feature_layers/{benchmark}.pt")
    if cache.is_file():
        return torch.load(cache)
    plan = RunConfig(method="frozen-ncm", benchmark=benchmark, profile="quick").plan()
    cfg = plan.config
    probe = load_backbone(cfg.backbone, cfg.pooling)
    every = probe.model.config.num_hidden_layers + 1
    backbone = load_backbone(cfg.backbone, cfg.pooling, every)
    stream = build_stream(plan, backbone)
    backbone.model.eval()
    out = {}
    for split in ("train", "test"):
        feats, labels, tasks = [], [], []
        for t, task in enumerate(stream.tasks):
            part = getattr(task, split)
            for i in range(0, len(part.items), 64):
                batch = backbone.batch(part.items[i:i + 64], cfg.max_length)
                with torch.no_grad():
                    feats.append(backbone.features(batch))
            labels += [int(x) for x in part.labels]
            tasks += [t] * len(part.items)
        out[split] = (torch.cat(feats), torch.tensor(labels), torch.tensor(tasks))
    out["hidden"] = backbone.hidden_size
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, cache)
    return out


def arc_cosine(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The first-order arc-cosine kernel between the rows of ``x`` and ``y``, scaled so that
    ``M * arc_cosine`` is what ``ReLU(x R) ReLU(y R)^T`` tends to with M Gaussian columns."""
    nx, ny = x.norm(dim=1, keepdim=True), y.norm(dim=1, keepdim=True)
    cos = ((x @ y.T) / (nx * ny.T)).clamp(-1.0, 1.0)
    t = torch.arccos(cos)
    return nx * ny.T * (torch.sin(t) + (math.pi - t) * cos) / (2 * math.pi)


def ridge(y: torch.Tensor, held: torch.Tensor, lambdas, fit, apply):
    """Each lambda's held-out accuracy (fitted on the rest), and the best lambda's solution
    refitted on every row: ``fit(rows, lam)`` solves, ``apply(solution, rows)`` scores."""
    scores = {lam: (apply(fit(~held, lam), held).argmax(1) == y[held].argmax(1))
              .double().mean().item() for lam in lambdas}
    lam = max(scores, key=scores.get)
    return lam, scores[lam], fit(torch.ones_like(held), lam)


def score(data, k: int, width: int, projection: int | None = 5000) -> dict[str, Any]:
    """K hidden states through a ReLU projection of width ``projection`` (None: the limit) and
    ridge regression on every training item, lambda picked on every 5th."""
    (xtr, ytr, _), (xte, yte, tte) = data["train"], data["test"]
    a, b = xtr[:, -k * width:].double(), xte[:, -k * width:].double()
    y = torch.nn.functional.one_hot(ytr, int(ytr.max()) + 1).double()
    held = torch.arange(len(a)) % 5 == 0
    if projection is None:  # kernel ridge, lambda per unit of width: M = 5000's grid
        lambdas = [lam / 5000 for lam in LAMBDAS]

        def fit(rows, lam):
            kernel = arc_cosine(a[rows], a[rows])
            kernel.diagonal().add_(lam)
            return rows, torch.linalg.solve(kernel, y[rows])

        def apply(solution, rows):
            return arc_cosine(a[rows], a[solution[0]]) @ solution[1]

        lam, heldout, (rows, dual) = ridge(y, held, lambdas, fit, apply)
        pred = (arc_cosine(b, a[rows]) @ dual).argmax(1)
    else:
        rng = torch.Generator().manual_seed(0)
        r = torch.randn(a.shape[1], projection, generator=rng, dtype=torch.float64)
        a, b = torch.relu(a @ r), torch.relu(b @ r)
        eye = torch.eye(projection, dtype=torch.float64)

        def fit(rows, lam):
            return torch.linalg.solve(a[rows].T @ a[rows] + lam * eye, a[rows].T @ y[rows])

        lam, heldout, w = ridge(y, held, LAMBDAS, fit, lambda w, rows: a[rows] @ w)
        pred = (b @ w).argmax(1)
    per_task = [(pred[tte == t] == yte[tte == t]).double().mean().item()
                for t in range(int(tte.max()) + 1)]
    m = "inf" if projection is None else projection
    return {"label": f"K={k}" if m == 5000 else f"K={k} M={m}", "k": k, "projection": m,
            "lambda": lam, "heldout_accuracy": heldout,
            "test_final_accuracy": sum(per_task) / len(per_task)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--benchmark", default="wordnet45", choices=("wordnet45", "debian30"))
    p.add_argument("--ks", default="1,2,3,4,5")
    p.add_argument("--widths", default="5000",
                   help="comma-separated projection widths M; inf: the kernel limit")
    args = p.parse_args()
    data = features(args.benchmark)
    width = data["hidden"]
    rows = []
    for m in args.widths.split(","):
        for k in map(int, args.ks.split(",")):
            rows.append(score(data, k, width, None if m == "inf" else int(m)))
            print(rows[-1], flush=True)
    name = f"feature_layers_{args.benchmark}.json"
    merged = {r["label"]: r for r in [*load_rows(name), *rows]}  # what save_table will hold
    at_5000 = [r for r in merged.values() if r["projection"] == 5000]
    best = max(at_5000, key=lambda r: r["heldout_accuracy"]) if at_5000 else None
    order = sorted(merged, key=lambda x: (math.inf if merged[x]["projection"] == "inf"
                                          else merged[x]["projection"], merged[x]["k"]))
    save_table(name, rows, order=order, benchmark=args.benchmark,
               profile="quick", lambdas=LAMBDAS, chosen_k=best and best["k"])


if __name__ == "__main__":
    main()
