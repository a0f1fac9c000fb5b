"""Continual streams: built-in benchmarks (each registers itself) and the user's own files."""

from retain.data import debian, lm3, lmfar, wordnet  # noqa: F401  (register the benchmarks)
from retain.data.files import file_stream
from retain.data.stream import BENCHMARKS, Split, Stream, Task, hold_out, validation_split
from retain.errors import RetainError


def build_stream(config, backbone=None) -> Stream:
    """The stream a resolved :class:`~retain.config.RunConfig` names: the user's file or image
    folder, or a registered benchmark. Token streams (lm) need the backbone's tokenizer."""
    profile = config.run_profile()  # resolved once, by RunConfig.resolved
    if config.data:
        stream = file_stream(config, profile, backbone)
    elif config.benchmark in BENCHMARKS:
        stream = BENCHMARKS[config.benchmark].build(config, profile, backbone)
    else:
        raise RetainError(f"unknown benchmark '{config.benchmark}': choose one of "
                          f"{', '.join(BENCHMARKS)} or give --data FILE")
    if not stream.tasks:
        raise RetainError(f"the stream {stream.name} has no tasks")
    if config.validation:
        return validation_split(stream, config.validation)
    return hold_out(stream, config.holdout) if config.holdout else stream


__all__ = ["BENCHMARKS", "Split", "Stream", "Task", "build_stream"]
