"""Time of Share's basis update (``consolidate``: the SVDs and the re-projection) on a backbone,
task after task, with random factors standing in for training.

    python benchmarks/share_update.py --backbone minilm --tasks 9

Saves ``benchmarks/results/share_update_<backbone>.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from peft import get_peft_model

from retain.backbones import load_backbone
from retain.methods.baselines import peft_targets
from retain.methods.share import ShareConfig, ShareLinear

ROOT = Path(__file__).resolve().parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="minilm")
    p.add_argument("--tasks", type=int, default=9)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--p", type=int, default=8)
    args = p.parse_args()
    model = load_backbone(args.backbone).model
    targets = peft_targets(["query", "value"], model)
    model = get_peft_model(model, ShareConfig(k=args.k, p=args.p, target_modules=targets))
    layers = [m for m in model.modules() if isinstance(m, ShareLinear)]
    g = torch.Generator().manual_seed(0)
    seconds = []
    for _ in range(args.tasks):
        with torch.no_grad():
            for layer in layers:
                for store in (layer.share_Va, layer.share_Vb, layer.share_Ea, layer.share_Eb):
                    t = store["default"]
                    t.copy_(0.01 * torch.randn(t.shape, generator=g))
        start = time.perf_counter()
        model.base_model.consolidate()
        seconds.append(time.perf_counter() - start)
    report = {"backbone": args.backbone, "layers": len(layers), "k": args.k, "p": args.p,
              "consolidate_seconds": seconds, "total_seconds": sum(seconds),
              "torch_threads": torch.get_num_threads()}
    dest = ROOT / "results" / f"share_update_{args.backbone}.json"
    dest.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
