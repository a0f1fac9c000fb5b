"""Option dataclasses (method and head configs): every field carries ``metadata['help']``, and
``from_options`` builds one from ``KEY=VALUE`` strings or Python values."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from retain.errors import RetainError


@dataclass
class Options:
    """Base of every method's and head's config."""

    @classmethod
    def from_options(cls, options: dict[str, Any], owner: str = "", flag: str = "--set"
                     ) -> Options:
        """``owner`` (a method's or head's name) and ``flag`` name them in an error."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values = {}
        for key, value in options.items():
            if key not in fields:
                whose = f" for {owner}" if owner else ""
                if not fields:
                    raise RetainError(f"{owner or 'this'} takes no options: drop {flag} {key}")
                more = f"; `retain list {owner}` describes them" if owner else ""
                raise RetainError(f"unknown option '{key}'{whose}: the options are "
                                  f"{', '.join(fields)} ({flag} KEY=VALUE{more})")
            default = cls().__getattribute__(key)
            if default is None and isinstance(value, str):  # typed by its annotation
                default = _example(fields[key].type)
                if value.strip().lower() in ("none", ""):
                    values[key] = None
                    continue
            values[key] = _coerce(key, value, default)
        return cls(**values)

    @classmethod
    def describe(cls) -> list[str]:
        """One line per field: name, default and help text."""
        return [f"{f.name}={getattr(cls(), f.name)!r}: {f.metadata.get('help', '')}"
                for f in dataclasses.fields(cls)]


def _example(annotation: Any) -> Any:
    """A value of the first type an ``X | None`` annotation names (``int | None``: 0), so that
    a string given for an option whose default is None is converted as the type says."""
    first = str(annotation).split("|")[0].strip()
    return {"int": 0, "float": 0.0, "bool": False}.get(first, [] if first.startswith("list")
                                                        else None)


def option_text(value: Any) -> str:
    """An option's value as ``--set KEY=VALUE`` writes it (a list comma-separated)."""
    return ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


def _coerce(key: str, value: Any, default: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        if isinstance(default, bool):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return value.lower() in ("true", "1", "yes")
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, list | tuple):
            items = [v.strip() for v in value.split(",") if v.strip()]
            if default and isinstance(default[0], float):
                return [float(v) for v in items]
            return items
    except ValueError:
        raise RetainError(f"option {key}={value!r} does not parse as {type(default).__name__}"
                          ) from None
    return value
