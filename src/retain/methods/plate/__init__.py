"""PLATE (plasticity-tunable efficient adapters): a ``peft`` method and a continual method."""

from retain.methods.plate.config import PlateConfig, PlateOptions
from retain.methods.plate.layer import PlateLayer, PlateLinear
from retain.methods.plate.model import PlateModel, register_with_peft

register_with_peft()

from retain.methods.plate.method import Plate  # noqa: E402  (needs the peft registration)

__all__ = ["Plate", "PlateConfig", "PlateLayer", "PlateLinear", "PlateModel", "PlateOptions"]
