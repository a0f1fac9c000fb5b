"""The growth invariant on the real SmolLM2-135M in float32: next-token logits on lm3 test chunks
before and after growth (g = 2), cumulative: one block's MLP, then every block's, then every
block's again (as for a second task); the largest absolute difference against the largest logit
and the argmax agreement.

    python benchmarks/grow_identity.py          # -> benchmarks/results/grow_identity_smollm2.json
"""

from __future__ import annotations

import json
import time

import torch
from driver import save

from retain import RunConfig
from retain.backbones import load_backbone
from retain.methods.grow.layer import mlp_sites


def main() -> None:
    backbone = load_backbone("smollm2")
    plan = RunConfig(method="grow", benchmark="lm3", profile="quick").plan()
    stream = plan.build_stream(backbone)
    ids = torch.tensor([it["input_ids"] for task in stream.tasks for it in task.test.items[:4]])
    torch.set_grad_enabled(False)

    def logits() -> torch.Tensor:
        return backbone.model.eval()(input_ids=ids).logits

    before = logits()
    rows = []
    for label, blocks in (("block 15", [15]), ("then every block", None),
                          ("then every block again (a second task)", None)):
        sites = mlp_sites(backbone.model)
        start = time.perf_counter()
        for site in sites if blocks is None else [sites[i] for i in blocks]:
            site.grow(2)
        seconds = time.perf_counter() - start
        after = logits()
        diff = float((after - before).abs().max())
        rows.append({"grown": label, "max_abs_difference": diff,
                     "max_abs_logit": float(before.abs().max()),
                     "relative": diff / float(before.abs().max()),
                     "argmax_agreement": float((after.argmax(-1) == before.argmax(-1))
                                               .float().mean()),
                     "surgery_seconds": seconds,
                     "parameters": sum(p.numel() for p in backbone.model.parameters())})
        print(json.dumps(rows[-1]), flush=True)
    out = {"model": "smollm2", "dtype": "float32", "tokens": list(ids.shape), "rows": rows}
    save("grow_identity_smollm2.json", out)


if __name__ == "__main__":
    main()
