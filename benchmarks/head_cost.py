"""Where a run's time and checkpoint go, from finished runs (``retain run ... --out DIR``, one at
a time on a quiet machine): final score, the lambda choices of an analytic head, training,
boundary (passes, and the head's own statistics and solves), evaluation and wall seconds, the
boundary's share, and the checkpoint's bytes.

``python benchmarks/head_cost.py --tag NAME DIR[=NOTE] [DIR[=NOTE] ...]`` saves
``results/head_cost_<NAME>.json`` (one row per run folder, labelled by its method and head, with
its note: which code ran it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from driver import save


def row(directory: Path, note: str = "") -> dict:
    res = json.loads((directory / "results.json").read_text())
    state = json.loads((directory / "checkpoint" / "state.json").read_text())
    head = state["method_state"].get("head", {})
    c, score = res["cost"], res["score"]["name"]
    return {"label": f"{res['method']}/{res['head']}", "note": note, "stream": res["stream"],
            f"final_{score}": res["metrics"][f"final_{score}"],
            "lambdas": [ch["lambda"] for ch in head.get("choices", [])],
            **{k: c.get(k) for k in ("train_seconds", "boundary_seconds", "head_seconds",
                                     "eval_seconds", "wall_seconds", "boundary_share",
                                     "stored_parameters")},
            "checkpoint_bytes": sum(p.stat().st_size for p in
                                    (directory / "checkpoint").glob("*.safetensors"))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tag", required=True)
    p.add_argument("runs", nargs="+", help="run folders, each optionally =NOTE")
    args = p.parse_args()
    rows = [row(Path(d), note) for d, _, note in (r.partition("=") for r in args.runs)]
    for r in rows:
        print(json.dumps(r))
    save(f"head_cost_{args.tag}.json", {"rows": rows})


if __name__ == "__main__":
    main()
