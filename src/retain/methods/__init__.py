"""Every continual method, one module or package each, registered by name."""

from retain.methods import baselines, inflora, plate  # noqa: F401  (registers the methods)
from retain.methods.base import REGISTRY, ContinualMethod, MethodConfig, get_method_class

__all__ = ["REGISTRY", "ContinualMethod", "MethodConfig", "get_method_class"]
