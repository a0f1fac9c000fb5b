"""Retained pretrained capability of an encoder, compared with the untouched backbone.

Data ships in packages (``shared/specs/assets.md``): WordSim353 and SimLex-999 (word pairs with
human similarity, Spearman), the Lee corpus (50 documents with a human similarity matrix, Pearson
over the pairs ``i < j``), and neutral sentences from Shakespeare for embedding drift (mean cosine
between adapted and untouched embeddings of the same sentences; 1.0 = unchanged).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr

from retain.backbones import package_dir

Embed = Callable[[list[str]], torch.Tensor]  # texts -> L2-normalised embeddings
NEUTRAL_FIRST_LINE = 10_000  # Shakespeare lines from here on, two lines a sentence
NEUTRAL_SENTENCES = 64


def _gensim_data() -> Path:
    return package_dir("gensim") / "test" / "test_data"


@cache
def word_pairs(name: str) -> tuple[tuple[str, str, float], ...]:
    path = _gensim_data() / {"wordsim353": "wordsim353.tsv", "simlex999": "simlex999.txt"}[name]
    pairs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        a, b, score = line.split("\t")[:3]
        pairs.append((a.lower(), b.lower(), float(score)))
    return tuple(pairs)


@lru_cache(maxsize=1)
def lee() -> tuple[tuple[str, ...], np.ndarray]:
    root = _gensim_data()
    docs = tuple(ln.strip() for ln in (root / "lee.cor").read_text(encoding="utf-8",
                                                                     errors="replace")
                 .splitlines() if ln.strip())
    sims = np.loadtxt(root / "similarities0-1.txt")
    return docs, sims


@lru_cache(maxsize=1)
def neutral_sentences() -> tuple[str, ...]:
    path = package_dir("wn") / "data" / "wordnet_ic" / "shaks12.txt"
    lines = path.read_text(encoding="latin-1").splitlines()[NEUTRAL_FIRST_LINE:]
    lines = [ln.strip() for ln in lines if ln.strip()][: 2 * NEUTRAL_SENTENCES]
    return tuple(" ".join(lines[i:i + 2]) for i in range(0, len(lines), 2))


@dataclass
class Probe:
    """Raw scores of one encoder, and its neutral-sentence embeddings (for drift)."""

    scores: dict[str, float]
    neutral: torch.Tensor


def probe(embed: Embed, limit: int | None = None) -> Probe:
    scores = {}
    for name in ("wordsim353", "simlex999"):
        pairs = word_pairs(name)[:limit]
        words = sorted({w for a, b, _ in pairs for w in (a, b)})
        emb = dict(zip(words, embed(words), strict=True))
        cos = [float(emb[a] @ emb[b]) for a, b, _ in pairs]
        scores[name] = float(spearmanr(cos, [s for *_, s in pairs]).statistic)
    docs, human = lee()
    n = len(docs) if limit is None else min(len(docs), max(10, limit // 4))
    e = embed(list(docs[:n]))
    iu = np.triu_indices(n, 1)
    scores["lee"] = float(pearsonr((e @ e.T).numpy()[iu], human[:n, :n][iu]).statistic)
    return Probe(scores, embed(list(neutral_sentences())))


def retention(untouched: Probe, adapted: Probe) -> dict[str, dict[str, float]]:
    """Each score raw, for the untouched backbone, and as a ratio adapted / untouched."""
    out = {k: {"score": v, "untouched": untouched.scores[k],
               "ratio": v / untouched.scores[k] if untouched.scores[k] else float("nan")}
           for k, v in adapted.scores.items()}
    drift = float((adapted.neutral * untouched.neutral).sum(-1).mean())
    out["embedding_drift"] = {"score": drift, "untouched": 1.0, "ratio": drift}
    return out
