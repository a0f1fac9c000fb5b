"""Every method's smoke run timed as a whole process (``retain run ... --profile smoke``, a
fresh interpreter each time: imports, model loading, the stream, training, evaluation,
retention, the inference figure), the median of ``--repeats`` runs, one at a time. Run nothing
beside it: timings taken next to another job are worthless on 2 cores.

``python benchmarks/smoke_time.py [--benchmark wordnet45] [--repeats 3] [--methods all]``
saves ``results/smoke_time_<benchmark>.json`` (merged by method into what it holds): per
method the wall seconds of each run, their median, the final score and, from the last run's own
``results.json``, where the time went.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from driver import RESULTS, load, save, stamp

from retain.catalogue import METHODS


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--benchmark", default="wordnet45")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--methods", default="all")
    args = p.parse_args()
    kind = "lm" if args.benchmark == "lm3" else "classification"
    names = ([m for m, info in METHODS.items() if kind in info.kinds]
             if args.methods == "all" else args.methods.split(","))
    retain = str(Path(sys.executable).with_name("retain"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    rows = {}
    for name in names:
        seconds, results = [], None
        for _ in range(args.repeats):
            out = Path(tempfile.mkdtemp(prefix="smoke-"))
            start = time.perf_counter()
            subprocess.run([retain, "run", "--method", name, "--benchmark", args.benchmark,
                            "--profile", "smoke", "--quiet", "--out", str(out / "run")],
                           check=True, env=env, stdout=subprocess.DEVNULL)
            seconds.append(time.perf_counter() - start)
            results = json.loads((out / "run" / "results.json").read_text())
            shutil.rmtree(out)
        cost = results["cost"]
        score = results["score"]["name"]
        rows[name] = {"repeats": args.repeats, "seconds": seconds,
                      "median_seconds": statistics.median(seconds),
                      f"final_{score}": results["metrics"][f"final_{score}"],
                      **{k: cost.get(k) for k in (
                          "startup_seconds", "train_seconds", "boundary_seconds",
                          "head_seconds", "eval_seconds", "retention_seconds",
                          "wall_seconds")}}
        print(name, json.dumps(rows[name]), flush=True)
    name = f"smoke_time_{args.benchmark}.json"
    earlier = load(name) if (RESULTS / name).is_file() else None
    save(name, {"benchmark": args.benchmark, "repeats": args.repeats,
                "methods": merged(earlier, {m: stamp(r) for m, r in rows.items()})})


def merged(earlier: dict | None, rows: dict[str, dict]) -> dict[str, dict]:
    """The saved file's rows by method with this invocation's ``rows`` over them: a method run
    again replaces its row, the others stay, each keeping the command and commit that made it
    (a row saved without its own: the file's)."""
    kept = {} if earlier is None else {
        m: {"command": earlier["command"], "commit": earlier["commit"], **r}
        for m, r in earlier["methods"].items()}
    return kept | rows


if __name__ == "__main__":
    main()
