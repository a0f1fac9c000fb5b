"""The baselines every comparison needs: seq-ft, seq-lora, first-session, frozen-ncm, joint."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from retain.data.stream import Task
from retain.errors import RetainError
from retain.methods.base import ContinualMethod, MethodConfig, lora_numbers, register
from retain.methods.peft_glue import make_tuner, peft_targets


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

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise RetainError(f"LoRA rank must be 1 or more, got {self.rank}")
        if not 0 <= self.dropout < 1:
            raise RetainError(f"LoRA dropout must lie in [0, 1), got {self.dropout}")
        if self.alpha == 0:
            raise RetainError("LoRA alpha must be non-zero (the update would vanish)")


def inject_lora(model: nn.Module, cfg: LoraOptions):
    """A ``peft`` LoRA on ``cfg.target_modules``, in place; only the adapters train."""
    from peft import LoraConfig, LoraModel

    return make_tuner(LoraModel, model, LoraConfig(  # peft trains the adapters alone
        r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
        target_modules=peft_targets(cfg.target_modules, model)), ranks={"rank": cfg.rank})


def lora_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if "lora_" in k}


@dataclass
class FTOptions(MethodConfig):
    top_blocks: int = field(default=0, metadata={
        "help": "0: every weight of the backbone trains; N: only its last N transformer blocks "
                "(embeddings, earlier blocks, the final norm and a language model's output "
                "layer stay frozen): the top-N freeze baseline"})

    def __post_init__(self) -> None:
        if self.top_blocks < 0:
            raise RetainError(f"seq-ft top_blocks must be 0 (all) or more, got "
                              f"{self.top_blocks}")


@register
class SeqFT(ContinualMethod):
    name = "seq-ft"
    config_class = FTOptions

    def prepare(self, backbone, stream) -> None:
        n = self.config.top_blocks
        self.model.requires_grad_(not n)
        if n:
            from retain.backbones import transformer_blocks

            blocks = transformer_blocks(self.model)
            if blocks is None or n > len(blocks):
                have = "no transformer blocks" if blocks is None else f"{len(blocks)} blocks"
                raise RetainError(f"seq-ft top_blocks={n}: the backbone has {have}; give at "
                                  "most that many (0 trains all)")
            blocks[len(blocks) - n:].requires_grad_(True)

    def model_tensors(self) -> dict[str, torch.Tensor]:
        out, seen = {}, set()
        for k, v in self.model.state_dict().items():  # tied weights once
            if v.untyped_storage().data_ptr() not in seen:
                seen.add(v.untyped_storage().data_ptr())
                out[k] = v
        return out


@register
class SeqLoRA(ContinualMethod):
    name = "seq-lora"
    config_class = LoraOptions

    def prepare(self, backbone, stream) -> None:
        self.tuner = inject_lora(self.model, self.config)

    def model_tensors(self) -> dict[str, torch.Tensor]:
        return lora_tensors(self.model)

    def lora_per_task(self) -> int:
        layers = [n for n, m in self.model.named_modules() if hasattr(m, "lora_A")
                  and "default" in m.lora_A]
        return lora_numbers(self.model, layers, self.config.rank)


@register
class LoraPerTask(SeqLoRA):
    name = "lora-per-task"

    def _adapter(self, index: int) -> str:
        return "default" if index == 0 else f"task{index}"

    def _add(self, index: int) -> None:
        name = self._adapter(index)
        self.tuner.peft_config[name] = self.tuner.peft_config["default"]
        self.tuner.inject_adapter(self.model, name)
        self.tuner.set_adapter(name)  # only this task's adapter is active and trains
        self.adapters = index + 1

    def prepare(self, backbone, stream) -> None:
        super().prepare(backbone, stream)
        self.adapters = 1

    def begin_task(self, task: Task, batches) -> None:
        super().begin_task(task, batches)
        if task.index >= self.adapters:
            self._add(task.index)

    def predict(self, batch, task_id: int | None = None) -> torch.Tensor:
        if task_id is None or task_id >= self.adapters:
            return super().predict(batch)
        latest = self._adapter(self.adapters - 1)
        self.tuner.set_adapter(self._adapter(task_id))
        try:
            return super().predict(batch)
        finally:
            self.tuner.set_adapter(latest)

    def state(self) -> dict:
        return {**super().state(), "adapters": self.adapters}

    def load_state(self, state: dict) -> None:
        super().load_state(state)
        for index in range(1, state["adapters"]):
            self._add(index)


@register
class FirstSession(SeqLoRA):
    name = "first-session"

    def end_task(self, task: Task, batches) -> None:
        super().end_task(task, batches)
        self.model.requires_grad_(False)  # the adapter is frozen from now on

    def load_state(self, state: dict) -> None:
        super().load_state(state)
        self.model.requires_grad_(False)  # a checkpoint is written after a task ends


@register
class FrozenNCM(ContinualMethod):
    name = "frozen-ncm"
    config_class = NoConfig

    def prepare(self, backbone, stream) -> None:
        self.model.requires_grad_(False)


@register
class Joint(SeqLoRA):
    """Registered ``continual=False``: the engine trains it on every task at the last one."""

    name = "joint"

    def prepare(self, backbone, stream) -> None:
        if self.run_head.name not in ("growing", "none"):  # none: a kind without a head
            raise RetainError(f"joint trains all tasks at once and needs --head growing (a "
                              f"'{self.run_head.name}' head trains on one task's classes)")
        super().prepare(backbone, stream)
