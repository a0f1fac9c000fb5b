"""lm3: continual language modelling over three text domains from packaged data
(``shared/specs/benchmarks.md``).

Tasks in order: ``definitions`` (WordNet noun synsets as ``WORD: definition`` lines, the first
lemma with underscores as spaces, the gloss cut at the first ``; "`` as in wordnet45), ``news``
(the Lee background corpus in the gensim wheel, one article a line) and ``encyclopedia`` (the
shortened English Wikipedia dump in the same folder, markup, templates and tables removed).
Each domain's documents are tokenised in file order (no special tokens), each followed by the
end-of-sequence token, concatenated and cut into sequences of ``max_length`` (64) tokens; the
sequences are shuffled with ``RandomState(0)``, the first 20% are test and the rest train, and
the profile keeps the first ``cap`` / ``test_cap`` of each.
"""

from __future__ import annotations

import bz2
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from retain.cache import cached_array, digest, files_digest, text_digest
from retain.catalogue import package_dir
from retain.data.stream import Split, Stream, Task, register_benchmark
from retain.data.wordnet import parse_gloss, wordnet_dir
from retain.errors import RetainError
from retain.kinds import LM
from retain.profiles import LM_PROFILES, Profile

WIKI = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
TEST_FRACTION = 0.2
MIN_SEQUENCES = 3  # the fewest sequences that split into one test (20%, rounded) and one train


def _gensim_data() -> Path:
    return package_dir("gensim") / "test" / "test_data"


@lru_cache(maxsize=1)
def definitions() -> tuple[str, ...]:
    docs = []
    with open(wordnet_dir() / "data.noun", encoding="utf-8") as f:
        for line in f:
            if line.startswith("  "):  # licence header
                continue
            word = line.split(" ", 5)[4].replace("_", " ")
            docs.append(f"{word}: {parse_gloss(line)[1]}")
    return tuple(docs)


@lru_cache(maxsize=1)
def news() -> tuple[str, ...]:
    text = (_gensim_data() / "lee_background.cor").read_text(encoding="utf-8", errors="replace")
    return tuple(ln.strip() for ln in text.splitlines() if ln.strip())


_WIKI_PATTERNS = [
    (re.compile(r"<!--.*?-->", re.S), ""),
    (re.compile(r"<ref[^>]*/>"), ""),
    (re.compile(r"<ref[^>]*>.*?</ref>", re.S), ""),
    (re.compile(r"<[^>]+>"), ""),
    (re.compile(r"\[https?://[^\s\]]+\s*([^\]]*)\]"), r"\1"),
    (re.compile(r"'{2,}"), ""),
    (re.compile(r"^=+\s*(.*?)\s*=+\s*$", re.M), r"\1"),
    (re.compile(r"^[*#:;]+\s*", re.M), ""),
    (re.compile(r"&nbsp;|&ndash;|&mdash;"), " "),
]


def _strip_nested(text: str, open_: str, close: str) -> str:
    """Remove nested ``open_ ... close`` spans (templates, tables)."""
    out, depth, i = [], 0, 0
    while i < len(text):
        if text.startswith(open_, i):
            depth, i = depth + 1, i + len(open_)
        elif depth and text.startswith(close, i):
            depth, i = depth - 1, i + len(close)
        else:
            if not depth:
                out.append(text[i])
            i += 1
    return "".join(out)


_DROPPED_LINK = re.compile(r"(?:File|Image|Category|Wikipedia|[a-z]{2,3}(?:-[a-z]+)?):", re.I)


def _links(text: str) -> str:
    """``[[target|label]]`` -> ``label`` (nested links inside labels too); links to files,
    images, categories and other languages dropped with their captions."""
    out, i = [], 0
    while True:
        start = text.find("[[", i)
        if start < 0:
            out.append(text[i:])
            return "".join(out)
        out.append(text[i:start])
        depth, j = 0, start
        while j < len(text):
            if text.startswith("[[", j):
                depth, j = depth + 1, j + 2
            elif text.startswith("]]", j):
                depth, j = depth - 1, j + 2
                if not depth:
                    break
            else:
                j += 1
        inner = text[start + 2: j - 2]
        if not _DROPPED_LINK.match(inner):
            out.append(_links(inner.split("|", 1)[-1]))
        i = j


def clean_wiki(text: str) -> str:
    """Article text from wiki markup: templates, tables, references, files and categories
    removed, links reduced to their labels, one paragraph a line."""
    text = _links(_strip_nested(_strip_nested(text, "{{", "}}"), "{|", "|}"))
    for pattern, repl in _WIKI_PATTERNS:
        text = pattern.sub(repl, text)
    lines = [" ".join(ln.split()) for ln in text.splitlines()]
    return "\n".join(ln for ln in lines if len(ln) > 1)


@lru_cache(maxsize=1)
def encyclopedia() -> tuple[str, ...]:
    docs = []
    with bz2.open(_gensim_data() / WIKI) as f:
        for _, el in ET.iterparse(f):
            if el.tag.rsplit("}", 1)[-1] != "page":
                continue
            ns = next((c.text for c in el.iter() if c.tag.endswith("}ns")), "0")
            text = next((c.text or "" for c in el.iter() if c.tag.endswith("}text")), "")
            if ns == "0" and not text.lstrip().upper().startswith("#REDIRECT"):
                article = clean_wiki(text)
                if article:
                    docs.append(article)
            el.clear()
    return tuple(docs)


@dataclass(frozen=True)
class Domain:
    """A stream's text domain read from files: its documents (parsed when needed) and the files
    they come from, so that its token sequences are cached by the files' contents
    (:mod:`retain.cache`) and a later run neither parses nor tokenises them again. ``version``
    names the parsing code: changing what it makes of the files means a new version."""

    name: str  # what reads the files (with the version: the cache's key for the parsing)
    docs: Callable[[], Sequence[str]]
    sources: Callable[[], list[Path]]
    version: str = "1"


DOMAINS = {
    "definitions": Domain("lm3.definitions", definitions, lambda: [wordnet_dir() / "data.noun"]),
    "news": Domain("lm3.news", news, lambda: [_gensim_data() / "lee_background.cor"]),
    "encyclopedia": Domain("lm3.encyclopedia", encyclopedia, lambda: [_gensim_data() / WIKI]),
}


_SEQUENCES: dict[tuple, np.ndarray] = {}  # per process: the cache key -> rows
_TOKENIZERS: dict[int, str] = {}  # per process: id of a tokenizer -> its digest


def tokenizer_digest(tokenizer) -> str:
    """What a tokenizer is, as the cache keys it: its whole definition where it has one (a fast
    tokenizer's JSON), else its name, size and special tokens."""
    if id(tokenizer) not in _TOKENIZERS:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        _TOKENIZERS[id(tokenizer)] = digest(
            [backend.to_str() if backend is not None else tokenizer.name_or_path,
             len(tokenizer), tokenizer.eos_token_id, str(tokenizer.special_tokens_map)])
    return _TOKENIZERS[id(tokenizer)]


def token_sequences(docs: Sequence[str] | Domain, tokenizer, length: int) -> np.ndarray:
    """Documents tokenised in order, each followed by EOS, concatenated and cut into rows of
    ``length`` tokens (the incomplete last row dropped). Cached on disk: a :class:`Domain` by
    its files' contents (its documents are not even parsed on a hit), a list by its text."""
    if isinstance(docs, Domain):
        text = {"files": files_digest(docs.sources()), "reader": docs.name,
                "version": docs.version}
    else:
        text = {"text": text_digest(docs)}
    key = {**text, "tokenizer": tokenizer_digest(tokenizer), "length": length,
           "format": TOKEN_FORMAT}
    name = digest(key)
    if name not in _SEQUENCES:
        _SEQUENCES[name] = cached_array("token-sequences", key, lambda: _token_sequences(
            docs.docs() if isinstance(docs, Domain) else docs, tokenizer, length))
    return _SEQUENCES[name]


TOKEN_FORMAT = 1  # what _token_sequences makes of the text: a change means a new number


def _token_sequences(docs, tokenizer, length: int) -> np.ndarray:
    eos = tokenizer.eos_token_id
    if eos is None:
        raise RetainError("the tokenizer has no end-of-sequence token; lm streams need one")
    ids = tokenizer(list(docs), add_special_tokens=False)["input_ids"]
    flat = np.fromiter((t for doc in ids for t in (*doc, eos)), dtype=np.int64)
    n = len(flat) // length
    return flat[: n * length].reshape(n, length)


def split_sequences(seqs: np.ndarray, cap: int | None, test_cap: int | None,
                    seed: int = 0) -> tuple[Split, Split]:
    """Shuffle with ``RandomState(seed)``; the first 20% test, the rest train; then the caps."""
    seqs = seqs[np.random.RandomState(seed).permutation(len(seqs))]
    n_test = int(round(TEST_FRACTION * len(seqs)))
    test, train = seqs[:n_test][:test_cap], seqs[n_test:][:cap]

    def split(rows: np.ndarray) -> Split:
        return Split([{"input_ids": r.tolist()} for r in rows], np.zeros(len(rows), int))
    return split(train), split(test)


def lm_stream(name: str, domains: dict[str, Sequence[str] | Domain], tokenizer,
              profile: Profile) -> Stream:
    """One language-modelling task per domain (its documents, or a :class:`Domain` read from
    files), in the given order."""
    stream = Stream(name, LM.scenario(""), [], [], kind=LM)
    for index, (domain, docs) in enumerate(list(domains.items())[: profile.tasks]):
        train, test = split_sequences(token_sequences(docs, tokenizer, profile.max_length),
                                      profile.cap, profile.test_cap)
        if not len(train) or not len(test):
            text = docs.docs() if isinstance(docs, Domain) else docs
            tokens = sum(len(ids) + 1 for ids in tokenizer(
                list(text), add_special_tokens=False)["input_ids"])  # each document, then EOS
            length = profile.max_length
            raise RetainError(
                f"task {index + 1} ({domain}) has {tokens:,} tokens, too few for one train and "
                f"one test sequence of {length} tokens (it needs {MIN_SEQUENCES} sequences, "
                f"{MIN_SEQUENCES * length:,} tokens): add text, or lower --max-length")
        stream.tasks.append(Task(index, [], train, test, name=domain))
    return stream


@register_benchmark("lm3", "three text domains (definitions, news, encyclopedia) for continual "
                    "language modelling, 64-token sequences (offline)", kind=LM,
                    profiles=LM_PROFILES)
def lm3_stream(config, profile: Profile, backbone) -> Stream:
    return lm_stream(f"lm3/{profile.name}", DOMAINS, backbone.tokenizer, profile)
