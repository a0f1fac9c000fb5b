"""mkdocs hook: ``<!-- options: NAME -->`` in a page becomes the table of that method's or head's
options (name, default, help), read from its config dataclass, so the pages never restate a
default by hand."""

from __future__ import annotations

import dataclasses
import re


def options_table(name: str) -> str:
    from retain.catalogue import HEADS, METHODS

    if name in METHODS:
        from retain.methods import get_method_class

        cls = get_method_class(name).config_class
    elif name in HEADS:
        from retain.methods.heads import HEAD_CONFIGS

        cls = HEAD_CONFIGS.get(name)
    else:
        raise ValueError(f"options marker names '{name}', neither a method nor a head")
    fields = dataclasses.fields(cls) if cls is not None else ()
    if not fields:
        return "This one has no options."
    rows = ["| option | default | what it does |", "|---|---|---|"]
    for f in fields:
        default = getattr(cls(), f.name)
        text = f.metadata.get("help", "").replace("|", "\\|")
        rows.append(f"| `{f.name}` | `{default!r}` | {text} |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, **kwargs) -> str:
    return re.sub(r"<!-- options: ([a-z-]+) -->", lambda m: options_table(m.group(1)), markdown)
