"""PLATE for a stream of tasks: before each task a PLATE adapter (``B`` and ``Q`` from the
weights, no data) is injected with ``peft``; after it, ``s B A Q^T`` is merged into ``W``.

``recompute='original'`` (default): the first task's ``B`` and ``Q`` stay, and ``A`` restarts
from zero after each merge. ``recompute='merged'``: the next task's ``B`` and ``Q`` come from the
merged weights (a fresh adapter each task)."""

from __future__ import annotations

import time

from peft import PeftModel, get_peft_model
from torch import nn

from retain.data.stream import Task
from retain.methods.base import Batches, ContinualMethod, register
from retain.methods.baselines import unknown_targets
from retain.methods.plate.config import PlateOptions
from retain.methods.plate.layer import PlateLinear


@register
class Plate(ContinualMethod):
    name = "plate"
    description = ("PLATE: only A trains in dW = s B A Q^T, with redundant neurons B and a "
                   "low-energy input subspace Q from the weights alone; merged after each task")
    config_class = PlateOptions
    default_head = "growing"
    default_lr = 5e-4
    config: PlateOptions

    def wrap(self, model: nn.Module) -> nn.Module:
        self.selection_seconds: list[float] = []
        return model.requires_grad_(False)

    def inject(self) -> None:
        """A fresh adapter whose ``B`` and ``Q`` come from the current weights."""
        start = time.perf_counter()
        try:
            self.model = get_peft_model(self.model, self.config.peft_config())
        except ValueError as e:
            if "not found" not in str(e) and "Target modules" not in str(e):
                raise
            raise unknown_targets(self.model, self.config.target_modules) from None
        self.selection_seconds.append(time.perf_counter() - start)

    def plate_layers(self) -> list[PlateLinear]:
        return [m for m in self.model.modules() if isinstance(m, PlateLinear)]

    def begin_task(self, task: Task, batches: Batches) -> None:
        super().begin_task(task, batches)
        if not isinstance(self.model, PeftModel):
            self.inject()

    def end_task(self, task: Task, batches: Batches) -> None:
        super().end_task(task, batches)
        if self.config.recompute == "merged":
            self.model = self.model.merge_and_unload()
        else:
            for layer in self.plate_layers():
                layer.absorb("default")

    def state(self) -> dict:
        return {**super().state(), "adapter": isinstance(self.model, PeftModel),
                "selection_seconds": self.selection_seconds}

    def load_state(self, state: dict) -> None:
        super().load_state(state)
        if state["adapter"]:  # recompute='original': the adapter lives on (weights load next)
            self.inject()
        self.selection_seconds = list(state["selection_seconds"])
