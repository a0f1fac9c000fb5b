"""retain: continual, rehearsal-free, parameter-efficient fine-tuning of pretrained transformers."""

from retain.config import RunConfig
from retain.errors import RetainError

__version__ = "0.1.0"

__all__ = ["RetainError", "RunConfig", "__version__", "run"]


def run(config: RunConfig, resume: bool = False, progress: bool = True) -> dict:
    """Run one continual stream and return its results (also written to ``config.out``)."""
    from retain.engine import run as _run

    return _run(config, resume=resume, progress=progress)
