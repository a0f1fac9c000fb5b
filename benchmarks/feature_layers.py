"""How many of the frozen backbone's last hidden states the analytic head should read
(``--feature-layers K``, LayUP), chosen on held-out training items (JSON).

    python benchmarks/feature_layers.py --benchmark wordnet45
    python benchmarks/feature_layers.py --benchmark debian30 --ks 1,2,3,4,5

The benchmark's stream (quick profile, its class order) through the frozen backbone once, every
hidden state pooled and L2-normalised (``Backbone.features`` with every layer); for each K the
last K of them, the analytic head's random ReLU projection (M = 5000, seed 0) and a ridge
regression on all training items of all tasks: on a frozen backbone that is the head after the
last task (its statistics are sums over tasks), with one lambda for the stream instead of one
per task. lambda and K are scored on every 5th training item (held out, the rest fitted); the
test figure (the mean over tasks of each task's accuracy, the stream's final accuracy) is
reported beside it and chooses nothing. Features are cached in ``runs/feature_layers/``, by
benchmark name only (the quick profile, MiniLM): delete the file after changing either. A frozen
backbone and one lambda for the whole stream: the head's own rule picks lambda per task, on the
task's held-out items (see docs/heads.md for what that does to the gain).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from driver import save

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


def score(data, k: int, width: int, projection: int = 5000) -> dict[str, float]:
    (xtr, ytr, _), (xte, yte, tte) = data["train"], data["test"]
    a, b = xtr[:, -k * width:].double(), xte[:, -k * width:].double()
    rng = torch.Generator().manual_seed(0)
    r = torch.randn(a.shape[1], projection, generator=rng, dtype=torch.float64)
    a, b = torch.relu(a @ r), torch.relu(b @ r)
    y = torch.nn.functional.one_hot(ytr, int(ytr.max()) + 1).double()
    held = torch.arange(len(a)) % 5 == 0
    eye = torch.eye(projection, dtype=torch.float64)
    gram, target = a[~held].T @ a[~held], a[~held].T @ y[~held]
    scores = {}
    for lam in LAMBDAS:
        w = torch.linalg.solve(gram + lam * eye, target)
        scores[lam] = ((a[held] @ w).argmax(1) == ytr[held]).double().mean().item()
    lam = max(scores, key=scores.get)
    w = torch.linalg.solve(a.T @ a + lam * eye, a.T @ y)
    pred = (b @ w).argmax(1)
    per_task = [(pred[tte == t] == yte[tte == t]).double().mean().item()
                for t in range(int(tte.max()) + 1)]
    return {"label": f"K={k}", "k": k, "lambda": lam, "heldout_accuracy": scores[lam],
            "test_final_accuracy": sum(per_task) / len(per_task)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--benchmark", default="wordnet45", choices=("wordnet45", "debian30"))
    p.add_argument("--ks", default="1,2,3,4,5")
    args = p.parse_args()
    data = features(args.benchmark)
    width = data["hidden"]
    rows = []
    for k in map(int, args.ks.split(",")):
        rows.append(score(data, k, width))
        print(rows[-1], flush=True)
    best = max(rows, key=lambda r: r["heldout_accuracy"])
    save(f"feature_layers_{args.benchmark}.json", {
        "benchmark": args.benchmark, "profile": "quick", "projection": 5000,
        "lambdas": LAMBDAS, "rows": rows, "chosen_k": best["k"]})


if __name__ == "__main__":
    main()
