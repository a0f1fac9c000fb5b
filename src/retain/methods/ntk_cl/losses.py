"""NTK-CL's regularising terms as pure functions, in the intended forms and in the forms of
the authors' code (``official_*``).

- contrast: current fused features against each other and the old classes' prototypes;
- orthogonality: the component of current features inside the span of old prototypes;
- the L2 pull towards the parameters the task started from is a sum of squares (``pull``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def prototype_basis(prototypes: torch.Tensor, rank: int) -> torch.Tensor:
    """Orthonormal basis ``[D, k]`` of the span of the (normalised) prototypes ``[C, D]``:
    the left singular vectors above float32 rounding, at most ``rank`` of them."""
    p = F.normalize(prototypes.double(), dim=-1).T
    u, s, _ = torch.linalg.svd(p, full_matrices=False)
    keep = s > s.max() * max(p.shape) * torch.finfo(torch.float32).eps if s.numel() else s > 0
    return u[:, keep][:, :rank].to(prototypes.dtype)


def orthogonality(features: list[torch.Tensor], basis: torch.Tensor) -> torch.Tensor:
    """Mean squared norm of the normalised features' component inside ``span(basis)``: 0 when
    every feature is orthogonal to the old prototypes, 1 when inside their span."""
    return torch.stack([(F.normalize(f, dim=-1) @ basis).pow(2).sum(-1).mean()
                        for f in features]).mean()


def official_orthogonality(features: list[torch.Tensor], prototypes: torch.Tensor,
                           rank: int) -> torch.Tensor:
    """The authors' form: ``U[:, :rank]`` of a full SVD of the normalised prototypes (columns
    beyond their rank are arbitrary null-space directions), and the *signed sum* of every entry
    of the normalised features' component outside that span."""
    p = F.normalize(prototypes, dim=-1).T
    u = torch.linalg.svd(p, full_matrices=True)[0][:, :rank]
    total = 0
    for f in features:
        x = F.normalize(f, dim=-1)
        total = total + (x - x @ u @ u.T).sum()
    return total


def contrast(features: torch.Tensor, labels: torch.Tensor, prototypes: torch.Tensor,
             proto_labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Supervised contrastive loss (minimised) of the batch's features, with the old prototypes
    as extra candidates: each item is pulled towards the batch items (and prototypes) of its
    class and pushed away from every other, old prototypes included. Zero when no item has a
    positive."""
    e = F.normalize(torch.cat([features, prototypes.to(features.dtype)]), dim=-1)
    all_labels = torch.cat([labels, proto_labels])
    n = features.shape[0]
    sims = e[:n] @ e.T / temperature  # anchors: the batch's items
    self_mask = torch.zeros_like(sims, dtype=torch.bool)
    self_mask[:, :n] = torch.eye(n, dtype=torch.bool, device=sims.device)
    sims = sims.masked_fill(self_mask, float("-inf"))
    positive = (labels[:, None] == all_labels[None]) & ~self_mask
    has = positive.any(1)
    if not has.any():
        return features.sum() * 0
    log_prob = sims - sims.logsumexp(1, keepdim=True)
    per_anchor = (log_prob.masked_fill(~positive, 0).sum(1) / positive.sum(1).clamp_min(1))
    return -per_anchor[has].mean()


def official_contrast(features: torch.Tensor, labels: torch.Tensor, prototypes: torch.Tensor,
                      proto_labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """The authors' term as it enters their loss (already negated): ``-(pos + neg)`` with
    ``pos = -log sum_{i != j, same class} exp(s_ij)`` over every row (items and prototypes) and
    ``neg = mean_i logsumexp_{j != i} s_ij``; minimising it *maximises* their contrastive loss.
    Non-finite values (no positive pair) count as 0, as in their code."""
    e = F.normalize(torch.cat([features, prototypes.to(features.dtype)]), dim=-1)
    all_labels = torch.cat([labels, proto_labels])
    sims = e @ e.T / temperature
    eye = torch.eye(len(e), dtype=torch.bool, device=e.device)
    positive = (all_labels[:, None] == all_labels[None]) & ~eye
    pos = -sims.masked_fill(~positive, float("-inf")).flatten().logsumexp(0)
    neg = sims.masked_fill(eye, float("-inf")).logsumexp(1).mean()
    value = -(pos + neg)
    return value if torch.isfinite(value) else features.sum() * 0


def pull(params: dict[str, torch.Tensor], start: dict[str, torch.Tensor],
         weights_only: bool = False) -> torch.Tensor:
    """``sum ||theta - theta_start||^2`` (``weights_only``: names holding 'weight' or 'mix',
    the authors' selection)."""
    total = 0
    for name, p in params.items():
        if weights_only and not any(part in name for part in ("weight", "mix")):
            continue
        total = total + (p - start[name]).pow(2).sum()
    return total
