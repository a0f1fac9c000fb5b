"""Continual streams: built-in benchmarks and the user's own files."""

from retain.data.stream import Split, Stream, Task, build_stream

BENCHMARKS = {
    "wordnet45": "WordNet 3.0 glosses by supersense: 45 classes in 9 tasks of 5 (text, offline)",
}

__all__ = ["BENCHMARKS", "Split", "Stream", "Task", "build_stream"]
