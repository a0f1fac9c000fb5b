"""Share's basis update (``consolidate``: the SVDs and the re-projection) on a backbone.

Time, task after task, with random factors standing in for training:

    python benchmarks/share_update.py --backbone minilm --tasks 9

saves ``benchmarks/results/share_update_<backbone>.json``. What the authors' update would drop,
on a real (short) run:

    python benchmarks/share_update.py --dropped --benchmark wordnet45 --profile quick --tasks 3

trains Share and, at each task's end, before the update, measures per adapted layer the part of
the trained update ``dW = s F_b F_a^T`` carried by the temporary directions, which the authors'
update discards (their new coefficients are the basis part alone, ``C^T recons``): with
``dW_U = s (U_b E_b[:k])(U_a E_a[:k])^T``, ``||dW - dW_U|| / ||dW||`` and, against what the task
changed, ``||dW - dW_U|| / ||dW - dW_start||``. Saves
``benchmarks/results/share_dropped_<benchmark>_<profile>.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from driver import save
from peft import get_peft_model

from retain import RunConfig
from retain.backbones import load_backbone
from retain.engine import train_stream
from retain.methods.peft_glue import peft_targets
from retain.methods.share import ShareConfig, ShareLinear, ShareModel


def timing(args: argparse.Namespace) -> dict:
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
    return {"backbone": args.backbone, "layers": len(layers), "k": args.k, "p": args.p,
            "consolidate_seconds": seconds, "total_seconds": sum(seconds),
            "torch_threads": torch.get_num_threads()}


@torch.no_grad()
def basis_part(layer: ShareLinear) -> torch.Tensor:
    """``s (U_b E_b[:k])(U_a E_a[:k])^T``: the current update without the temporaries."""
    u_a, u_b = layer.share_Ua["default"].double(), layer.share_Ub["default"].double()
    e_a = layer.share_Ea["default"][: u_a.shape[1]].double()
    e_b = layer.share_Eb["default"][: u_b.shape[1]].double()
    return layer.scale("default") * (u_b @ e_b) @ (u_a @ e_a).T


def dropped(args: argparse.Namespace) -> dict:
    cfg = RunConfig(method="share", benchmark=args.benchmark, profile=args.profile,
                    tasks=args.tasks, retention=False, out=args.out)
    starts: dict[str, torch.Tensor] = {}
    tasks: list[dict] = []
    seen: list[int] = []
    original = ShareModel.consolidate

    def measured(self: ShareModel, adapter_name: str = "default") -> None:
        of_update, of_change = [], []
        with torch.no_grad():
            for name, layer in self.share_layers().items():
                if layer.share_Ua["default"].shape[1] == 0:
                    break  # the first task: a plain LoRA, no basis and no temporaries
                dw = layer.get_delta_weight("default").double()
                lost = (dw - basis_part(layer)).norm()
                start = starts.get(name, torch.zeros_like(dw))
                of_update.append(float(lost / dw.norm()))
                of_change.append(float(lost / (dw - start).norm()))
        original(self, adapter_name)
        with torch.no_grad():
            for name, layer in self.share_layers().items():
                starts[name] = layer.get_delta_weight("default").double()
        seen.append(len(seen) + 1)
        if of_update:
            tasks.append({"task": seen[-1],
                          "of_update": {"median": statistics.median(of_update),
                                        "max": max(of_update)},
                          "of_task_change": {"median": statistics.median(of_change),
                                             "max": max(of_change)}})
            print(json.dumps(tasks[-1]), flush=True)

    ShareModel.consolidate = measured
    try:
        results, method = train_stream(cfg, progress=False)
    finally:
        ShareModel.consolidate = original
    return {"benchmark": args.benchmark, "profile": args.profile, "tasks": args.tasks,
            "layers": len(method.share_layers()),
            "final_accuracy": results["metrics"]["final_accuracy"],
            "dropped_by_the_authors_update": tasks}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="minilm")
    p.add_argument("--tasks", type=int, default=9)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--p", type=int, default=8)
    p.add_argument("--dropped", action="store_true",
                   help="train and measure what the authors' update drops (see above)")
    p.add_argument("--benchmark", default="wordnet45")
    p.add_argument("--profile", default="quick")
    p.add_argument("--out", default="/tmp/share_dropped")
    args = p.parse_args()
    if args.dropped:
        report = dropped(args)
        name = f"share_dropped_{args.benchmark}_{args.profile}.json"
    else:
        report = timing(args)
        name = f"share_update_{args.backbone}.json"
    print(json.dumps(report, indent=1))
    save(name, report)


if __name__ == "__main__":
    main()
