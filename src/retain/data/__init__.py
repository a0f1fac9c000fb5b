"""Continual streams: built-in benchmarks (each registers itself) and the user's own files."""

from retain.data import debian, lm3, lmfar, wordnet  # noqa: F401  (register the benchmarks)
from retain.data.files import file_stream
from retain.data.stream import BENCHMARKS, Split, Stream, Task, hold_out, validation_split
from retain.errors import RetainError


def build_stream(plan, backbone=None) -> Stream:
    """The stream of a :class:`~retain.config.Plan`: the user's file or image folder, or its
    benchmark's. Token streams (lm) need the backbone's tokenizer."""
    config, profile = plan.config, plan.profile
    if plan.benchmark is None:
        stream = file_stream(plan, backbone)
    else:
        stream = plan.benchmark.build(config, profile, backbone)
    if not stream.tasks:
        raise RetainError(f"the stream {stream.name} has no tasks")
    if config.validation:
        return validation_split(stream, config.validation)
    return hold_out(stream, config.holdout) if config.holdout else stream


__all__ = ["BENCHMARKS", "Split", "Stream", "Task", "build_stream"]
