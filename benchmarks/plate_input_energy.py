"""How much of real inputs' energy lies in PLATE's protected subspace Q (computed from the
weights alone): for each targeted layer of MiniLM, sum ||Q^T x||^2 / sum ||x||^2 over the tokens
of held-out text. PLATE protects old behaviour well when this fraction is small.

    python benchmarks/plate_input_energy.py --r 32 --tau 0.8,0.9,0.98 [--max-rank 32]

Saves ``benchmarks/results/plate_input_energy.json`` (``..._max-rank<K>.json`` with a cap)."""

from __future__ import annotations

import argparse
import statistics

import torch
from driver import save
from peft import get_peft_model

from retain import RunConfig
from retain.backbones import load_backbone
from retain.methods.plate import PlateConfig, PlateLinear
from retain.retention import neutral_sentences


def energy_in_q(model, layers: dict, batch: dict) -> dict[str, float]:
    """Per layer, the share of its non-padding input tokens' energy inside its ``Q``."""
    sums = {n: [0.0, 0.0] for n in layers}
    mask = batch["attention_mask"].bool()

    def hook(name):
        def fn(module, inputs):
            x = inputs[0][mask]
            sums[name][0] += float((x @ module.plate_Q["default"]).pow(2).sum())
            sums[name][1] += float(x.pow(2).sum())
        return fn

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in layers.items()]
    try:
        model(**batch)
    finally:
        for h in handles:
            h.remove()
    return {n: s[0] / s[1] for n, s in sums.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--r", type=int, default=32)
    p.add_argument("--tau", default="0.8,0.9,0.98")
    p.add_argument("--max-rank", type=int, default=512, help="PLATE's cap on k (default 512)")
    args = p.parse_args()
    torch.set_grad_enabled(False)
    backbone = load_backbone("minilm")
    task = RunConfig(method="plate", profile="quick").plan().build_stream().tasks[0]
    samples = {"shakespeare": list(neutral_sentences()),
               "wordnet45 task 1": [it["text"] for it in task.train.items[:64]]}
    report = {"r": args.r, "max_rank": args.max_rank, "taus": {}}
    for tau in (float(t) for t in args.tau.split(",")):
        config = PlateConfig(r=args.r, tau=tau, max_rank=args.max_rank,
                             target_modules="all-linear")
        model = get_peft_model(backbone.model, config)
        layers = {n.removeprefix("base_model.model."): m for n, m in model.named_modules()
                  if isinstance(m, PlateLinear)}
        entry = {}
        for label, texts in samples.items():
            fractions = energy_in_q(model, layers, backbone.tokenize(texts, 64))
            entry[label] = {"mean": statistics.mean(fractions.values()), "per_layer": fractions}
        entry["k"] = {n: m.plate_Q["default"].shape[1] for n, m in layers.items()}
        report["taus"][str(tau)] = entry
        backbone.model = model.unload()
        mean_k = statistics.mean(entry["k"].values())
        print(tau, f"mean k {mean_k:.0f}",
              {k: round(v["mean"], 3) for k, v in entry.items() if k != "k"}, flush=True)
    suffix = "" if args.max_rank == 512 else f"_max-rank{args.max_rank}"
    save(f"plate_input_energy{suffix}.json", report)


if __name__ == "__main__":
    main()
