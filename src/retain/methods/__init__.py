"""Every continual method, one module or package each, registered by name."""

from retain.methods import baselines, grow, inflora, ntk_cl, plate, share  # noqa: F401  (registers them)
from retain.methods.base import REGISTRY, ContinualMethod, MethodConfig, get_method_class

__all__ = ["REGISTRY", "ContinualMethod", "MethodConfig", "get_method_class"]
