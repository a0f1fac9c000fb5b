"""Share as a ``peft`` method: ``get_peft_model(model, ShareConfig(...))``, ``target_modules``,
``save_pretrained`` / ``PeftModel.from_pretrained`` and ``merge_and_unload`` behave as for LoRA;
``consolidate()`` is the basis update after a task."""

from __future__ import annotations

import torch

from retain.methods.peft_method import MethodTuner, add_peft_type
from retain.methods.share.config import PEFT_TYPE, ShareConfig
from retain.methods.share.layer import ShareLayer, ShareLinear


class ShareModel(MethodTuner):
    prefix: str = "share_"
    tuner_layer_cls = ShareLayer
    layer_cls = ShareLinear

    def share_layers(self) -> dict[str, ShareLinear]:
        return {n: m for n, m in self.model.named_modules() if isinstance(m, ShareLinear)}

    def consolidate(self, adapter_name: str = "default") -> None:
        """Fold the current task into the shared bases of every layer (the SVD update and the
        re-projection of all stored coefficients); the next task starts from its
        coefficients."""
        layers = self.share_layers()
        seed = self.peft_config[adapter_name].seed
        tasks = next(iter(layers.values())).tasks(adapter_name)
        gen = torch.Generator().manual_seed(seed * 1_000_003 + tasks)
        for layer in layers.values():
            layer.consolidate(adapter_name, gen)


def register_with_peft() -> None:
    """Make ``SHARE`` a ``peft`` method type (once)."""
    add_peft_type(PEFT_TYPE, ShareConfig, ShareModel, ShareModel.prefix)
