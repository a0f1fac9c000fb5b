"""PLATE as a ``peft`` method: ``get_peft_model(model, PlateConfig(...))``, ``target_modules``,
``save_pretrained`` / ``PeftModel.from_pretrained`` and ``merge_and_unload`` behave as for LoRA."""

from __future__ import annotations

from typing import Any

import torch
from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer

from retain.methods.peft_types import add_peft_type
from retain.methods.plate.config import PEFT_TYPE, PlateConfig
from retain.methods.plate.layer import PlateLayer, PlateLinear


class PlateModel(BaseTuner):
    prefix: str = "plate_"
    tuner_layer_cls = PlateLayer
    target_module_mapping: dict[str, list[str]] = {}

    def _create_and_replace(self, config: PlateConfig, adapter_name: str, target: Any,
                            target_name: str, parent: torch.nn.Module, current_key: str,
                            **kwargs: Any) -> None:
        if isinstance(target, PlateLinear):
            target.update_layer(adapter_name, config)
            return
        base = target.get_base_layer() if isinstance(target, BaseTunerLayer) else target
        if not isinstance(base, torch.nn.Linear):
            raise TypeError(f"PLATE adapts nn.Linear layers; '{current_key}' is a "
                            f"{type(base).__name__}")
        new = PlateLinear(target, adapter_name, config)
        if adapter_name not in self.active_adapters:
            new.requires_grad_(False)
        self._replace_module(parent, target_name, new, target)

    @staticmethod
    def _prepare_adapter_config(peft_config: PlateConfig, model_config: dict) -> PlateConfig:
        if peft_config.target_modules is None:
            raise ValueError("PlateConfig needs target_modules (names of nn.Linear layers, or "
                             "'all-linear')")
        return peft_config


def register_with_peft() -> None:
    """Make ``PLATE`` a ``peft`` method type (once)."""
    add_peft_type(PEFT_TYPE, PlateConfig, PlateModel, PlateModel.prefix)
