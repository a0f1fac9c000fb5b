"""What every head does, and the task-local classifier of the heads built from statistics."""

from __future__ import annotations

import time
from dataclasses import dataclass
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


@dataclass
class ExportedHead:
    """A head as plain tensors, applied to pooled features ``f`` without ``retain``:
    ``transform`` first (``none``; ``normalize``: ``f / ||f||``; ``relu_projection``:
    ``relu(f @ projection)``), then ``scores = f @ weight.T + bias`` (one row per score), and a
    class's logit is the largest score of the rows whose ``row_class`` is that class (classes
    with no row: ``-inf``)."""

    transform: str
    weight: torch.Tensor
    bias: torch.Tensor
    row_class: list[int]
    projection: torch.Tensor | None = None

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"weight": self.weight, "bias": self.bias,
               "row_class": torch.as_tensor(self.row_class, dtype=torch.int64)}
        if self.projection is not None:
            out["projection"] = self.projection
        return {k: v.detach().cpu().contiguous() for k, v in out.items()}

    def logits(self, features: torch.Tensor, num_classes: int) -> torch.Tensor:
        """The formula above (float64), as the exported head's README states it."""
        f = features.double()
        if self.transform == "normalize":
            f = F.normalize(f, dim=-1)
        elif self.transform == "relu_projection":
            f = F.relu(f @ self.projection.double())
        scores = f @ self.weight.double().T + self.bias.double()
        out = scores.new_full((len(f), num_classes), float("-inf"))
        for r, c in enumerate(self.row_class):
            out[:, c] = torch.maximum(out[:, c], scores[:, r])
        return out


class Head(nn.Module):
    """A classification head: built before task 1, told when a task begins and ends.

    ``loss`` trains it (and the backbone) while a task trains; ``end_task`` reads the task's
    training data once more (``batches()``, features by ``featurize``); ``logits`` scores every
    class of the stream. ``state`` / ``load_state`` carry the structure beyond tensors."""

    learns_alone: ClassVar[bool] = False  # worth training on a frozen backbone
    # seconds of the head's own arithmetic at task ends (statistics, solves), the data pass
    # excluded; the engine reports it per task
    own_seconds: float = 0.0

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

    def export(self) -> ExportedHead:
        """The head as plain tensors (see :class:`ExportedHead`)."""
        raise NotImplementedError


def seen_rows(seen: torch.Tensor) -> list[int]:
    return [int(c) for c in torch.nonzero(seen).flatten()]


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
        passing = 0.0  # loading batches and computing features: the data pass

        def timed_batches():
            nonlocal passing
            items = iter(batches())
            while True:
                start = time.perf_counter()
                batch = next(items, None)
                passing += time.perf_counter() - start
                if batch is None:
                    return
                yield batch

        def timed_featurize(batch):
            nonlocal passing
            start = time.perf_counter()
            out = featurize(batch)
            passing += time.perf_counter() - start
            return out

        start = time.perf_counter()
        self.absorb(task, timed_batches, timed_featurize)
        self.own_seconds += time.perf_counter() - start - passing
        self.classifier = None

    def absorb(self, task, batches, featurize) -> None:
        """Fold the task's training data into the head's statistics."""
        raise NotImplementedError
