"""The lifecycle every continual method implements, its config base class, and the registry.

One task, as the engine runs it::

    method.begin_task(task, batches)      # may read the task's training data (no labels needed)
    for batch in training data:           # of method.training_tasks(task, seen)
        loss = method(batch)              # == method.loss(batch); optimises trainable_parameters()
    method.end_task(task, batches)        # merging, basis updates, prototypes
    method.predict(batch)                 # logits over all classes seen so far (-inf elsewhere)

``prepare(backbone, stream)`` runs once before the first task; ``state()`` / ``load_state()``
carry the structure a checkpoint needs beyond the tensors of ``state_dict()``. What a method
stores beyond the untouched backbone (``stored_tensors()``: new tensors and backbone tensors whose
values changed) is what checkpoints hold and what ``stored_parameters()`` counts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from retain.backbones import Backbone
from retain.data.stream import Stream, Task
from retain.errors import RetainError
from retain.methods.heads import make_head

Batch = dict[str, torch.Tensor]
Batches = Callable[[], Iterable[Batch]]


@dataclass
class MethodConfig:
    """Base of every method's config: a dataclass whose fields carry ``metadata['help']``."""

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> MethodConfig:
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values = {}
        for key, value in options.items():
            if key not in fields:
                known = ", ".join(fields) or "none"
                raise RetainError(f"unknown option '{key}' for {cls.__name__} (options: {known})")
            default = cls().__getattribute__(key)
            values[key] = _coerce(key, value, default)
        return cls(**values)


def _coerce(key: str, value: Any, default: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        if isinstance(default, bool):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return value.lower() in ("true", "1", "yes")
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, list | tuple):
            return [v.strip() for v in value.split(",") if v.strip()]
    except ValueError:
        raise RetainError(f"option {key}={value!r} does not parse as {type(default).__name__}"
                          ) from None
    return value


class ContinualMethod(nn.Module):
    """A backbone (possibly wrapped with adapters), a head, and the lifecycle hooks."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    default_head: ClassVar[str] = "growing"
    default_lr: ClassVar[float] = 5e-4
    continual: ClassVar[bool] = True  # False: only the final row is meaningful (joint)
    task_aware_prediction: ClassVar[bool] = False  # predict() uses task_id when given
    # parts of tensor names recomputed from the pretrained weights without data: checkpoints
    # keep them (exact resume), ``stored_parameters`` does not count them
    recomputed_tensors: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: MethodConfig, head: str, lr: float, head_lr: float):
        super().__init__()
        self.config = config
        self.head_scheme = head
        self.lr, self.head_lr = lr, head_lr

    # --- lifecycle -------------------------------------------------------------------------
    def prepare(self, backbone: Backbone, stream: Stream) -> None:
        """Wrap the backbone (adapters, freezing) and build the head; once, before task 1."""
        self.backbone = backbone  # plain attribute: ``self.model`` is the registered module
        self.num_tasks = len(stream)
        tensors = backbone.model.state_dict(keep_vars=True).values()
        self._original = {id(t): _fingerprint(t) for t in tensors}
        self._original_rows = {id(t): _row_fingerprints(t) for t in tensors if t.dim() == 2}
        self.model = self.wrap(backbone.model)
        self.head = make_head(self.head_scheme, backbone.hidden_size, stream.num_classes)

    def wrap(self, model: nn.Module) -> nn.Module:
        """Return the model to train (inject adapters, set ``requires_grad``)."""
        return model

    def begin_task(self, task: Task, batches: Batches) -> None:
        self.head.begin_task(task)

    def training_tasks(self, task: Task, seen: list[Task]) -> list[Task]:
        """Tasks whose training data this task trains on (continual methods: the task alone)."""
        return [task]

    def features(self, batch: Batch) -> torch.Tensor:
        return self.backbone.features(batch, self.model)

    def loss(self, batch: Batch) -> torch.Tensor:
        return self.head.loss(self.features(batch), batch["labels"])

    def forward(self, batch: Batch) -> torch.Tensor:  # what accelerate / DDP wrap
        return self.loss(batch)

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        return (p for p in self.model.parameters() if p.requires_grad)

    def trainable_parameters(self) -> list[dict[str, Any]]:
        """Optimiser parameter groups: the backbone's trainable part, then the head."""
        backbone = list(self.backbone_parameters())
        head = [p for p in self.head.parameters() if p.requires_grad]
        if not backbone and not self.head.learns_alone:
            return []
        groups = [{"params": backbone, "lr": self.lr}, {"params": head, "lr": self.head_lr}]
        return [g for g in groups if g["params"]]

    def end_task(self, task: Task, batches: Batches) -> None:
        self.head.end_task(task, batches, self.features)

    def predict(self, batch: Batch, task_id: int | None = None) -> torch.Tensor:
        """Logits over every class of the stream (``-inf`` for unseen ones). Methods that set
        ``task_aware_prediction`` use ``task_id`` (task-incremental evaluation)."""
        return self.head.logits(self.features(batch))

    # --- checkpoints and costs -------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"head": self.head.state()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.head.load_state(state["head"])

    def _changed(self) -> Iterator[tuple[str, torch.Tensor]]:
        for name, t in self.state_dict(keep_vars=True).items():
            fp = self._original.get(id(t))
            if fp is None or fp != _fingerprint(t):
                yield name, t

    def stored_tensors(self) -> dict[str, torch.Tensor]:
        """Tensors needed beyond the untouched backbone to rebuild this method: new ones
        (adapters, heads, prototypes) and backbone tensors whose values changed."""
        return {name: t.detach() for name, t in self._changed()}

    def backbone_tensor_names(self) -> set[str]:
        """Names (in ``state_dict``) of the tensors that come from the pretrained backbone."""
        return {n for n, t in self.state_dict(keep_vars=True).items() if id(t) in self._original}

    def stored_parameters(self) -> int:
        """Numbers needed beyond the untouched backbone: new tensors in full and, of a changed
        backbone matrix, its changed rows plus one index per row where that is smaller (a
        row-sparse difference: PLATE changes ``r`` rows of each targeted matrix). Tensors named
        in ``recomputed_tensors`` are not counted."""
        total = 0
        for name, t in self._changed():
            if any(part in name for part in self.recomputed_tensors):
                continue
            rows = self._original_rows.get(id(t))
            changed = 0 if rows is None else int((rows != _row_fingerprints(t)).any(1).sum())
            total += t.numel() if rows is None else min(t.numel(), changed * (t.shape[1] + 1))
        return total


@torch.no_grad()
def _fingerprint(t: torch.Tensor) -> tuple[float, ...]:
    """Cheap summary that any training step or merge changes (sums in float64)."""
    x = t.detach().flatten().double()
    return (float(x.sum()), float((x * x).sum()), float(x[::7].sum()), float(x[1::3].sum()))


@torch.no_grad()
def _row_fingerprints(t: torch.Tensor) -> torch.Tensor:
    """Per-row summary of a matrix (float64 sums), to count the rows a method changed."""
    x = t.detach().double()
    return torch.stack([x.sum(1), (x * x).sum(1), x[:, ::7].sum(1)], 1)


REGISTRY: dict[str, type[ContinualMethod]] = {}


def register(cls: type[ContinualMethod]) -> type[ContinualMethod]:
    REGISTRY[cls.name] = cls
    return cls


def get_method_class(name: str) -> type[ContinualMethod]:
    if name not in REGISTRY:
        raise RetainError(f"unknown method '{name}': choose one of {', '.join(REGISTRY)} "
                          "(`retain list`)")
    return REGISTRY[name]
