"""PLATE for a stream of tasks: before each task a PLATE adapter (``B`` and ``Q`` from the
weights, no data) is injected with ``peft``; after it, ``s B A Q^T`` is merged into ``W``.

``recompute='original'`` (default): the first task's ``B`` and ``Q`` stay, and ``A`` restarts
from zero after each merge. ``recompute='merged'``: the next task's ``B`` and ``Q`` come from the
merged weights (a fresh adapter each task)."""

from __future__ import annotations

from peft import PeftModel
from torch import nn

from retain.data.stream import Task
from retain.methods.base import Batches, ContinualMethod, register
from retain.methods.baselines import get_peft_model_or_explain
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
    recomputed_tensors = ("plate_Q", "plate_index")  # B and Q: from the weights, no data
    config: PlateOptions

    def wrap(self, model: nn.Module) -> nn.Module:
        return model.requires_grad_(False)

    def inject(self) -> None:
        """A fresh adapter whose ``B`` and ``Q`` come from the current weights."""
        self.model = get_peft_model_or_explain(self.model, self.config.peft_config())

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
        return {**super().state(), "adapter": isinstance(self.model, PeftModel)}

    def load_state(self, state: dict) -> None:
        super().load_state(state)
        if state["adapter"]:  # recompute='original': the adapter lives on (weights load next)
            self.inject()
