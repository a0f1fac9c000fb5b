"""Write the tables that the docs take from the code, between their markers:

    python scripts/doc_tables.py          # rewrite them
    python scripts/doc_tables.py --check  # exit 1 where a file differs (tests/test_docs.py)

The methods table (README.md, docs/methods/index.md) comes from ``retain.catalogue.METHODS``.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from retain.catalogue import methods_markdown

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- methods table: scripts/doc_tables.py -->", "<!-- end of methods table -->"
FILES = {ROOT / "README.md": "docs/methods/", ROOT / "docs/methods/index.md": ""}


def rewritten(path: Path, docs: str) -> str:
    text = path.read_text()
    block = f"{START}\n{methods_markdown(docs)}\n{END}"
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{path}: no '{START}' marker")
    return pattern.sub(lambda _: block, text)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="only say which files differ")
    args = p.parse_args()
    stale = []
    for path, docs in FILES.items():
        new = rewritten(path, docs)
        if new != path.read_text():
            stale.append(path)
            if not args.check:
                path.write_text(new)
    for path in stale:
        print(f"{'stale' if args.check else 'rewritten'}: {path.relative_to(ROOT)}")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
