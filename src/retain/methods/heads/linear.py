"""Linear heads trained by cross-entropy: one per task (``task-heads``) or one growing head
over all seen classes (``growing``)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from retain.methods.heads.base import ExportedHead, Head, local_labels


class LinearHeads(Head):
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
            local = local_labels(labels, self.block_classes[-1])
            return F.cross_entropy(self.blocks[-1](features), local)
        return F.cross_entropy(self.logits(features), labels)

    def export(self) -> ExportedHead:
        weight = torch.cat([b.weight for b in self.blocks]) if self.blocks else torch.zeros(
            0, self.dim)
        bias = torch.cat([b.bias for b in self.blocks]) if self.blocks else torch.zeros(0)
        return ExportedHead("none", weight, bias, [c for cls in self.block_classes for c in cls])

    def state(self) -> dict[str, Any]:
        return {"block_classes": self.block_classes}

    def load_state(self, state: dict[str, Any]) -> None:
        self.blocks, self.block_classes = nn.ModuleList(), []
        for classes in state["block_classes"]:
            self._add(classes)
        if self.per_task:
            for blk in self.blocks[:-1]:
                blk.requires_grad_(False)
