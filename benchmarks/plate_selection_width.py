"""PLATE's selection time against layer width, on random weights: ``B`` (neuron ranking) and ``Q``
(the protected subspace), by the full ``d_in x d_in`` decomposition and, where the null space
alone holds ``k`` directions, by the null-space path; with the leak ``||W_f Q||^2 / ||W_f||^2``.

    python benchmarks/plate_selection_width.py

Saves ``benchmarks/results/plate_selection_width.json``. Run nothing beside it."""

from __future__ import annotations

import argparse
import json
import time

import torch
from driver import save

from retain.methods.plate.selection import frozen_rows, protected_subspace, select_neurons

# (d_out, d_in): square layers, then a 7B model's MLP (up/gate: 4096 -> 11008, down: back)
SHAPES = [(1024, 1024), (2048, 2048), (4096, 4096), (11008, 4096), (4096, 11008)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--r", type=int, default=8)
    p.add_argument("--tau", type=float, default=0.9)
    p.add_argument("--max-rank", type=int, default=512)
    args = p.parse_args()
    torch.set_grad_enabled(False)
    rows = []
    for d_out, d_in in SHAPES:
        w = torch.randn(d_out, d_in, generator=torch.Generator().manual_seed(0)) / d_in**0.5
        t0 = time.perf_counter()
        index = select_neurons(w, args.r)
        b_seconds = time.perf_counter() - t0
        frozen = frozen_rows(w, index)
        row = {"shape": [d_out, d_in], "b_seconds": b_seconds}
        paths = {"full": True}
        if d_in - frozen.shape[0] >= args.max_rank:
            paths["null"] = False  # the default path takes the null space
        for path, full in paths.items():
            t0 = time.perf_counter()
            sub = protected_subspace(frozen, args.tau, args.max_rank, full=full)
            row[f"q_seconds_{path}"] = time.perf_counter() - t0
            row[f"leak_{path}"] = sub.leak
            row["k"] = sub.basis.shape[1]
        rows.append(row)
        print(json.dumps(row), flush=True)
    report = {"r": args.r, "tau": args.tau, "max_rank": args.max_rank,
              "torch_threads": torch.get_num_threads(), "rows": rows}
    save("plate_selection_width.json", report)


if __name__ == "__main__":
    main()
