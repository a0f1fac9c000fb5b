"""Files for the walk-through "Learning over sessions" (docs/using.md): WordNet glosses of six
supersenses, from the WordNet that retain installs.

    python examples/sessions.py DIR

writes ``DIR/first.jsonl`` (two tasks, named in a ``task`` column: animals and food, then plants
and body parts), ``DIR/later.jsonl`` (a third task that arrives later: weather and motion verbs)
and ``DIR/labelled.jsonl`` (other glosses of all six, to score the run with), 60 glosses per
class in the first two and 20 in the third.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from retain.data.wordnet import load_wordnet

FIRST = {"animals-food": ("noun.animal", "noun.food"), "plants-body": ("noun.plant", "noun.body")}
LATER = {"weather-motion": ("verb.weather", "verb.motion")}
TRAIN, LABELLED = 60, 20


def main(directory: str) -> None:
    texts, labels, names = load_wordnet()
    by_class: dict[str, list[str]] = {}
    for text, label in zip(texts, labels, strict=True):
        by_class.setdefault(names[label], []).append(text)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    labelled = []
    for file, tasks in (("first.jsonl", FIRST), ("later.jsonl", LATER)):
        rows = []
        for task, classes in tasks.items():
            for name in classes:
                glosses = by_class[name]
                rows += [{"text": t, "label": name, "task": task} for t in glosses[:TRAIN]]
                labelled += [{"text": t, "label": name}
                             for t in glosses[TRAIN:TRAIN + LABELLED]]
        (out / file).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (out / "labelled.jsonl").write_text("".join(json.dumps(r) + "\n" for r in labelled),
                                        encoding="utf-8")
    print(f"wrote {out / 'first.jsonl'}, {out / 'later.jsonl'} and {out / 'labelled.jsonl'}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python examples/sessions.py DIR")
    main(sys.argv[1])
