"""retain: continual, rehearsal-free, parameter-efficient fine-tuning of pretrained transformers.

The Python API mirrors the command line::

    import retain

    results = retain.run(method="plate", profile="smoke", out="runs/plate", overwrite=True)
    trained = retain.load("runs/plate")
    trained.predict(["a gloss to classify"])   # [{"text": ..., "class": ..., "score": ...}]
    trained.export("exported/plate")          # transformers (and peft) load it without retain
    retain.compare(methods=["seq-lora", "plate"], profile="smoke", out="runs/cmp")
    retain.report("runs/cmp")
"""

from retain.api import compare, load, report, run
from retain.config import RunConfig
from retain.errors import RetainError

__version__ = "0.1.0"

__all__ = ["RetainError", "RunConfig", "__version__", "compare", "load", "report", "run"]
