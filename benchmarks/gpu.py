"""Everything retain measures on a GPU, in one script that fits a lent GPU's few minutes (JSON
under one folder, and a summary).

    python benchmarks/gpu.py --out gpu-results            # on the GPU machine, about 8 minutes
    python benchmarks/gpu.py --out /tmp/g --quick          # the same parts, tiny, on any machine

Parts, each in its own process with its own time limit, in this order (a part that fails or runs
out of time is recorded as such and the next one runs):

1. every method's smoke run in bf16 on CUDA (wordnet45 smoke; the language-model methods also
   on lm3 smoke): final score, trainable numbers, wall seconds, peak memory;
2. the peer comparison (``benchmarks/peer.py``: retain against the plain transformers + peft
   loop, seq-lora and seq-ft on MiniLM and SmolLM2) in bf16;
3. tokens per second and peak memory of ``seq-ft``, ``seq-lora``, ``plate``, ``inflora`` and
   ``grow`` on SmolLM2 at lmfar's batch (8 x 64 tokens), 20 steps of lmfar's first task;
4. the analytic head's share of a run at the task boundaries (``frozen-ncm`` with the analytic
   head on wordnet45 quick).

Each part writes ``OUT/<part>.json``; ``OUT/summary.json`` gathers them with the device's name.
``--quick`` shrinks every part (tiny backbones, a few steps) to check the script on a CPU.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
# part -> seconds it may take on one GPU (the sum stays under 8 minutes)
LIMITS = {"smoke": 150, "peer": 120, "throughput": 120, "analytic": 60}

SMOKE = """
import json, sys, tempfile, time
from retain import RunConfig
from retain.catalogue import METHODS
from retain.engine import run
quick, precision = sys.argv[1] == "1", sys.argv[2]
rows = []
for name, info in METHODS.items():
    for bench in ["wordnet45"] + (["lm3"] if "lm" in info.kinds else []):
        extra = {"backbone": "tiny-bert" if bench == "wordnet45" else "tiny-llama"} if quick else {}
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            try:
                res = run(RunConfig(method=name, benchmark=bench, profile="smoke",
                                    mixed_precision=precision, retention=False, out=out, **extra),
                          progress=False)
                score = res["score"]["name"]
                rows.append({"method": name, "benchmark": bench,
                             "final": res["metrics"][f"final_{score}"], "score": score,
                             "trainable_parameters": res["cost"]["trainable_parameters"],
                             "peak_memory_mb": res["cost"]["peak_memory_mb"],
                             "wall_seconds": time.perf_counter() - t0,
                             "device": res["cost"]["device"]})
            except Exception as e:  # noqa: BLE001
                rows.append({"method": name, "benchmark": bench, "error": repr(e)[:300]})
        print(json.dumps(rows[-1]), flush=True)
json.dump(rows, open(sys.argv[3], "w"), indent=1)
"""

THROUGHPUT = """
import json, sys, tempfile, time
import torch
from retain import RunConfig
from retain.engine import prepared_engine
from retain.loop import Record
quick, precision = sys.argv[1] == "1", sys.argv[2]
rows = []
for name in ("seq-ft", "seq-lora", "plate", "inflora", "grow"):
    with tempfile.TemporaryDirectory() as out:
        try:
            engine = prepared_engine(RunConfig(
                method=name, benchmark="lm3" if quick else "lmfar",
                profile="smoke" if quick else "quick", steps=3 if quick else 20,
                mixed_precision=precision, retention=False, inference_rounds=0, out=out))
            cfg, acc, task = engine.cfg, engine.acc, engine.stream.tasks[0]
            engine.boundary(engine.method.begin_task, task)
            if acc.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(acc.device)
            record = Record()
            engine.train(task, [task.train], record)
            steps = sorted(record.step_seconds[2:] or record.step_seconds)
            median = steps[len(steps) // 2]
            tokens = cfg.batch_size * cfg.max_length
            rows.append({"method": name, "median_step_seconds": median,
                         "tokens_per_second": tokens / median, "steps": len(record.step_seconds),
                         "trainable_parameters": record.trainable_parameters,
                         "peak_memory_mb": (torch.cuda.max_memory_allocated(acc.device) / 2**20
                                            if acc.device.type == "cuda" else None),
                         "device": str(acc.device)})
        except Exception as e:  # noqa: BLE001
            rows.append({"method": name, "error": repr(e)[:300]})
    print(json.dumps(rows[-1]), flush=True)
json.dump(rows, open(sys.argv[3], "w"), indent=1)
"""

ANALYTIC = """
import json, sys, tempfile
from retain import RunConfig
from retain.engine import run
quick, precision = sys.argv[1] == "1", sys.argv[2]
with tempfile.TemporaryDirectory() as out:
    res = run(RunConfig(method="frozen-ncm", head="analytic", benchmark="wordnet45",
                        profile="smoke" if quick else "quick", mixed_precision=precision,
                        retention=False, inference_rounds=0, out=out,
                        **({"backbone": "tiny-bert"} if quick else {})), progress=False)
c = res["cost"]
row = {"final_accuracy": res["metrics"]["final_accuracy"], "head_seconds": c["head_seconds"],
       "boundary_seconds": c["boundary_seconds"], "train_seconds": c["train_seconds"],
       "wall_seconds": c["wall_seconds"], "boundary_share": c["boundary_share"],
       "head_share_of_wall": c["head_seconds"] / c["wall_seconds"], "device": c["device"]}
print(json.dumps(row), flush=True)
json.dump(row, open(sys.argv[3], "w"), indent=1)
"""


def part(name: str, out: Path, quick: bool, precision: str) -> dict:
    dest = out / f"{name}.json"
    if name == "peer":
        cmd = [sys.executable, str(ROOT / "peer.py"), "--mixed-precision", precision,
               "--steps", "2" if quick else "8", "--rounds", "1" if quick else "3",
               "--out", str(dest)] + (["--models", "minilm"] if quick else [])
    else:
        code = {"smoke": SMOKE, "throughput": THROUGHPUT, "analytic": ANALYTIC}[name]
        cmd = [sys.executable, "-c", code, "1" if quick else "0", precision, str(dest)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=LIMITS[name] * (
            4 if quick else 1))
        status = "done" if proc.returncode == 0 else f"failed ({proc.returncode})"
        tail = proc.stderr.strip().splitlines()[-3:] if proc.returncode else []
    except subprocess.TimeoutExpired:
        status, tail = f"out of time ({LIMITS[name]} s)", []
    seconds = time.perf_counter() - t0
    result = json.loads(dest.read_text()) if dest.is_file() else None
    print(f"{name}: {status} in {seconds:.0f} s", flush=True)
    return {"status": status, "seconds": seconds, "stderr_tail": tail, "result": result}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for the JSON files")
    p.add_argument("--quick", action="store_true", help="tiny sizes: check the script anywhere")
    p.add_argument("--mixed-precision", default="bf16", choices=("no", "bf16", "fp16"))
    p.add_argument("--parts", default=",".join(LIMITS))
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import torch

    summary = {"device": (torch.cuda.get_device_name(0) if torch.cuda.is_available()
                          else "cpu"), "precision": args.mixed_precision, "quick": args.quick,
               "parts": {}}
    for name in args.parts.split(","):
        summary["parts"][name] = part(name, out, args.quick, args.mixed_precision)
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v["status"] for k, v in summary["parts"].items()}))


if __name__ == "__main__":
    main()
