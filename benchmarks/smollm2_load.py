"""``smollm2`` load time from the cache: median of 3 fresh processes (JSON).

    python benchmarks/smollm2_load.py

A first process loads into an empty temporary cache (``RETAIN_CACHE``): the one-off
dequantisation from GGUF; then three processes load from that cache. Saved to
``benchmarks/results/smollm2_load.json``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile

from driver import save

CHILD = ("import time; t0 = time.perf_counter(); from retain.backbones import load_backbone; "
         "import transformers, transformers.models.llama.modeling_llama; "
         "t = time.perf_counter(); load_backbone('smollm2'); "
         "print(t - t0, time.perf_counter() - t)")


def timed(code: str, cache: str) -> tuple[float, float]:
    env = {k: v for k, v in os.environ.items() if k in ("HOME", "PATH", "PYTHONPATH")}
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, env={**env, "HF_HUB_OFFLINE": "1", "RETAIN_CACHE": cache})
    imports, load = out.stdout.strip().splitlines()[-1].split()
    return float(imports), float(load)


def main() -> None:
    with tempfile.TemporaryDirectory() as cache:
        first = timed(CHILD, cache)[1]  # an empty cache: dequantise from GGUF and save
        runs = [timed(CHILD, cache) for _ in range(3)]
    loads = [load for _, load in runs]
    result = {"first_load_seconds": first, "cached_load_seconds": loads,
              "median_cached_load_seconds": statistics.median(loads),
              "import_seconds": [imports for imports, _ in runs],
              "note": "seconds inside a fresh process: load_backbone('smollm2') alone, after the "
                      "imports of torch, transformers and retain (import_seconds)"}
    print(json.dumps(result, indent=1))
    save("smollm2_load.json", result)


if __name__ == "__main__":
    main()
