"""Atomic writes: a checkpoint is complete or absent, never half-written.

A checkpoint is ``weights-NNN.safetensors`` (the tensors the method declares it stores beyond the
untouched backbone: adapters, heads, prototypes, and backbone tensors it changes) and ``state.json``
(structure, records, the config). ``state.json`` is written last and names its weights file, so
a crash between the two leaves the previous checkpoint in force. Resuming rebuilds the untouched
backbone from its source and loads the stored tensors on top.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from retain.errors import RetainError

STATE = "state.json"
LOCK = ".retain.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextmanager
def owned(out: str | os.PathLike, main: bool = True) -> Iterator[None]:
    """The run folder ``out`` written by this process alone while the block runs:
    ``OUT/.retain.lock`` holds the writer's host and pid, created atomically; another live
    writer is refused in one line, a lock left by a process that is gone (a crash, a kill) is
    taken over, and this process's own lock is re-entered. ``main=False`` (the other processes
    of a multi-process run) takes nothing."""
    import socket

    if not main:
        yield
        return
    folder = Path(out).expanduser()
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    lock, me = folder / LOCK, f"{socket.gethostname()} {os.getpid()}"
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = lock.read_text().strip() if lock.exists() else ""
            if holder == me:  # re-entered (a run inside api.run's overwrite)
                yield
                return
            host, _, pid = holder.rpartition(" ")
            if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
                lock.unlink(missing_ok=True)  # its writer is gone
                continue
            if not holder:  # being written this instant: look again
                continue
            raise RetainError(f"{folder} is being written by another retain process (pid {pid} "
                              f"on {host}): wait for it to finish or choose another --out (if "
                              f"that process is gone, delete {lock})") from None
        with os.fdopen(fd, "w") as f:
            f.write(me)
        break
    else:
        raise RetainError(f"could not take {lock}: delete it if no retain process is writing "
                          f"{folder}")
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        if created and not any(folder.iterdir()):  # refused before writing: leave no trace
            folder.rmdir()


def finite(x: Any) -> Any:
    """JSON has no NaN or infinity: write null (undefined) instead."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [finite(v) for v in x]
    return x


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def readable(*paths: Path) -> None:
    """Files (or every file under folders) given the mode of an ordinary new file (0644 under
    the usual umask): safetensors writes 0600, which other users and tools cannot read."""
    mask = os.umask(0)
    os.umask(mask)
    for path in map(Path, paths):
        for p in (path.rglob("*") if path.is_dir() else [path]):
            if p.is_file():
                p.chmod(0o666 & ~mask)


def write_json(path: Path, data: Any) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(finite(data), f, indent=1, allow_nan=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def write_lines(path: Path, rows: list[dict[str, Any]]) -> None:
    """JSON Lines, written whole or not at all."""
    write_text(path, "".join(json.dumps(finite(row), allow_nan=False) + "\n" for row in rows))


def write_text(path: Path, text: str) -> None:
    """A text file, written whole or not at all."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save(directory: Path, tensors: dict[str, torch.Tensor], state: dict[str, Any],
         step: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / f"weights-{step:03d}.safetensors"
    tmp = directory / (weights.name + ".tmp")
    # clones: safetensors refuses tensors that share memory (tied embeddings)
    save_file({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}, str(tmp))
    readable(tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, weights)
    write_json(directory / STATE, {**state, "weights": weights.name})
    for old in directory.glob("weights-*.safetensors"):
        if old.name != weights.name:
            old.unlink()


def read_state(directory: Path) -> dict[str, Any] | None:
    path = directory / STATE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise RetainError(f"checkpoint state {path} is corrupt ({e.msg}); remove the "
                          "checkpoint directory to start over") from None


def load_weights(directory: Path, method, state: dict[str, Any],
                 grow: Callable[[str], bool] | None = None) -> None:
    """Load the stored tensors into ``method``: exactly the names its ``stored_tensors()``
    declares (the rest of the model comes from the untouched backbone). ``grow(name)``: that
    stored tensor may be smaller than the method's along its dimensions (a head over fewer
    classes, in a later session) and fills their leading part; the rest keeps what the method
    set up."""
    path = directory / state["weights"]
    if not path.is_file():
        raise RetainError(f"checkpoint weights {path} are missing; remove {directory} to start "
                          "over")
    tensors = load_file(str(path))
    declared = set(method.stored_tensors())
    unknown = sorted(set(tensors) - declared)
    missing = sorted(declared - set(tensors))
    if grow is not None:
        tensors = _grown(tensors, method.stored_tensors(), grow)
    try:
        if unknown or missing:
            raise RuntimeError(f"unexpected tensors {unknown[:3]}, missing tensors {missing[:3]}")
        method.load_stored(tensors)
    except RuntimeError as e:
        raise RetainError(f"checkpoint {path} does not fit this model ({str(e).splitlines()[0]}"
                          "); it was written by another backbone or method") from None


def _grown(tensors: dict[str, torch.Tensor], current: dict[str, torch.Tensor],
           grow: Callable[[str], bool]) -> dict[str, torch.Tensor]:
    out = {}
    for name, stored in tensors.items():
        now = current.get(name)
        if (now is not None and grow(name) and stored.dim() == now.dim()
                and stored.shape != now.shape
                and all(a <= b for a, b in zip(stored.shape, now.shape, strict=True))):
            grown = now.detach().clone().cpu()
            grown[tuple(slice(0, n) for n in stored.shape)] = stored.to(grown.dtype)
            stored = grown
        out[name] = stored
    return out
