"""Score matrices, metrics and stored counts of a set of runs, saved to compare two commits.

``python benchmarks/identity.py save NAME`` runs every method on ``wordnet45 --profile smoke``
(and every language-model method on ``lm3 --profile smoke``; ``--quick`` adds ``frozen-ncm`` and
``inflora`` on ``wordnet45 --profile quick``) and writes ``/tmp/identity/NAME.json``;
``python benchmarks/identity.py compare A B`` says which numbers differ by more than 1e-6 and
saves both sets with the verdict as ``results/identity_A_B.json`` (over the runs both sets hold;
``save NAME --only KEY,KEY`` runs only those, e.g. ``inflora/wordnet45/quick``).
Used to show that a refactor keeps every number a user sees.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
from pathlib import Path

from driver import save as save_result

from retain import RunConfig
from retain.catalogue import METHODS
from retain.engine import run

OUT = Path("/tmp/identity")
KEYS = ("matrix", "task_incremental_matrix", "metrics", "task_incremental_metrics", "retention")


def runs(quick: bool) -> list[tuple[str, str, str]]:
    out = [(m, "wordnet45", "smoke") for m in METHODS]
    out += [(m, "lm3", "smoke") for m, info in METHODS.items() if "lm" in info.kinds]
    if quick:
        out += [("frozen-ncm", "wordnet45", "quick"), ("inflora", "wordnet45", "quick")]
    return out


def save(name: str, quick: bool, only: set[str] | None = None) -> None:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    rows = {}
    dest = OUT / f"{name}.json"
    if dest.is_file():
        rows = json.loads(dest.read_text())["runs"]
    for method, bench, profile in runs(quick):
        key = f"{method}/{bench}/{profile}"
        if key in rows or (only and key not in only):
            continue
        cfg = RunConfig(method=method, benchmark=bench, profile=profile,
                        out=str(OUT / name / key.replace("/", "_")))
        res = run(cfg, progress=False)
        rows[key] = {k: res.get(k) for k in KEYS}
        rows[key]["stored_parameters"] = res["cost"]["stored_parameters"]
        rows[key]["trainable_parameters"] = res["cost"]["trainable_parameters"]
        print(key, res["metrics"].get("final_" + res["score"]["name"]), flush=True)
        OUT.mkdir(parents=True, exist_ok=True)
        dest.write_text(json.dumps({"commit": commit, "runs": rows}, indent=1))


def differ(a, b, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b))
                for d in differ(a.get(k), b.get(k), f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: length {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True))
                for d in differ(x, y, f"{path}[{i}]")]
    if isinstance(a, float) and isinstance(b, float):
        if (math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-6:
            return []
        return [f"{path}: {a} != {b}"]
    return [] if a == b else [f"{path}: {a} != {b}"]


def compare(a: str, b: str) -> None:
    ra, rb = (json.loads((OUT / f"{n}.json").read_text()) for n in (a, b))
    both = sorted(set(ra["runs"]) & set(rb["runs"]))
    diffs = differ({k: ra["runs"][k] for k in both}, {k: rb["runs"][k] for k in both})
    verdict = "\n".join(diffs) if diffs else (
        f"identical to 1e-6: {len(both)} runs ({ra['commit']} -> {rb['commit']}): "
        + ", ".join(both))
    for side, mine, other in ((a, ra, rb), (b, rb, ra)):
        alone = sorted(set(mine["runs"]) - set(other["runs"]))
        verdict += f"; only in {side}, not compared: {', '.join(alone)}" if alone else ""
    print(verdict)
    save_result(f"identity_{a}_{b}.json", {"verdict": verdict, "differences": diffs,
                                            a: ra, b: rb})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("save")
    s.add_argument("name")
    s.add_argument("--quick", action="store_true")
    s.add_argument("--only", help="comma-separated run keys (method/benchmark/profile)")
    c = sub.add_parser("compare")
    c.add_argument("a")
    c.add_argument("b")
    args = p.parse_args()
    if args.cmd == "save":
        save(args.name, args.quick, set(args.only.split(",")) if args.only else None)
    else:
        compare(args.a, args.b)


if __name__ == "__main__":
    main()
