"""The untouched SmolLM2's Shakespeare perplexity on N chunks of 128 tokens from the
20,000th line on (the spec's independent figure is about 67 on 200 chunks).

    python benchmarks/smollm2_shakespeare.py --chunks 200

Saves ``benchmarks/results/smollm2_shakespeare_<chunks>.json``.
"""

from __future__ import annotations

import argparse
import json

import torch
from driver import save

from retain.backbones import load_backbone
from retain.retention import lm_retention, shakespeare_chunks


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chunks", type=int, default=200)
    args = p.parse_args()
    b = load_backbone("smollm2")
    b.model.eval()
    chunks = shakespeare_chunks(b.tokenizer, args.chunks)
    with torch.no_grad():
        out = lm_retention(b.token_logits, b.token_logits, {"shakespeare": chunks})
    result = {"chunks": args.chunks, "tokens_per_chunk": chunks.shape[1],
              "perplexity": out["shakespeare_perplexity"]["untouched"],
              "kl_self": out["kl_from_untouched"]["score"]}
    print(json.dumps(result))
    save(f"smollm2_shakespeare_{args.chunks}.json", result)


if __name__ == "__main__":
    main()
