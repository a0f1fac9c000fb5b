"""``prototypes``: cosine similarity to per-class mean features, each computed when its task
ends (a domain-incremental class keeps the running mean over the tasks that had it)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from retain.dist import all_reduce_sum
from retain.methods.heads.base import ExportedHead, StatisticsHead, seen_rows


class Prototypes(StatisticsHead):
    def __init__(self, dim: int, num_classes: int):
        super().__init__(dim, num_classes)
        self.register_buffer("means", torch.zeros(num_classes, dim))
        self.register_buffer("counts", torch.zeros(num_classes))

    @torch.no_grad()
    def absorb(self, task, batches, featurize) -> None:
        sums = torch.zeros_like(self.means)
        counts = torch.zeros_like(self.counts)
        for batch in batches():
            f = featurize(batch).float()
            sums.index_add_(0, batch["labels"], f)
            counts.index_add_(0, batch["labels"], torch.ones_like(batch["labels"], dtype=f.dtype))
        all_reduce_sum(sums)  # training data is sharded across processes
        all_reduce_sum(counts)
        total = self.counts + counts
        seen = total > 0
        self.means[seen] = ((self.means * self.counts[:, None] + sums)[seen]
                            / total[seen][:, None])
        self.counts.copy_(total)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        sims = F.normalize(features.float(), dim=-1) @ F.normalize(self.means, dim=-1).T
        return sims.masked_fill(self.counts == 0, float("-inf"))

    def export(self) -> ExportedHead:
        rows = seen_rows(self.counts > 0)
        weight = F.normalize(self.means[rows], dim=-1)
        return ExportedHead("normalize", weight, weight.new_zeros(len(rows)), rows)
