"""A trained run reused: ``retain.load`` and one prediction, PLATE beside ``seq-lora``, on MiniLM
(wordnet45 smoke) and SmolLM2 (lm3 smoke with ``--backbone smollm2``), median of 3 fresh
processes each (JSON).

    python benchmarks/load_time.py

Each run is trained once into ``runs/load_time/<backbone>-<method>/`` (a finished run is read,
not run again); then three processes per run time, after their imports, ``retain.load(RUN)``
(the untouched backbone, the method rebuilt from the checkpoint: PLATE chooses no B and Q there,
issue 38) and ``predict`` of three rows. Saved to ``benchmarks/results/load_time.json``. One job
at a time: nothing else beside it.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

from driver import save

from retain import RunConfig
from retain.engine import run_or_load

RUNS = {  # label -> the run's fields
    "minilm-plate": dict(method="plate", benchmark="wordnet45"),
    "minilm-seq-lora": dict(method="seq-lora", benchmark="wordnet45"),
    "smollm2-plate": dict(method="plate", benchmark="lm3", backbone="smollm2"),
    "smollm2-seq-lora": dict(method="seq-lora", benchmark="lm3", backbone="smollm2"),
}
CHILD = ("import time, retain; t0 = time.perf_counter(); trained = retain.load({run!r}); "
         "t1 = time.perf_counter(); trained.predict({rows!r}); "
         "print(t1 - t0, time.perf_counter() - t1)")
ROWS = ["a dog barked at the moon", "the cello and the violin", "rain over the hills"]


def timed(run: str) -> tuple[float, float]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", CHILD.format(run=run, rows=ROWS)], check=True,
                         capture_output=True, text=True, env=env)
    load, predict = out.stdout.strip().splitlines()[-1].split()
    return float(load), float(predict)


def main() -> None:
    result = {}
    for label, fields in RUNS.items():
        out = f"runs/load_time/{label}"
        run_or_load(RunConfig(profile="smoke", retention=False, inference_rounds=0, out=out,
                              **fields), progress=False)
        times = [timed(out) for _ in range(3)]
        result[label] = {"load_seconds": [t[0] for t in times],
                         "predict_seconds": [t[1] for t in times],
                         "median_load_seconds": statistics.median(t[0] for t in times),
                         "median_predict_seconds": statistics.median(t[1] for t in times)}
        print(label, json.dumps(result[label]), flush=True)
    for backbone in ("minilm", "smollm2"):
        result[f"{backbone}_plate_over_seq_lora"] = (
            result[f"{backbone}-plate"]["median_load_seconds"]
            / result[f"{backbone}-seq-lora"]["median_load_seconds"])
    result["note"] = ("seconds inside a fresh process after `import retain`: retain.load(RUN) "
                      "(load_seconds), then predict of three rows (predict_seconds)")
    save("load_time.json", result)


if __name__ == "__main__":
    main()
