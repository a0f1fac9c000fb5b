"""Function-preserving growth: ``config.py`` the knobs, ``layer.py`` the widened MLP and the
surgery, ``method.py`` the lifecycle."""

from retain.methods.grow.config import GrowOptions
from retain.methods.grow.method import Grow

__all__ = ["Grow", "GrowOptions"]
