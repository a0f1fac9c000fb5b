"""Kill a run after task K (SIGKILL, like a crash), resume it, compare with an uninterrupted run.

    python benchmarks/resume.py --reference runs/baselines/quick/seq-lora/results.json \
        --kill-after 3 --out runs/resume/seq-lora

The resumed run uses the reference's resolved config (method, profile, seed, options). Saves
``benchmarks/results/resume_<method>.json`` with both accuracy matrices and whether they are equal.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from driver import save


def cli_args(config: dict) -> list[str]:
    args = ["--method", config["method"], "--profile", config["profile"], "--seed",
            str(config["seed"]), "--scenario", config["scenario"]]
    args += ["--data", config["data"]] if config["data"] else ["--benchmark", config["benchmark"]]
    for key, value in config["method_options"].items():
        value = ",".join(map(str, value)) if isinstance(value, list) else value
        args += ["--set", f"{key}={value}"]
    return args


def tasks_done(out: Path) -> int:
    try:
        return json.loads((out / "checkpoint" / "state.json").read_text())["tasks_done"]
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reference", required=True, help="results.json of an uninterrupted run")
    p.add_argument("--kill-after", type=int, default=3)
    p.add_argument("--out", default="runs/resume")
    args = p.parse_args()
    ref = json.loads(Path(args.reference).read_text())
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "retain.cli", "run", *cli_args(ref["config"]), "--quiet",
           "--out", str(out)]
    proc = subprocess.Popen(cmd, start_new_session=True)
    while tasks_done(out) < args.kill_after:
        if proc.poll() is not None:
            sys.exit(f"the run ended before task {args.kill_after}: {proc.returncode}")
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = tasks_done(out)
    print(f"killed after task {killed_at}", flush=True)
    subprocess.run([*cmd, "--resume"], check=True)
    res = json.loads((out / "results.json").read_text())
    report = {"method": ref["method"], "killed_after_task": killed_at,
              "equal": res["matrix"] == ref["matrix"],
              "resumed_accuracy_matrix": res["matrix"],
              "reference_accuracy_matrix": ref["matrix"]}
    print(f"accuracy matrices equal: {report['equal']}")
    save(f"resume_{ref['method']}.json", report)


if __name__ == "__main__":
    main()
