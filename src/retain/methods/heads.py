"""Classification heads shared by every method (``head=`` in the run config).

- ``task-heads``: one linear head per task, cross-entropy with task-local labels on the current
  head only; prediction is the argmax over all heads' logits;
- ``growing``: linear heads over all seen classes, cross-entropy over all of them (the naive
  reference: it pushes old classes down when trained on new data alone);
- ``prototypes``: cosine similarity to per-class mean features computed when the class's task
  ends; while a task trains, a temporary task-local linear classifier provides the loss.

- ``none``: language-modelling streams (the model's own LM head scores).

All classification heads return logits over every class of the stream with ``-inf`` where a
class is not yet seen.
In a domain-incremental stream, where tasks share classes, a class's logit is the max over the
heads that cover it and its prototype is the running mean over the tasks that had it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from retain.dist import all_reduce_sum


def _local(labels: torch.Tensor, classes: list[int]) -> torch.Tensor:
    lut = torch.full((max(classes) + 1,), -100, dtype=torch.long, device=labels.device)
    lut[torch.as_tensor(classes, device=labels.device)] = torch.arange(len(classes),
                                                                       device=labels.device)
    return lut[labels]


class LinearHeads(nn.Module):
    learns_alone = True  # worth training even on a frozen backbone

    def __init__(self, dim: int, num_classes: int, per_task: bool):
        super().__init__()
        self.dim, self.num_classes, self.per_task = dim, num_classes, per_task
        self.blocks = nn.ModuleList()
        self.block_classes: list[list[int]] = []

    def _add(self, classes: list[int]) -> None:
        self.blocks.append(nn.Linear(self.dim, len(classes)))
        self.block_classes.append(list(classes))

    def begin_task(self, task) -> None:
        seen = {c for cls in self.block_classes for c in cls}
        classes = task.classes if self.per_task else [c for c in task.classes if c not in seen]
        if classes:
            self._add(classes)
        if self.per_task:  # only the current task's head trains
            for blk in self.blocks[:-1]:
                blk.requires_grad_(False)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        out = features.new_full((features.shape[0], self.num_classes), float("-inf"))
        for blk, classes in zip(self.blocks, self.block_classes, strict=True):
            idx = torch.as_tensor(classes, device=features.device)
            out[:, idx] = torch.maximum(out[:, idx], blk(features).to(out.dtype))
        return out

    def loss(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.per_task:
            local = _local(labels, self.block_classes[-1])
            return F.cross_entropy(self.blocks[-1](features), local)
        return F.cross_entropy(self.logits(features), labels)

    def end_task(self, task, batches, featurize) -> None:
        pass

    def state(self) -> dict[str, Any]:
        return {"block_classes": self.block_classes}

    def load_state(self, state: dict[str, Any]) -> None:
        self.blocks, self.block_classes = nn.ModuleList(), []
        for classes in state["block_classes"]:
            self._add(classes)
        if self.per_task:
            for blk in self.blocks[:-1]:
                blk.requires_grad_(False)


class Prototypes(nn.Module):
    learns_alone = False  # its classifier only serves to train the backbone's features

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.register_buffer("means", torch.zeros(num_classes, dim))
        self.register_buffer("counts", torch.zeros(num_classes))
        self.classifier: nn.Linear | None = None  # task-local, only while a task trains
        self.classes: list[int] = []

    def begin_task(self, task) -> None:
        self.classes = list(task.classes)
        self.classifier = nn.Linear(self.means.shape[1], len(self.classes)).to(self.means.device)

    def loss(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.classifier(features), _local(labels, self.classes))

    @torch.no_grad()
    def end_task(self, task, batches, featurize) -> None:
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
        self.classifier = None

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        sims = F.normalize(features.float(), dim=-1) @ F.normalize(self.means, dim=-1).T
        return sims.masked_fill(self.counts == 0, float("-inf"))

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        pass


class NoHead(nn.Module):
    """Language modelling: the model's own LM head scores; nothing to build or train here."""

    learns_alone = False

    def begin_task(self, task) -> None:
        pass

    def end_task(self, task, batches, featurize) -> None:
        pass

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        pass


def make_head(scheme: str, dim: int, num_classes: int) -> nn.Module:
    if scheme == "none":
        return NoHead()
    if scheme == "prototypes":
        return Prototypes(dim, num_classes)
    return LinearHeads(dim, num_classes, per_task=scheme == "task-heads")
