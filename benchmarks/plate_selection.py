"""Time to compute PLATE's B and Q for every targeted layer of a backbone, how closely the
anchored neuron ranking (used above ``exact_limit`` rows) agrees with the exact one, and what the
authors' selection (``selection=official``) picks instead: its neurons' overlap with the exact
ones, its k and its leak ``||W_f Q||^2 / ||W_f||^2``.

    python benchmarks/plate_selection.py --r 32 --tau 0.9

Saves ``benchmarks/results/plate_selection_<backbone>.json``."""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from driver import save
from peft import get_peft_model
from torch import nn

from retain.backbones import load_backbone
from retain.methods.plate import PlateConfig, PlateLinear
from retain.methods.plate.selection import (
    frozen_rows,
    official_neurons,
    official_subspace,
    protected_subspace,
    select_neurons,
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="minilm")
    p.add_argument("--r", type=int, default=32)
    p.add_argument("--tau", type=float, default=0.9)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_grad_enabled(False)
    backbone = load_backbone(args.backbone)
    model = backbone.model
    layers = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    per_layer = {}
    for name, layer in layers.items():
        w = layer.weight
        t0 = time.perf_counter()
        index = select_neurons(w, args.r)
        t1 = time.perf_counter()
        sub = protected_subspace(frozen_rows(w, index), args.tau, 512)
        t2 = time.perf_counter()
        picked = set(index.tolist())
        overlap = {a: len(picked & set(select_neurons(w, args.r, exact_limit=0, anchors=a)
                                       .tolist())) / len(index) for a in (256, 1024)}
        t3 = time.perf_counter()
        theirs = official_neurons(w, args.r)
        official = official_subspace(frozen_rows(w, theirs), args.tau, 512)
        per_layer[name] = {"shape": list(w.shape), "b_seconds": t1 - t0, "q_seconds": t2 - t1,
                           "k": sub.basis.shape[1], "leak": sub.leak,
                           "anchored_overlap": overlap,
                           "official": {"seconds": time.perf_counter() - t3,
                                        "k": official.basis.shape[1], "leak": official.leak,
                                        "overlap_with_exact": len(picked & set(theirs.tolist()))
                                        / len(index)}}
    totals = []
    for _ in range(args.repeats):  # the whole injection, as get_peft_model does it
        t0 = time.perf_counter()
        wrapped = get_peft_model(model, PlateConfig(r=args.r, tau=args.tau,
                                                    target_modules="all-linear"))
        totals.append(time.perf_counter() - t0)
        count = sum(1 for m in wrapped.modules() if isinstance(m, PlateLinear))
        model = wrapped.unload()
    big = [v for v in per_layer.values() if v["shape"][0] > 1024]  # more rows than anchors
    report = {"backbone": args.backbone, "r": args.r, "tau": args.tau, "layers": count,
              "get_peft_model_seconds_median": statistics.median(totals),
              "b_seconds_total": sum(v["b_seconds"] for v in per_layer.values()),
              "q_seconds_total": sum(v["q_seconds"] for v in per_layer.values()),
              "anchored_overlap_256_mean_all_layers": statistics.mean(
                  v["anchored_overlap"][256] for v in per_layer.values()),
              "anchored_overlap_1024_mean_layers_over_1024_rows": statistics.mean(
                  v["anchored_overlap"][1024] for v in big),
              "anchored_overlap_1024_min_layers_over_1024_rows": min(
                  v["anchored_overlap"][1024] for v in big),
              "official_by_layer_kind": _by_kind(per_layer),
              "torch_threads": torch.get_num_threads(),
              "per_layer": per_layer}
    print(json.dumps({k: v for k, v in report.items() if k != "per_layer"}, indent=1))
    save(f"plate_selection_{args.backbone}.json", report)


def _by_kind(per_layer: dict) -> dict:
    """Means over the layers of each kind (the name after the block index)."""
    kinds: dict[str, list[dict]] = {}
    for name, v in per_layer.items():
        kinds.setdefault(name.split(".", 3)[-1], []).append(v)
    return {kind: {"exact_k": statistics.mean(v["k"] for v in vs),
                   "exact_leak": statistics.mean(v["leak"] for v in vs),
                   "official_k": statistics.mean(v["official"]["k"] for v in vs),
                   "official_leak": statistics.mean(v["official"]["leak"] for v in vs),
                   "neuron_overlap": statistics.mean(v["official"]["overlap_with_exact"]
                                                     for v in vs)}
            for kind, vs in kinds.items()}


if __name__ == "__main__":
    main()
