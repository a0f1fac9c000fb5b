"""Atomic writes: a checkpoint is complete or absent, never half-written.

A checkpoint is ``weights-NNN.safetensors`` (every tensor of the method's ``state_dict``) and
``state.json`` (structure, records, the config). ``state.json`` is written last and names its
weights file, so a crash between the two leaves the previous checkpoint in force.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from safetensors.torch import load_model, save_model
from torch import nn

from retain.errors import RetainError

STATE = "state.json"


def write_json(path: Path, data: Any) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, allow_nan=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save(directory: Path, model: nn.Module, state: dict[str, Any], step: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / f"weights-{step:03d}.safetensors"
    tmp = directory / (weights.name + ".tmp")
    save_model(model, str(tmp))
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


def load_weights(directory: Path, model: nn.Module, state: dict[str, Any]) -> None:
    path = directory / state["weights"]
    if not path.is_file():
        raise RetainError(f"checkpoint weights {path} are missing; remove {directory} to start "
                          "over")
    try:
        load_model(model, str(path), strict=True)
    except RuntimeError as e:
        raise RetainError(f"checkpoint {path} does not fit this model ({str(e).splitlines()[0]}"
                          "); it was written by another backbone or method") from None
