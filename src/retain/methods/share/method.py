"""Share for a stream of tasks: a ``peft`` Share adapter injected in place before task 1 (a
rank-``p`` LoRA); after each task ``consolidate()`` folds it into the shared bases and re-projects
every task's coefficients. Prediction with a task id uses that task's coefficients (or the latest,
with ``task_coefficients=current``), without one the latest."""

from __future__ import annotations

import torch

from retain.data.stream import Task
from retain.methods.base import Batch, Batches, ContinualMethod, lora_numbers, register
from retain.methods.peft_glue import make_tuner
from retain.methods.share.config import ShareOptions
from retain.methods.share.layer import ShareLinear
from retain.methods.share.model import ShareModel, register_with_peft


@register
class Share(ContinualMethod):
    name = "share"
    config_class = ShareOptions
    config: ShareOptions

    def prepare(self, backbone, stream) -> None:
        self.model.requires_grad_(False)
        register_with_peft()
        self.tuner = make_tuner(ShareModel, self.model, self.config.peft_config(self.model),
                                # k past a layer's width is clipped to it (its basis has
                                # no more directions); p sizes each task's factors
                                ranks={"p": self.config.p}, method="share")

    def share_layers(self) -> dict[str, ShareLinear]:
        return self.tuner.share_layers()  # the tuner wraps self.model: the same names

    def end_task(self, task: Task, batches: Batches) -> None:
        super().end_task(task, batches)
        self.tuner.consolidate()

    def predict(self, batch: Batch, task_id: int | None = None) -> torch.Tensor:
        layers = list(self.share_layers().values())
        for layer in layers:
            layer.use_task = task_id if self.config.task_coefficients == "own" else None
        try:
            return super().predict(batch, task_id)
        finally:
            for layer in layers:
                layer.use_task = None

    def model_tensors(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.model.state_dict().items() if "share_" in k}

    def lora_per_task(self) -> int:
        return lora_numbers(self.model, list(self.share_layers()), self.config.p)
