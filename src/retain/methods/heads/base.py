"""What every head does, and the task-local classifier of the heads built from statistics."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn


def local_labels(labels: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """Labels as positions in ``classes`` (-100, ignored by the loss, for any other class)."""
    lut = torch.full((max(max(classes), int(labels.max())) + 1,), -100, dtype=torch.long,
                     device=labels.device)
    lut[torch.as_tensor(classes, device=labels.device)] = torch.arange(len(classes),
                                                                       device=labels.device)
    return lut[labels]


def masked(logits: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
    """``-inf`` on the classes not seen yet."""
    return logits.masked_fill(~seen, float("-inf"))


class Head(nn.Module):
    """A classification head: built before task 1, told when a task begins and ends.

    ``loss`` trains it (and the backbone) while a task trains; ``end_task`` reads the task's
    training data once more (``batches()``, features by ``featurize``); ``logits`` scores every
    class of the stream. ``state`` / ``load_state`` carry the structure beyond tensors."""

    learns_alone: ClassVar[bool] = False  # worth training on a frozen backbone

    def begin_task(self, task) -> None:
        pass

    def loss(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def end_task(self, task, batches, featurize) -> None:
        pass

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        pass


class StatisticsHead(Head):
    """A head built from class statistics when a task ends. While a task trains, a temporary
    task-local linear classifier gives the backbone its loss (trained at ``head_lr``); it is
    dropped after the task (``aligned`` keeps its rows as the starting point)."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.dim, self.num_classes = dim, num_classes
        self.classifier: nn.Linear | None = None
        self.classes: list[int] = []  # the current task's classes

    def begin_task(self, task) -> None:
        self.classes = list(task.classes)
        device = next(iter(self.buffers()), torch.zeros(0)).device
        self.classifier = nn.Linear(self.dim, len(self.classes)).to(device)

    def loss(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.classifier(features), local_labels(labels, self.classes))

    def end_task(self, task, batches, featurize) -> None:
        self.absorb(task, batches, featurize)
        self.classifier = None

    def absorb(self, task, batches, featurize) -> None:
        """Fold the task's training data into the head's statistics."""
        raise NotImplementedError
