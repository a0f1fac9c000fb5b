"""Named settings (method, head, learning rates, method options) run one after another on one
benchmark profile and saved as one table (JSON); the scripts beside this one name the settings.

Each run lives in ``runs/<folder>/<name>/`` (``{profile}`` in the folder is the profile); a
finished run of the same config is read, not run again (``retain run ... --out`` that folder
gives the same run). The rows go to ``benchmarks/results/<tag>_<profile>.json`` and are printed.
Run nothing beside it: timings taken next to another job are worthless on 2 cores.
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
Settings = dict[str, tuple[str, str | None, float | None, float | None, dict]]


def main(settings: Settings, folder: str, tag: str, description: str) -> None:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--profile", default="quick")
    p.add_argument("--only", default="", help="comma list of setting names (default: all)")
    args = p.parse_args()
    names = [n for n in args.only.split(",") if n] or list(settings)
    dest = ROOT / "results" / f"{tag}_{args.profile}.json"
    rows = {r["setting"]: r for r in json.loads(dest.read_text())} if dest.is_file() else {}
    for name in names:
        method, head, lr, head_lr, options = settings[name]
        cfg = RunConfig(method=method, profile=args.profile, head=head, lr=lr, head_lr=head_lr,
                        method_options=dict(options),
                        out=str(Path("runs") / folder.format(profile=args.profile) / name))
        results = run_or_load(cfg, progress=False)
        rows[name] = {"setting": name, "lr": results["config"]["lr"],
                      "head_lr": results["config"]["head_lr"], **summary_row(results)}
        print(json.dumps(rows[name]), flush=True)
    dest.write_text(json.dumps(list(rows.values()), indent=1))
    print(f"saved {dest}")
