"""Share (one shared low-rank subspace for all tasks): a ``peft`` method and a continual
method."""

from retain.methods.share.config import ShareConfig, ShareOptions
from retain.methods.share.layer import ShareLayer, ShareLinear
from retain.methods.share.model import ShareModel, register_with_peft

register_with_peft()

from retain.methods.share.method import Share  # noqa: E402  (needs the peft registration)

__all__ = ["Share", "ShareConfig", "ShareLayer", "ShareLinear", "ShareModel", "ShareOptions"]
