"""PLATE as a ``peft`` method: ``get_peft_model(model, PlateConfig(...))``, ``target_modules``,
``save_pretrained`` / ``PeftModel.from_pretrained`` and ``merge_and_unload`` behave as for LoRA."""

from __future__ import annotations

from retain.methods.peft_method import MethodTuner, add_peft_type
from retain.methods.plate.config import PEFT_TYPE, PlateConfig
from retain.methods.plate.layer import PlateLayer, PlateLinear


class PlateModel(MethodTuner):
    prefix: str = "plate_"
    tuner_layer_cls = PlateLayer
    layer_cls = PlateLinear


def register_with_peft() -> None:
    """Make ``PLATE`` a ``peft`` method type (once)."""
    add_peft_type(PEFT_TYPE, PlateConfig, PlateModel, PlateModel.prefix)
