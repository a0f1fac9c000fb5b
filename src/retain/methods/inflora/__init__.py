"""InfLoRA (Liang & Li, CVPR 2024): interference-free low-rank adaptation."""

from retain.methods.inflora.config import InfLoRAConfig
from retain.methods.inflora.memory import SubspaceMemory
from retain.methods.inflora.method import InfLoRA

__all__ = ["InfLoRA", "InfLoRAConfig", "SubspaceMemory"]
