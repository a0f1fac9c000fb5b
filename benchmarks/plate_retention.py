"""PLATE's retention at seq-lora's plasticity: settings of the backbone and head learning rates and
of PLATE's knobs on one benchmark profile, beside seq-lora and a frozen backbone with a trained
linear head, saved as one table (JSON).

    python benchmarks/plate_retention.py --profile quick

Each run lives in ``runs/plate/<profile>/explore/<name>/``; a finished run of the same config is
read, not run again (``retain run ... --out`` that folder gives the same run). The rows go to
``benchmarks/results/plate_retention_<profile>.json`` and are printed. Run nothing beside it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from retain import RunConfig
from retain.engine import run_or_load
from retain.summary import summary_row

ROOT = Path(__file__).resolve().parent

# name: (method, head or None, lr or None, head_lr or None, method options)
SETTINGS: dict[str, tuple[str, str | None, float | None, float | None, dict]] = {
    "ncm-growing-headlr2e-3": ("frozen-ncm", "growing", 2e-3, None, {}),
    "seq-lora-headlr2e-3": ("seq-lora", None, None, 2e-3, {}),
    "r8-tau0.98-lr1e-4": ("plate", None, 1e-4, 5e-4, {"r": 8, "tau": 0.98}),
    "r8-tau0.98-lr1e-4-headlr2e-3": ("plate", None, 1e-4, 2e-3, {"r": 8, "tau": 0.98}),
    "r8-tau0.98-lr2e-5-headlr2e-3": ("plate", None, 2e-5, 2e-3, {"r": 8, "tau": 0.98}),
    "seq-lora-lr1e-4-headlr2e-3": ("seq-lora", None, 1e-4, 2e-3, {}),
    "r8-tau0.98-lr1e-5-headlr2e-3": ("plate", None, 1e-5, 2e-3, {"r": 8, "tau": 0.98}),
    "r32-tau0.9-maxrank32": ("plate", None, None, None, {"r": 32, "tau": 0.9, "max_rank": 32}),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="quick")
    p.add_argument("--only", default="", help="comma list of setting names (default: all)")
    args = p.parse_args()
    names = [n for n in args.only.split(",") if n] or list(SETTINGS)
    rows = []
    for name in names:
        method, head, lr, head_lr, options = SETTINGS[name]
        cfg = RunConfig(method=method, profile=args.profile, head=head, lr=lr, head_lr=head_lr,
                        method_options=dict(options),
                        out=str(Path("runs/plate") / args.profile / "explore" / name))
        results = run_or_load(cfg, progress=False)
        row = {"setting": name, "lr": results["config"]["lr"],
               "head_lr": results["config"]["head_lr"], **summary_row(results)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    dest = ROOT / "results" / f"plate_retention_{args.profile}.json"
    dest.write_text(json.dumps(rows, indent=1))
    print(f"saved {dest}")


if __name__ == "__main__":
    main()
