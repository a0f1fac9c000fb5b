"""Share as a ``peft`` method: ``get_peft_model(model, ShareConfig(...))``, ``target_modules``,
``save_pretrained`` / ``PeftModel.from_pretrained`` and ``merge_and_unload`` behave as for LoRA;
``consolidate()`` is the basis update after a task."""

from __future__ import annotations

from typing import Any

import torch
from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer

from retain.methods.peft_types import add_peft_type
from retain.methods.share.config import PEFT_TYPE, ShareConfig
from retain.methods.share.layer import ShareLayer, ShareLinear


class ShareModel(BaseTuner):
    prefix: str = "share_"
    tuner_layer_cls = ShareLayer
    target_module_mapping: dict[str, list[str]] = {}

    def _create_and_replace(self, config: ShareConfig, adapter_name: str, target: Any,
                            target_name: str, parent: torch.nn.Module, current_key: str,
                            **kwargs: Any) -> None:
        if isinstance(target, ShareLinear):
            target.update_layer(adapter_name, config)
            return
        base = target.get_base_layer() if isinstance(target, BaseTunerLayer) else target
        if not isinstance(base, torch.nn.Linear):
            raise TypeError(f"Share adapts nn.Linear layers; '{current_key}' is a "
                            f"{type(base).__name__}")
        new = ShareLinear(target, adapter_name, config)
        if adapter_name not in self.active_adapters:
            new.requires_grad_(False)
        self._replace_module(parent, target_name, new, target)

    @staticmethod
    def _prepare_adapter_config(peft_config: ShareConfig, model_config: dict) -> ShareConfig:
        if peft_config.target_modules is None:
            raise ValueError("ShareConfig needs target_modules (names of nn.Linear layers, or "
                             "'all-linear')")
        return peft_config

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
