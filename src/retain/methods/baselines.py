"""The baselines every comparison needs: seq-ft, seq-lora, frozen-ncm, joint."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from retain.data.stream import Task
from retain.errors import RetainError
from retain.methods.base import ContinualMethod, MethodConfig, register


@dataclass
class NoConfig(MethodConfig):
    """This method has no options."""


@dataclass
class LoraOptions(MethodConfig):
    rank: int = field(default=8, metadata={"help": "LoRA rank r"})
    alpha: float = field(default=16.0, metadata={"help": "LoRA scaling numerator (scale alpha/r)"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the LoRA input"})
    target_modules: list[str] = field(
        default_factory=lambda: ["query", "value"],
        metadata={"help": "names (suffixes) of the nn.Linear modules to adapt, or 'all-linear'"})


def linear_module_names(model: nn.Module) -> list[str]:
    """Distinct trailing names of a model's linear layers, for error messages."""
    names = set()
    for n, m in model.named_modules():
        if isinstance(m, nn.Linear):
            parts = n.split(".")
            names.add(".".join(parts[-2:]) if parts[-1] == "dense" and len(parts) > 1
                      else parts[-1])
    return sorted(names)


def unknown_targets(model: nn.Module, targets: list[str]) -> RetainError:
    """The error for target modules that match no linear layer, listing the ones there are."""
    return RetainError(f"target modules {list(targets)} not found in the backbone; its linear "
                       f"layers are: {', '.join(linear_module_names(model))}")


def peft_targets(targets: list[str]) -> list[str] | str:
    """A method option's target list as ``peft`` takes it (``'all-linear'`` is a string)."""
    targets = list(targets)
    return "all-linear" if targets == ["all-linear"] else targets


def get_peft_model_or_explain(model: nn.Module, config) -> nn.Module:
    """``peft.get_peft_model``, with unknown target modules reported as a ``RetainError`` that
    lists the model's linear layers."""
    from peft import get_peft_model

    try:
        return get_peft_model(model, config)
    except ValueError as e:
        if "not found" not in str(e) and "Target modules" not in str(e):
            raise
        targets = config.target_modules
        raise unknown_targets(model, [targets] if isinstance(targets, str) else sorted(targets)
                              ) from None


def inject_lora(model: nn.Module, cfg: LoraOptions) -> nn.Module:
    """A ``peft`` LoRA on ``cfg.target_modules``; only the adapters train."""
    from peft import LoraConfig

    return get_peft_model_or_explain(model, LoraConfig(
        r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
        target_modules=peft_targets(cfg.target_modules)))


@register
class SeqFT(ContinualMethod):
    name = "seq-ft"
    description = "sequential full fine-tuning of the whole backbone (lower bound on forgetting)"
    config_class = NoConfig
    default_lr = 2e-5

    def wrap(self, model: nn.Module) -> nn.Module:
        return model.requires_grad_(True)


@register
class SeqLoRA(ContinualMethod):
    name = "seq-lora"
    description = "one peft LoRA adapter trained on task after task (the naive PEFT baseline)"
    config_class = LoraOptions
    default_lr = 5e-4

    def wrap(self, model: nn.Module) -> nn.Module:
        return inject_lora(model, self.config)


@register
class FrozenNCM(ContinualMethod):
    name = "frozen-ncm"
    description = "no training: cosine to per-class mean features of the frozen backbone"
    config_class = NoConfig
    default_head = "prototypes"

    def wrap(self, model: nn.Module) -> nn.Module:
        return model.requires_grad_(False)


@register
class Joint(SeqLoRA):
    name = "joint"
    description = ("LoRA trained once on all tasks' data at the last task (upper bound, not "
                   "continual: only the final accuracy is meaningful)")
    continual = False

    def training_tasks(self, task: Task, seen: list[Task]) -> list[Task]:
        return list(seen) if task.index == self.num_tasks - 1 else []

    def prepare(self, backbone, stream) -> None:
        if self.head_scheme != "growing":
            raise RetainError(f"joint trains all tasks at once and needs --head growing (a "
                              f"'{self.head_scheme}' head trains on one task's classes)")
        super().prepare(backbone, stream)
