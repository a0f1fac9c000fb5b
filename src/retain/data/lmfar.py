"""lmfar: continual language modelling far from the model's data (``shared/specs/benchmarks.md``).

Tasks in order: ``german``, ``spanish``, ``czech``: the fortune databases of Debian's
``fortunes-de``, ``fortunes-es`` and ``fortunes-cs``, every file of the language's folder in name
order (the ``.dat`` indexes, ``.u8`` links and the offensive ``off/`` folder left out). Fortunes
are separated by lines holding ``%``; each is decoded as UTF-8, or where that fails as the
language's legacy encoding (Latin-1 for German and Spanish, Latin-2 for Czech;
:func:`fallbacks` counts them), its terminal colour codes and control characters removed, its
whitespace collapsed to single spaces, and kept only with at least 40 characters. Sequences
and profiles as lm3 (:mod:`retain.data.lm3`). In fortunes-de 0.35-1, fortunes-es 1.36 and
fortunes-cs 2.0.9-1.1 (Debian 12) every fortune is UTF-8.

Where the files come from: the installed packages (``/usr/share/games/fortunes``), or the
packages unpacked without root into retain's cache (``apt-get download fortunes-de fortunes-es
fortunes-cs`` then ``dpkg -x FILE.deb ~/.cache/retain/fortunes`` for each), or a folder given as
``RETAIN_FORTUNES`` (holding ``de/``, ``es/``, ``cs/``).

Retention of English on this stream also reads lm3's three test splits, which no task of lmfar
trains on (:func:`english_probes`).
"""

from __future__ import annotations

import functools
import os
import re
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from retain.data.lm3 import DOMAINS, Domain, lm_stream, split_sequences, token_sequences
from retain.data.stream import Stream, register_benchmark
from retain.errors import RetainError
from retain.kinds import LM
from retain.profiles import LMFAR_PROFILES, Profile

LANGUAGES = {"german": ("de", "latin-1"), "spanish": ("es", "latin-1"),
             "czech": ("cs", "iso-8859-2")}
MIN_CHARACTERS = 40
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # colour codes (es/deprimente.fortunes)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # other control characters, tabs kept
PACKAGES = "fortunes-de fortunes-es fortunes-cs"
SYSTEM = Path("/usr/share/games/fortunes")  # the installed packages
CACHE = Path("~/.cache/retain/fortunes/usr/share/games/fortunes")  # unpacked with dpkg -x


def fortunes_root() -> Path:
    """The folder holding ``de/``, ``es/`` and ``cs/``; a one-line error naming the packages
    when none is there."""
    candidates = [Path(p) for p in (os.environ.get("RETAIN_FORTUNES"),) if p]
    candidates += [SYSTEM, CACHE.expanduser()]
    for root in candidates:
        if all((root / code).is_dir() for code, _ in LANGUAGES.values()):
            return root
    raise RetainError(f"lmfar needs Debian's {PACKAGES.replace(' ', ', ')} (fortune files in "
                      f"/usr/share/games/fortunes/{{de,es,cs}}): `apt-get install {PACKAGES}`, "
                      f"or without root `apt-get download {PACKAGES}` and `dpkg -x` each into "
                      "~/.cache/retain/fortunes")


def parse_fortunes(raw: bytes, legacy: str) -> tuple[list[str], int]:
    """The fortunes of one file's bytes (cleaned, long enough) and how many were decoded with
    the ``legacy`` encoding because they are not UTF-8."""
    out, fallback = [], 0
    chunks: list[list[bytes]] = [[]]
    for line in raw.replace(b"\r\n", b"\n").split(b"\n"):
        if line.strip() == b"%":
            chunks.append([])
        else:
            chunks[-1].append(line)
    for lines in chunks:
        data = b"\n".join(lines)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text, fallback = data.decode(legacy), fallback + 1
        text = " ".join(_CONTROL.sub("", _ANSI.sub("", text)).split())
        if len(text) >= MIN_CHARACTERS:
            out.append(text)
    return out, fallback


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.is_symlink()
                  and p.suffix not in (".dat", ".u8"))


@cache
def _language(name: str) -> tuple[tuple[str, ...], tuple[tuple[str, int], ...]]:
    code, legacy = LANGUAGES[name]
    docs, fell = [], []
    for path in _files(fortunes_root() / code):
        fortunes, fallback = parse_fortunes(path.read_bytes(), legacy)
        docs += fortunes
        if fallback:
            fell.append((path.name, fallback))
    return tuple(docs), tuple(fell)


def fortunes(name: str) -> tuple[str, ...]:
    """The cleaned fortunes of one language, in file order."""
    return _language(name)[0]


def fallbacks(name: str) -> dict[str, int]:
    """Per file of a language: how many fortunes were not UTF-8 (decoded as its legacy
    encoding)."""
    return dict(_language(name)[1])


def english_probes(tokenizer, sequences: int, length: int = 64) -> dict[str, Any]:
    """The first ``sequences`` test sequences of each of lm3's domains (``[n, length]`` token
    id tensors), general English no task of lmfar trains on."""
    import torch  # not at import: the command line checks options before torch

    out = {}
    for domain, source in DOMAINS.items():
        _, test = split_sequences(token_sequences(source, tokenizer, length), None, None)
        out[f"english_{domain}"] = torch.tensor(
            np.asarray([item["input_ids"] for item in test.items[:sequences]]))
    return out


@register_benchmark("lmfar", "three languages SmolLM2 barely knows (German, Spanish, Czech "
                    "fortunes from Debian's packages) for continual language modelling, where "
                    "forgetting English shows", kind=LM, profiles=LMFAR_PROFILES,
                    probes=english_probes)
def lmfar_stream(config, profile: Profile, backbone) -> Stream:
    return lm_stream(f"lmfar/{profile.name}", {n: language(n) for n in LANGUAGES},
                     backbone.tokenizer, profile)


def language(name: str) -> Domain:
    """One language's fortunes as a cached domain: its files, read only on a cache miss."""
    return Domain(f"lmfar.{name}", functools.partial(fortunes, name),
                  lambda: _files(fortunes_root() / LANGUAGES[name][0]))
