"""A run config as TOML: values written and read back (``config.toml``, ``--config FILE``),
and a run's later sessions as ``[[sessions]]`` tables."""

from __future__ import annotations

import json
import math
import os
from typing import Any

from retain.errors import RetainError


def read_toml(path: str | os.PathLike) -> dict[str, Any]:
    """A config file's keys; a missing or malformed file refused in one line."""
    import tomllib

    try:
        with open(os.path.expanduser(path), "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise RetainError(f"config file '{path}' does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise RetainError(f"config file '{path}' is not valid TOML ({e})") from None


def read_sessions(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The later sessions a run's ``config.toml`` lists (``[[sessions]]``, written by ``retain
    learn``): each one's ``data``, ``classes_per_task`` and training ``options``, in order.
    ``retain run --config`` learns them after the run, which replays the whole run."""
    sessions = read_toml(path).get("sessions", [])
    allowed = {"data", "classes_per_task", "options"}
    for i, session in enumerate(sessions):
        unknown = sorted(set(session) - allowed)
        if not isinstance(session, dict) or "data" not in session or unknown:
            raise RetainError(f"{path}: session {i + 1} must give data (and may give "
                              f"classes_per_task and options), got {sorted(session)}")
    return [{"data": s["data"], "classes_per_task": s.get("classes_per_task"),
             "options": dict(s.get("options", {}))} for s in sessions]


def sessions_toml(sessions: list[dict[str, Any]]) -> str:
    """Later sessions as ``[[sessions]]`` tables (what :func:`read_sessions` reads)."""
    lines = []
    for s in sessions:
        lines += ["", "[[sessions]]", f"data = {toml_value(s['data'])}"]
        if s.get("classes_per_task") is not None:
            lines.append(f"classes_per_task = {s['classes_per_task']}")
        if s.get("options"):
            lines.append(f"options = {toml_value(s['options'])}")
    return "\n".join(lines) + ("\n" if lines else "")


def toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if value != value else
                                                         ("inf" if value > 0 else "-inf"))
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()
                               if v is not None) + "}"
    raise RetainError(f"a config value of type {type(value).__name__} cannot be written as "
                      "TOML")


def config_values(values: dict[str, Any], source: str, fields: set[str]) -> dict[str, Any]:
    """TOML keys as the config's ``fields``, checked by name."""
    out = {k.replace("-", "_"): v for k, v in values.items()}
    unknown = sorted(set(out) - fields)
    if unknown:
        raise RetainError(f"{source}: unknown key '{unknown[0]}' (the keys are the fields of "
                          f"`retain run --help`, e.g. method, data, lr, method_options)")
    if "data" in out and "benchmark" not in out:
        out["benchmark"] = None
    return out
