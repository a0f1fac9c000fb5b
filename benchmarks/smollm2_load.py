"""``smollm2`` load time from the cache: median of 3 fresh processes (JSON).

    python benchmarks/smollm2_load.py

The first call dequantises the GGUF file into the cache if it is not there yet (timed apart).
Saved to ``benchmarks/results/smollm2_load.json``.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
CHILD = ("import time; t = time.perf_counter(); from retain.backbones import load_backbone; "
         "load_backbone('smollm2'); print(time.perf_counter() - t)")


def timed(code: str) -> float:
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin",
                                         **{k: v for k, v in __import__("os").environ.items()
                                            if k in ("HOME", "RETAIN_CACHE", "PYTHONPATH")}})
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    from retain.backbones import cache_dir

    first = timed(CHILD)  # fills the cache when it is empty
    loads = [timed(CHILD) for _ in range(3)]
    result = {"cache": str(cache_dir()), "first_load_seconds": first,
              "cached_load_seconds": loads, "median_cached_load_seconds": statistics.median(loads),
              "note": "seconds inside a fresh process, from before importing retain.backbones to "
                      "the loaded model and tokenizer (imports of torch and transformers "
                      "included)"}
    print(json.dumps(result, indent=1))
    (ROOT / "results" / "smollm2_load.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
