"""What PLATE computes from a weight matrix alone: which output neurons train (``B``) and the
input subspace they train in (``Q``)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from retain.errors import RetainError

if TYPE_CHECKING:
    from retain.methods.plate.config import PlateConfig

MAX_TRAINABLE_FRACTION = 0.9  # at least 10% of a layer's rows stay frozen and define Q
_capped: set[tuple[int, int]] = set()  # (r, d_out) already reported


def trainable_rows(d_out: int, r: int) -> int:
    """``r`` capped at 90% of the layer's output rows (at least one row); says so once per
    ``r`` and layer width."""
    rows = max(1, min(r, int(MAX_TRAINABLE_FRACTION * d_out)))
    if rows < r and (r, d_out) not in _capped:
        _capped.add((r, d_out))
        warnings.warn(f"plate r={r} exceeds 90% of a layer's {d_out} outputs: {rows} rows train "
                      "there", stacklevel=2)
    return rows


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


def choose(weight: torch.Tensor, config: PlateConfig) -> tuple[torch.Tensor, Subspace]:
    """``B``'s rows (sorted indices) and ``Q`` for one weight matrix, as ``config`` asks:
    ``selection='exact'`` or the authors' ``'official'`` path."""
    if config.selection == "official":
        index = official_neurons(weight, config.r)
    else:
        index = select_neurons(weight, config.r, exact_limit=config.exact_limit,
                               anchors=config.anchors, seed=config.seed)
    subspace = official_subspace if config.selection == "official" else protected_subspace
    return index, subspace(frozen_rows(weight, index), config.tau, config.max_rank)


def frozen_rows(weight: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``W_f``: the rows of ``weight`` outside ``B``'s selection ``index``."""
    keep = torch.ones(weight.shape[0], dtype=torch.bool, device=weight.device)
    keep[index] = False
    return weight[keep]


def _leak(frozen: torch.Tensor, q: torch.Tensor) -> float:
    """``||W_f Q||_F^2 / ||W_f||_F^2`` in float64 (0 for an all-zero ``W_f``)."""
    w = frozen.double()
    total = float(w.pow(2).sum())
    return float((w @ q.double()).pow(2).sum()) / total if total > 0 else 0.0


@dataclass
class Subspace:
    """``Q`` (``d_in x k``, orthonormal columns) and what chose it."""

    basis: torch.Tensor
    n_high: int  # fewest leading directions holding a fraction tau of the energy
    leak: float  # ||W_f Q||_F^2 / ||W_f||_F^2, at most 1 - tau


@torch.no_grad()
def protected_subspace(frozen: torch.Tensor, tau: float, max_rank: int, full: bool = False
                       ) -> Subspace:
    """The ``k`` right singular directions of ``frozen`` (``W_f``) with the smallest singular
    values, ``k = min(d_in - n_high, max_rank)``, from an exact eigendecomposition of
    ``W_f^T W_f`` (``d_in x d_in``), so the null space is included when ``W_f`` has fewer rows
    than inputs.

    When the null space alone holds ``max_rank`` directions (MiniLM's ``output.dense``: 376
    frozen rows, 1,536 inputs; a 7B model's ``down_proj``), ``Q`` is ``k = max_rank`` of them,
    which carry no energy, and an eigensolver's pick among them changes with the machine and the
    thread count. Then ``Q`` is a seeded random draw with the row space projected out, the same
    everywhere up to rounding, and the spectrum comes from the smaller ``W_f W_f^T``, which is
    also faster on wide layers (``benchmarks/plate_selection_width.py``). ``full=True`` always
    decomposes the ``d_in x d_in`` matrix (the reference in tests and benchmarks)."""
    w = frozen.detach().double()
    n_f, d_in = w.shape
    null_space = not full and d_in - n_f >= max_rank
    if null_space:
        evals = torch.linalg.eigvalsh(w @ w.T)  # the nonzero spectrum; the rest is zero
    else:
        evals, evecs = torch.linalg.eigh(w.T @ w)  # ascending
    evals = evals.clamp_min(0.0)
    total = float(evals.sum())
    if total <= 0.0:
        n_high = 0
    else:
        held = torch.cumsum(evals.flip(0), 0) / total
        n_high = int(torch.searchsorted(held, torch.tensor(tau, dtype=held.dtype,
                                                             device=held.device))) + 1
        n_high = min(n_high, d_in)
        if tau == 0.0:
            n_high = 0
    k = min(d_in - n_high, max_rank)  # max_rank on the null-space path (n_high <= n_f)
    if k < 1:
        raise RetainError(f"tau={tau} leaves no input direction to train in a layer of input "
                         f"width {d_in}; lower tau")
    if null_space:
        basis = _null_directions(w, k)
        return Subspace(basis, n_high, _leak(w, basis))
    leak = float(evals[:k].sum() / total) if total > 0 else 0.0
    return Subspace(evecs[:, :k].contiguous(), n_high, leak)


def _null_directions(w: torch.Tensor, k: int, seed: int = 0) -> torch.Tensor:
    """``k`` orthonormal directions orthogonal to every row of ``w`` (fewer rows than inputs):
    random directions with the row space (a QR basis of ``w^T``) projected out twice."""
    rows = torch.linalg.qr(w.T).Q
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(w.shape[1], k, generator=g, dtype=w.dtype).to(w.device)
    for _ in range(2):
        x = x - rows @ (rows.T @ x)
    return torch.linalg.qr(x).Q.contiguous()


# --- the authors' randomised selection (selection='official'), reproduced with its defects ----
OFFICIAL_SEED = 42


@torch.no_grad()
def official_neurons(weight: torch.Tensor, r: int, width: int = 128, anchors: int = 256,
                     seed: int = OFFICIAL_SEED) -> torch.Tensor:
    """The official ranking: rows divided by their norms after a ``width``-column Gaussian
    sketch (unscaled, in bf16), scored by mean ``|dot|`` to ``anchors`` rows taken at a fixed
    stride from row 0 (a row counts itself), top ``r`` (capped at 90%) of the bf16 scores."""
    n, d_in = weight.shape
    g = torch.Generator(device="cpu").manual_seed(seed)
    sketch = torch.randn(d_in, width, generator=g).to(weight.device, torch.bfloat16)
    norms = weight.detach().float().norm(dim=1, keepdim=True).clamp_min(1e-8)
    z = (weight.detach().to(torch.bfloat16) @ sketch) / norms.to(torch.bfloat16)
    step = max(1, n // anchors)
    idx = torch.arange(n) if anchors >= n else torch.arange(0, step * anchors, step)
    scores = (z @ z[idx.to(z.device)].T).abs().mean(1)
    return torch.topk(scores.float(), trainable_rows(n, r)).indices.sort().values


def hadamard_transform(d: int, seed: int = OFFICIAL_SEED) -> torch.Tensor:
    """The official code's "SRHT" as a dense ``d x d`` matrix ``F``: a random permutation and
    random signs, the normalised Hadamard transform of the next power of two ``N``, truncated to
    ``d`` outputs. ``F`` is orthogonal only when ``d`` is a power of two."""
    from scipy.linalg import hadamard

    n = 1 << (d - 1).bit_length()
    g = torch.Generator(device="cpu").manual_seed(seed)
    perm = torch.randperm(d, generator=g)
    sign = torch.where(torch.rand(d, generator=g) < 0.5, -1.0, 1.0)
    h = torch.from_numpy(hadamard(n, dtype="float32")[:d, :d]) / n**0.5
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(d)
    return h[:, inverse] * sign[inverse]  # column j: F e_j


def _diagonal_energy(frozen: torch.Tensor, F: torch.Tensor, probes: int, seed: int
                     ) -> torch.Tensor:
    """Hutchinson's estimate of ``diag(F^T W_f^T W_f F)`` from ``probes`` Rademacher vectors."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    z = (torch.rand(F.shape[0], probes, generator=g) < 0.5).to(frozen) * 2 - 1
    t = F.T @ (frozen.T @ (frozen @ (F @ z)))
    return (z * t).mean(1).abs()


@torch.no_grad()
def official_subspace(frozen: torch.Tensor, tau: float, max_rank: int,
                      seed: int = OFFICIAL_SEED) -> Subspace:
    """The official ``Q``. ``k`` comes from a 2-probe estimate of the energy of the directions
    ``F e_j``; the ``min(4k, d_in)`` directions of least (4-probe) estimated energy are the
    candidates ``H_C``; ``Q`` spans ``H_C V``, with ``V`` the right singular vectors of
    ``W_f H_C`` (bf16 product) of the ``k`` smallest singular values of a *reduced* SVD. With
    ``k`` at or above the frozen row count the reduced SVD has no null space to offer and
    returns the highest-energy directions: the defect the exact path avoids (``leak`` shows
    it). Inputs of at most 64 take a float32 reduced SVD with the same defect."""
    w = frozen.detach().float().cpu()
    d_in = w.shape[1]
    if d_in <= 64:
        _, s, vt = torch.linalg.svd(w, full_matrices=False)
        n_high = _first_reaching(s**2, tau, len(s))
        k = max(1, min(d_in - n_high, max_rank))
        basis = vt[-k:].T if vt.shape[0] >= k else vt.T
    else:
        F = hadamard_transform(d_in, seed)
        quick = _diagonal_energy(w, F, 2, seed + 1000).sort(descending=True).values
        n_high = _first_reaching(quick, tau, d_in // 2)
        k = max(1, min(d_in - n_high, max_rank))
        energy = _diagonal_energy(w, F, 4, seed + 2000)
        h_c = F[:, torch.argsort(energy)[:min(4 * k, d_in, 8192)]]
        a = (w.to(torch.bfloat16) @ h_c.to(torch.bfloat16)).float()
        v = torch.linalg.svd(a, full_matrices=False).Vh.T
        basis = h_c @ v[:, -k:].flip(1)
    q, rr = torch.linalg.qr(basis)
    q = q * torch.where(rr.diagonal() < 0, -1.0, 1.0)  # signs fixed: a positive R diagonal
    q = q.double().to(frozen.device).contiguous()
    return Subspace(q, n_high, _leak(frozen.detach(), q))


def _first_reaching(energies: torch.Tensor, tau: float, otherwise: int) -> int:
    """One more than the first index where the cumulative share of ``energies`` (descending)
    reaches ``tau``; ``otherwise`` when it never does."""
    share = torch.cumsum(energies / (energies.sum() + 1e-12), 0)
    hits = (share >= tau).nonzero()
    return int(hits[0]) + 1 if len(hits) else otherwise
