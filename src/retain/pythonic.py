"""Errors raised from Python name Python arguments: the command line's messages name flags
(``--set``), and :func:`python_errors` rewrites them for a Python caller (``method_options``)."""

from __future__ import annotations

import contextvars
import functools
import re

from retain.errors import RetainError

# flags whose Python argument is not the flag's own name
_PYTHON_NAMES = {"set": "method_options", "head-set": "head_options",
                 "no-retention": "retention=False", "resume": "resume=True",
                 "overwrite": "overwrite=True", "to": "to"}


def python_message(message: str) -> str:
    """A command-line error message with each ``--flag`` written as its Python argument, and
    ``--flag VALUE`` as ``flag='VALUE'`` where VALUE is a name retain knows (a method, head,
    backbone, scenario, kind or precision)."""
    from retain.catalogue import HEADS, METHODS, PACKAGED, TINY
    from retain.kinds import KINDS, SCENARIOS

    known = {*METHODS, *HEADS, *PACKAGED, *TINY, *SCENARIOS, *KINDS, "no",
             "fp16", "bf16"}

    def python(m: re.Match) -> str:
        flag, value = m.group(1), m.group(2)
        name = _PYTHON_NAMES.get(flag, flag.replace("-", "_"))
        if value in known and "=" not in name:
            return f"{name}={value!r}"
        return name + (f" {value}" if value else "")
    return re.sub(r"--([a-z][a-z0-9-]*)(?: ([A-Za-z0-9_.-]+))?", python, message)


# set by the command line: its errors keep the flags
FROM_COMMAND_LINE: contextvars.ContextVar[bool] = contextvars.ContextVar("cli", default=False)


def python_errors(fn):
    """Decorator: a RetainError raised inside names Python arguments (unless the command line
    called)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except RetainError as e:
            if FROM_COMMAND_LINE.get():
                raise
            raise RetainError(python_message(str(e))) from None
    return wrapper
