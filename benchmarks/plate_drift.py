"""Drift of held-out embeddings against tau, with no old data: a fresh PLATE adapter trains on
the first task of wordnet45 for a fixed number of steps; drift is 1 - mean cosine between the
untouched and adapted embeddings of 64 Shakespeare sentences.

    python benchmarks/plate_drift.py --r 8,32 --tau 0.5,0.7,0.8,0.9,0.95,0.98 --steps 40

Saves ``benchmarks/results/plate_drift.json``."""

from __future__ import annotations

import argparse

from driver import save

from retain import RunConfig
from retain.backbones import load_backbone
from retain.methods.plate import PlateConfig
from retain.methods.plate.drift import drift_after_training
from retain.retention import neutral_sentences


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--r", default="8,32")
    p.add_argument("--tau", default="0.5,0.7,0.8,0.9,0.95,0.98")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--profile", default="quick")
    args = p.parse_args()
    backbone = load_backbone("minilm")
    task = RunConfig(method="plate", profile=args.profile).plan().build_stream().tasks[0]
    texts, labels = [it["text"] for it in task.train.items], [int(y) for y in task.train.labels]
    rows = []
    for r in (int(x) for x in args.r.split(",")):
        for tau in (float(x) for x in args.tau.split(",")):
            drift = drift_after_training(backbone, PlateConfig(r=r, tau=tau,
                                                               target_modules="all-linear"),
                                         texts, labels, list(neutral_sentences()), args.steps,
                                         lr=args.lr)
            rows.append({"r": r, "tau": tau, "drift": drift})
            print(rows[-1], flush=True)
    report = {"steps": args.steps, "lr": args.lr, "batch_size": 16, "task": task.name,
              "points": rows}
    save("plate_drift.json", report)


if __name__ == "__main__":
    main()
