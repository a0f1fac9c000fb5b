"""Continual streams: built-in benchmarks (each registers itself) and the user's own files."""

from retain.data import wordnet  # noqa: F401  (registers wordnet45)
from retain.data.files import file_stream
from retain.data.stream import BENCHMARKS, Split, Stream, Task
from retain.errors import RetainError
from retain.profiles import get_profile


def build_stream(config) -> Stream:
    """The stream a resolved :class:`~retain.config.RunConfig` names: the user's file, or a
    registered benchmark."""
    profile = get_profile(config.profile)
    if config.data:
        stream = file_stream(config, profile)
    elif config.benchmark in BENCHMARKS:
        stream = BENCHMARKS[config.benchmark].build(config, profile)
    else:
        raise RetainError(f"unknown benchmark '{config.benchmark}': choose one of "
                          f"{', '.join(BENCHMARKS)} or give --data FILE")
    if not stream.tasks:
        raise RetainError(f"the stream {stream.name} has no tasks")
    return stream


__all__ = ["BENCHMARKS", "Split", "Stream", "Task", "build_stream"]
