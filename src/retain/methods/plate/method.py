"""PLATE for a stream of tasks: before each task a PLATE adapter (``B`` and ``Q`` from the
weights, no data) is injected in place with a ``peft`` tuner; after it, ``s B A Q^T`` is merged
into ``W``.

``recompute='original'`` (default): the first task's ``B`` and ``Q`` stay, and ``A`` restarts
from zero after each merge. ``recompute='merged'``: the next task's ``B`` and ``Q`` come from the
merged weights (a fresh adapter each task).

What it stores: the ``A`` matrices and, of each targeted ``W``, the rows that merges changed
(``B``'s rows, recorded per layer) with one index each; ``Q`` and the indices of the live adapter
are recomputed from the weights (checkpoints keep them for an exact resume)."""

from __future__ import annotations

import torch
from peft.tuners.tuners_utils import BaseTunerLayer

from retain.data.stream import Task
from retain.methods.base import Batches, ContinualMethod, Rows, lora_numbers, register
from retain.methods.peft_glue import make_tuner
from retain.methods.plate.config import PlateOptions
from retain.methods.plate.layer import PlateLinear, deferred_selection
from retain.methods.plate.model import PlateModel, register_with_peft


@register
class Plate(ContinualMethod):
    name = "plate"
    config_class = PlateOptions
    config: PlateOptions

    def prepare(self, backbone, stream) -> None:
        self.model.requires_grad_(False)
        self.touched: dict[str, list[int]] = {}  # layer -> rows of W changed by merges

    def inject(self) -> None:
        """A fresh adapter whose ``B`` and ``Q`` come from the current weights."""
        register_with_peft()
        self.tuner = make_tuner(PlateModel, self.model, self.config.peft_config(self.model))

    def plate_layers(self) -> dict[str, PlateLinear]:
        return {n: m for n, m in self.model.named_modules() if isinstance(m, PlateLinear)}

    def begin_task(self, task: Task, batches: Batches) -> None:
        super().begin_task(task, batches)
        if self.tuner is None:
            self.inject()

    def end_task(self, task: Task, batches: Batches) -> None:
        super().end_task(task, batches)
        for name, layer in self.plate_layers().items():
            rows = set(self.touched.get(name, [])) | set(layer.plate_index["default"].tolist())
            self.touched[name] = sorted(rows)
        if self.config.recompute == "merged":
            # the next task chooses B and Q again, from the merged weights. With 'original'
            # the adapter stays after the last task too (A = 0: it adds nothing), so that a
            # later session (`retain learn`) goes on with the same B and Q
            self.tuner.merge_and_unload()
            self.tuner = None
        else:
            for layer in self.plate_layers().values():
                layer.absorb("default")

    def _weight_name(self, layer: str) -> str:
        module = self.model.get_submodule(layer)
        return (f"{layer}.base_layer.weight" if isinstance(module, BaseTunerLayer)
                else f"{layer}.weight")

    def model_tensors(self) -> dict[str, torch.Tensor]:
        """The ``A`` matrices and, of each targeted ``W``, the rows merges changed (stored as
        ``<W>.rows``; their indices are in the state). The live adapter's ``B`` (its row index)
        and ``Q`` come from the weights without data; checkpoints keep them for an exact
        resume (a choice made again on another device or thread count can differ in the null
        space), ``stored_parameters`` does not count them."""
        sd = self.model.state_dict()
        out: dict[str, torch.Tensor | Rows] = {k: v for k, v in sd.items() if ".plate_" in k}
        for layer, rows in self.touched.items():
            weight = self._weight_name(layer)
            out[weight] = Rows(sd[weight][torch.as_tensor(rows, device=sd[weight].device)],
                               rows)
        return out

    def lora_per_task(self) -> int:
        return lora_numbers(self.model, list(self.touched), self.config.r)

    def state(self) -> dict:
        return {**super().state(), "adapter": self.tuner is not None, "touched": self.touched}

    def load_state(self, state: dict) -> None:
        super().load_state(state)
        self.touched = {k: list(v) for k, v in state["touched"].items()}
        if state["adapter"]:  # recompute='original': the adapter lives on; its B and Q are
            with deferred_selection():  # the checkpoint's, loaded next: none chosen here
                self.inject()
