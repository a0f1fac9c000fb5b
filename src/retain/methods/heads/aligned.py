"""``aligned``: one linear head over all seen classes, re-aligned on features sampled from stored
class Gaussians (SLCA, ICCV 2023; the InfLoRA authors' "InfLoRA+CA").

When a task ends, each of its classes' feature mean and covariance (float64, unbiased) is
stored, and the rows of the task-local classifier that trained with the backbone become that
class's rows of the head. After every task but the first, the whole head trains on ``samples``
features per seen class and epoch drawn from ``N(mean, cov + shrink I)`` (SGD with momentum),
with logits divided by the mean norm of the per-task logit blocks and by ``temperature`` before
the cross-entropy. Stores ``d^2 + d + 1`` numbers per class (``covariance='diagonal'``:
``2d + 1``) and the head. A class seen again (domain-incremental) has its moments pooled."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from retain.dist import all_reduce_sum
from retain.errors import RetainError
from retain.methods.heads.base import (
    ExportedHead,
    StatisticsHead,
    local_labels,
    masked,
    seen_rows,
)
from retain.options import Options


@dataclass
class AlignedConfig(Options):
    samples: int = field(default=256, metadata={
        "help": "features sampled per class and epoch (also the batch size)"})
    epochs: int = field(default=5, metadata={"help": "alignment epochs after each task"})
    lr: float = field(default=0.01, metadata={"help": "SGD learning rate of the alignment"})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum of the alignment"})
    temperature: float = field(default=0.1, metadata={
        "help": "logits are divided by the mean per-task block norm and by this"})
    covariance: str = field(default="full", metadata={"help": "full or diagonal"})
    shrink: float = field(default=1e-4, metadata={
        "help": "added to the covariance's diagonal before sampling"})
    seed: int = field(default=0, metadata={"help": "seed of the sampling"})

    def __post_init__(self) -> None:
        if self.covariance not in ("full", "diagonal"):
            raise RetainError(f"aligned head: covariance must be full or diagonal, got "
                              f"{self.covariance}")
        if self.samples < 1 or self.epochs < 0 or self.temperature <= 0:
            raise RetainError("aligned head: samples >= 1, epochs >= 0 and temperature > 0 "
                              "are needed")


class AlignedHead(StatisticsHead):
    def __init__(self, dim: int, num_classes: int, config: AlignedConfig):
        super().__init__(dim, num_classes)
        self.config = config
        self.linear = nn.Linear(dim, num_classes)
        self.linear.requires_grad_(False)  # trained only by the alignment, inside end_task
        self.register_buffer("seen", torch.zeros(num_classes, dtype=torch.bool))
        self.order: list[int] = []  # the class of each row of the statistics
        self.blocks: list[list[int]] = []  # each task's classes, for the block norms
        self._resize(0)

    def _resize(self, rows: int) -> None:
        d, full = self.dim, self.config.covariance == "full"
        device = self.seen.device
        self.register_buffer("means", torch.zeros(rows, d, dtype=torch.float64, device=device))
        self.register_buffer("covs", torch.zeros((rows, d, d) if full else (rows, d),
                                                 dtype=torch.float64, device=device))
        self.register_buffer("counts", torch.zeros(rows, dtype=torch.float64, device=device))

    @torch.no_grad()
    def absorb(self, task, batches, featurize) -> None:
        classes, full = list(task.classes), self.config.covariance == "full"
        k, d = len(classes), self.dim
        sums = torch.zeros(k, d, dtype=torch.float64, device=self.seen.device)
        outer = torch.zeros((k, d, d) if full else (k, d), dtype=torch.float64,
                            device=sums.device)
        counts = torch.zeros(k, dtype=torch.float64, device=sums.device)
        for batch in batches():
            f = featurize(batch).double()
            local = local_labels(batch["labels"], classes)
            keep = local >= 0
            f, local = f[keep], local[keep]
            sums.index_add_(0, local, f)
            outer.index_add_(0, local, f[:, :, None] * f[:, None, :] if full else f * f)
            counts.index_add_(0, local, torch.ones_like(local, dtype=torch.float64))
        for t in (sums, outer, counts):
            all_reduce_sum(t)  # training data is sharded across processes
        self._store(classes, sums, outer, counts)
        rows = torch.as_tensor(classes, device=sums.device)
        self.linear.weight[rows] = self.classifier.weight.detach().to(self.linear.weight)
        self.linear.bias[rows] = self.classifier.bias.detach().to(self.linear.bias)
        self.seen[rows] = True
        self.blocks.append(classes)
        if len(self.blocks) > 1:
            self.align(task.index)

    def _store(self, classes, sums, outer, counts) -> None:
        """Means and unbiased covariances of the task's classes, pooled with earlier moments
        of a class seen before."""
        full = self.config.covariance == "full"
        new = [c for c in classes if c not in self.order]
        if new:
            old = (self.means, self.covs, self.counts)
            self._resize(len(self.order) + len(new))
            n = len(self.order)
            self.means[:n], self.covs[:n], self.counts[:n] = old
            self.order += new
        for i, c in enumerate(classes):
            if counts[i] == 0:
                continue
            row = self.order.index(c)
            n_old = self.counts[row]
            mean_old = self.means[row]
            scatter_old = self.covs[row] * (n_old - 1).clamp_min(0)
            second_old = scatter_old + n_old * (_outer(mean_old, mean_old) if full else
                                                mean_old * mean_old)
            n = n_old + counts[i]
            mean = (n_old * mean_old + sums[i]) / n
            second = second_old + outer[i]
            scatter = second - n * (_outer(mean, mean) if full else mean * mean)
            self.means[row], self.counts[row] = mean, n
            self.covs[row] = scatter / (n - 1).clamp_min(1)

    def sample(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``samples`` features per stored class from its Gaussian, with their labels."""
        n, d = self.config.samples, self.dim
        xs = []
        for row in range(len(self.order)):
            z = torch.randn(n, d, dtype=torch.float64, generator=generator)
            z = z.to(self.means.device)
            if self.config.covariance == "full":
                cov = self.covs[row] + self.config.shrink * torch.eye(d, dtype=torch.float64,
                                                                      device=z.device)
                chol = torch.linalg.cholesky_ex(cov)[0]
                xs.append(self.means[row] + z @ chol.T)
            else:
                xs.append(self.means[row] + z * (self.covs[row] + self.config.shrink).sqrt())
        labels = torch.as_tensor(self.order, device=self.means.device).repeat_interleave(n)
        return torch.cat(xs).float(), labels

    def align(self, task_index: int) -> None:
        """Train the head on sampled features, every process identically (same seed)."""
        cfg = self.config
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + task_index)
        params = list(self.linear.parameters())
        self.linear.requires_grad_(True)
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum)
        try:
            with torch.enable_grad(), torch.autocast(self.means.device.type, enabled=False):
                for _ in range(cfg.epochs):
                    x, y = self.sample(gen)
                    perm = torch.randperm(len(y), generator=gen).to(y.device)
                    for start in range(0, len(y), cfg.samples):
                        idx = perm[start:start + cfg.samples]
                        loss = F.cross_entropy(self.normalised(self.linear(x[idx])), y[idx])
                        opt.zero_grad()
                        loss.backward()
                        opt.step()
        finally:
            self.linear.requires_grad_(False)

    def normalised(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits of the seen classes divided by the mean norm of the task blocks and by the
        temperature (unseen classes: ``-inf``)."""
        norms = torch.stack([logits[:, torch.as_tensor(b, device=logits.device)].norm(dim=-1)
                             for b in self.blocks], dim=-1).mean(-1, keepdim=True) + 1e-7
        return masked(logits / norms / self.config.temperature, self.seen)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        with torch.autocast(features.device.type, enabled=False):
            return masked(self.linear(features.float()), self.seen)

    def export(self) -> ExportedHead:
        rows = seen_rows(self.seen)
        return ExportedHead("none", self.linear.weight[rows], self.linear.bias[rows], rows)

    def state(self) -> dict[str, Any]:
        return {"order": self.order, "blocks": self.blocks}

    def load_state(self, state: dict[str, Any]) -> None:
        self.order, self.blocks = list(state["order"]), [list(b) for b in state["blocks"]]
        self._resize(len(self.order))  # filled by the checkpoint's tensors


def _outer(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a[:, None] * b[None, :]
