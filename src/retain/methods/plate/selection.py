"""What PLATE computes from a weight matrix alone: which output neurons train (``B``) and the
input subspace they train in (``Q``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from retain.errors import RetainError

MAX_TRAINABLE_FRACTION = 0.9  # at least 10% of a layer's rows stay frozen and define Q


def trainable_rows(d_out: int, r: int) -> int:
    """``r`` capped at 90% of the layer's output rows (at least one row)."""
    return max(1, min(r, int(MAX_TRAINABLE_FRACTION * d_out)))


@torch.no_grad()
def redundancy(weight: torch.Tensor, exact_limit: int = 4096, anchors: int = 1024, seed: int = 0,
               block: int = 1024) -> torch.Tensor:
    """Each row's mean absolute cosine similarity to the other rows.

    Exact (in blocks of rows, float64) up to ``exact_limit`` rows; beyond, the mean runs over
    ``anchors`` rows drawn at random (exact cosines). The official code also projects the rows
    to 128 random columns first; on MiniLM that keeps only about a third of the exact top 32,
    against 97-100% for exact cosines to 1,024 anchors (benchmarks/plate_selection.py)."""
    w = weight.detach().double()
    w = w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)
    n = w.shape[0]
    if n > exact_limit and anchors < n:
        g = torch.Generator(device="cpu").manual_seed(seed)
        idx = torch.randperm(n, generator=g)[:anchors].to(w.device)
        sums = (w @ w[idx].T).abs().sum(1)
        counts = torch.full((n,), float(anchors), dtype=torch.float64, device=w.device)
        sums[idx] -= 1.0  # an anchor row does not count itself
        counts[idx] -= 1.0
        return sums / counts
    scores = torch.empty(n, dtype=torch.float64, device=w.device)
    for i in range(0, n, block):
        cos = (w[i:i + block] @ w.T).abs()
        scores[i:i + block] = (cos.sum(1) - cos.diagonal(i).clamp(max=1.0)) / max(n - 1, 1)
    return scores


def select_neurons(weight: torch.Tensor, r: int, **kwargs) -> torch.Tensor:
    """Indices (sorted) of the ``r`` most redundant output rows: ``B``'s selection."""
    scores = redundancy(weight, **kwargs)
    top = torch.topk(scores, trainable_rows(weight.shape[0], r)).indices
    return top.sort().values


@dataclass
class Subspace:
    """``Q`` (``d_in x k``, orthonormal columns) and what chose it."""

    basis: torch.Tensor
    n_high: int  # fewest leading directions holding a fraction tau of the energy
    leak: float  # ||W_f Q||_F^2 / ||W_f||_F^2, at most 1 - tau


@torch.no_grad()
def protected_subspace(frozen: torch.Tensor, tau: float, max_rank: int) -> Subspace:
    """The ``k`` right singular directions of ``frozen`` (``W_f``) with the smallest singular
    values, from an exact eigendecomposition of ``W_f^T W_f`` (``d_in x d_in``), so the null space
    is included when ``W_f`` has fewer rows than inputs. ``k = min(d_in - n_high, max_rank)``."""
    w = frozen.detach().double()
    d_in = w.shape[1]
    evals, evecs = torch.linalg.eigh(w.T @ w)  # ascending
    evals = evals.clamp_min(0.0)
    total = float(evals.sum())
    if total <= 0.0:
        n_high = 0
    else:
        held = torch.cumsum(evals.flip(0), 0) / total
        n_high = int(torch.searchsorted(held, torch.tensor(tau, dtype=held.dtype))) + 1
        n_high = min(n_high, d_in)
        if tau == 0.0:
            n_high = 0
    k = min(d_in - n_high, max_rank)
    if k < 1:
        raise RetainError(f"tau={tau} leaves no input direction to train in a layer of input "
                         f"width {d_in}; lower tau")
    leak = float(evals[:k].sum() / total) if total > 0 else 0.0
    return Subspace(evecs[:, :k].contiguous(), n_high, leak)
