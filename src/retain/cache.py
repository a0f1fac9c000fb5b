"""retain's cache on disk (``$RETAIN_CACHE``, default ``~/.cache/retain``): dequantised backbones
(:mod:`retain.backbones`) and the token sequences of language-model streams, keyed by what makes
them, so that a second run starts without parsing and tokenising its text again.

A cached array's file name is the SHA-256 of its key: the contents of the files the text came
from (or the text itself), the version of the code that reads them, the tokenizer (its full
definition) and the sequence length. Any of them changing gives another file; nothing is ever
read under a stale key. Files are written whole (a temporary file, then an atomic rename), so two
runs starting together both get a complete array; a file that does not load is made again.
Light: no torch."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np


def cache_dir() -> Path:
    return Path(os.environ.get("RETAIN_CACHE", Path.home() / ".cache" / "retain")).expanduser()


def digest(value: Any) -> str:
    """SHA-256 of a JSON-able value (its canonical JSON)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def text_digest(texts: Iterable[str]) -> str:
    h = hashlib.sha256()
    for text in texts:
        h.update(text.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()


def files_digest(paths: Iterable[Path]) -> str:
    """SHA-256 over the files' names (within their folder) and contents, in the order given."""
    h = hashlib.sha256()
    for path in paths:
        h.update(Path(path).name.encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()


def cached_array(folder: str, key: dict[str, Any], make: Callable[[], np.ndarray]) -> np.ndarray:
    """The array cached under ``key`` in ``cache_dir()/folder``, made by ``make`` (and saved)
    when there is none or it does not load."""
    path = cache_dir() / folder / f"{digest(key)}.npy"
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):  # none yet, or a file cut short
        pass
    value = make()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.{uuid.uuid4().hex}.tmp.npy")
        np.save(tmp, value, allow_pickle=False)
        os.replace(tmp, path)
    except OSError:  # a read-only cache: the run goes on without it
        pass
    return value
