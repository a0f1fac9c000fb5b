"""debian30: Debian package descriptions labelled by their archive section, a second text
classification benchmark unlike wordnet45 in domain (software, not dictionary glosses), wording
(a package's one-line summary) and classes (30 sections in 6 tasks of 5).

Construction (``tests/test_debian.py`` builds it from a small fixture):

- the source: every package stanza the machine's apt lists hold, as ``apt-cache dumpavail`` prints
  them (Debian's own package index; ``apt-get update`` fetches it), or the stanzas of a
  ``Packages`` file named by ``$RETAIN_DEBIAN_PACKAGES``;
- one item per distinct summary (the first line of ``Description:``, whitespace collapsed), its
  label the ``Section:`` field without its area (``contrib/``, ``non-free/``); a summary found
  under two sections or more is dropped (it cannot be labelled), one found twice under one
  section is kept once;
- dropped sections: the catch-alls that name a packaging role, not a topic (``libs``,
  ``libdevel``, ``oldlibs``, ``misc``, ``metapackages``, ``debug``); of the rest, the 30 largest
  (ties by name) are the classes;
- class order ``RandomState(2024).permutation(30)``, tasks of 5; per class the profile's cap, 80/20
  train/test (``split_per_class``), as wordnet45.

The index changes with Debian's point releases; ``debian_source()`` gives the SHA-256 of the
stanzas read (saved with the stream's description in ``docs/benchmarks.md``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections import Counter, defaultdict
from functools import lru_cache

import numpy as np

from retain.data.stream import Stream, class_order_for, labelled_corpus, register_benchmark
from retain.errors import RetainError
from retain.profiles import Profile

CLASSES = 30
DEFAULT_ORDER_SEED = 2024
ROLES = ("libs", "libdevel", "oldlibs", "misc", "metapackages", "debug")
ENV = "RETAIN_DEBIAN_PACKAGES"


@lru_cache(maxsize=1)
def debian_source() -> tuple[str, str]:
    """The package stanzas (text) and their SHA-256."""
    path = os.environ.get(ENV)
    if path:
        try:
            text = open(os.path.expanduser(path), encoding="utf-8", errors="replace").read()
        except OSError as e:
            raise RetainError(f"${ENV}={path}: {e.strerror}") from None
    else:
        if shutil.which("apt-cache") is None:
            raise RetainError(f"debian30 reads Debian's package index (`apt-cache dumpavail`), "
                              f"which this machine lacks: set ${ENV} to a Packages file")
        text = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, text=True,
                              errors="replace").stdout
    if "\nPackage:" not in "\n" + text:
        raise RetainError("debian30: the package index is empty: run `apt-get update` (or set "
                          f"${ENV} to a Packages file)")
    return text, hashlib.sha256(text.encode()).hexdigest()


def parse_packages(text: str) -> list[tuple[str, str]]:
    """``(summary, section)`` of every stanza that has both."""
    out = []
    for stanza in text.split("\n\n"):
        fields = {}
        for line in stanza.splitlines():
            if line and not line[0].isspace() and ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        summary, section = fields.get("Description", ""), fields.get("Section", "")
        if summary and section:
            out.append((" ".join(summary.split()), section.rsplit("/", 1)[-1]))
    return out


def select(pairs: list[tuple[str, str]], classes: int = CLASSES
           ) -> tuple[list[str], np.ndarray, list[str]]:
    """The items, labels and class names of the construction above."""
    sections: dict[str, set[str]] = defaultdict(set)
    for summary, section in pairs:
        sections[summary].add(section)
    kept = sorted((s, next(iter(secs))) for s, secs in sections.items() if len(secs) == 1)
    sizes = Counter(section for _, section in kept if section not in ROLES)
    names = sorted(sorted(sizes), key=lambda n: -sizes[n])[:classes]
    if len(names) < 2:
        raise RetainError(f"debian30: the package index holds {len(names)} usable sections; "
                          "it needs at least 2")
    names = sorted(names)
    index = {n: i for i, n in enumerate(names)}
    items = [(s, index[sec]) for s, sec in kept if sec in index]
    return [s for s, _ in items], np.asarray([c for _, c in items]), names


@lru_cache(maxsize=1)
def load_debian() -> tuple[list[str], np.ndarray, list[str]]:
    return select(parse_packages(debian_source()[0]))


@register_benchmark("debian30", "Debian package summaries by archive section: 30 classes in 6 "
                    "tasks of 5 (text classification, from the apt index)",
                    class_order_seed=DEFAULT_ORDER_SEED, classes_per_task=5)
def debian30_stream(config, profile: Profile, backbone=None) -> Stream:
    texts, labels, names = load_debian()
    return labelled_corpus("debian30", texts, labels, names, profile, config.scenario,
                           class_order_for(len(names), config.class_order_seed,
                                           config.class_order), config.classes_per_task)
