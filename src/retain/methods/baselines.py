"""The baselines every comparison needs: seq-ft, seq-lora, first-session, frozen-ncm, joint."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from retain.data.stream import Task
from retain.errors import RetainError
from retain.methods.base import ContinualMethod, MethodConfig, lora_numbers, register


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


# the same projection under the names of BERT / ViT and of Llama-style decoders
ALIASES = {"query": "q_proj", "key": "k_proj", "value": "v_proj", "attention.output.dense":
           "o_proj", "intermediate.dense": "up_proj", "output.dense": "down_proj"}
ALIASES.update({v: k for k, v in ALIASES.items()})


def _matches(model: nn.Module, suffix: str) -> bool:
    return any(isinstance(m, nn.Linear) and (n == suffix or n.endswith("." + suffix))
               for n, m in model.named_modules())


def peft_targets(targets: list[str], model: nn.Module | None = None) -> list[str] | str:
    """A method option's target list as ``peft`` takes it (``'all-linear'`` is a string). With
    ``model``, a name that matches no linear layer is replaced by its alias from the other
    naming family when that one matches (``query`` -> ``q_proj`` on a Llama model, and back),
    so the defaults serve encoders and decoders alike."""
    targets = list(targets)
    if targets == ["all-linear"]:
        return "all-linear"
    if model is None:
        return targets
    return [ALIASES[t] if not _matches(model, t) and t in ALIASES and _matches(model, ALIASES[t])
            else t for t in targets]


def make_tuner(tuner_cls, model: nn.Module, config, adapter: str = "default"):
    """A ``peft`` tuner (``LoraModel``, ``PlateModel``, ...) injected into ``model`` in place,
    with unknown target modules reported as a ``RetainError`` that lists the linear layers."""
    try:
        return tuner_cls(model, config, adapter)
    except ValueError as e:
        if "not found" not in str(e) and "Target modules" not in str(e):
            raise
        targets = config.target_modules
        raise unknown_targets(model, [targets] if isinstance(targets, str) else sorted(targets)
                              ) from None


def inject_lora(model: nn.Module, cfg: LoraOptions):
    """A ``peft`` LoRA on ``cfg.target_modules``, in place; only the adapters train."""
    from peft import LoraConfig, LoraModel

    tuner = make_tuner(LoraModel, model, LoraConfig(
        r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
        target_modules=peft_targets(cfg.target_modules, model)))
    return tuner  # peft marks the adapters alone as trainable


def lora_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if "lora_" in k}


@register
class SeqFT(ContinualMethod):
    name = "seq-ft"
    config_class = NoConfig
    default_lr = 2e-5

    def wrap(self, model: nn.Module) -> None:
        model.requires_grad_(True)

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
    adapter_holds_all = True
    default_lr = 5e-4

    def wrap(self, model: nn.Module) -> None:
        self.tuner = inject_lora(model, self.config)

    def model_tensors(self) -> dict[str, torch.Tensor]:
        return lora_tensors(self.model)

    def lora_per_task(self) -> int:
        layers = [n for n, m in self.model.named_modules() if hasattr(m, "lora_A")
                  and "default" in m.lora_A]
        return lora_numbers(self.model, layers, self.config.rank)


@register
class LoraPerTask(SeqLoRA):
    name = "lora-per-task"
    task_aware_prediction = True

    def _adapter(self, index: int) -> str:
        return "default" if index == 0 else f"task{index}"

    def _add(self, index: int) -> None:
        name = self._adapter(index)
        self.tuner.peft_config[name] = self.tuner.peft_config["default"]
        self.tuner.inject_adapter(self.model, name)
        self.tuner.set_adapter(name)  # only this task's adapter is active and trains
        self.adapters = index + 1

    def wrap(self, model: nn.Module) -> None:
        super().wrap(model)
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

    def wrap(self, model: nn.Module) -> None:
        model.requires_grad_(False)


@register
class Joint(SeqLoRA):
    name = "joint"
    continual = False

    def training_tasks(self, task: Task, seen: list[Task]) -> list[Task]:
        return list(seen) if task.index == self.num_tasks - 1 else []

    def prepare(self, backbone, stream) -> None:
        if stream.kind == "classification" and self.head_scheme != "growing":
            raise RetainError(f"joint trains all tasks at once and needs --head growing (a "
                              f"'{self.head_scheme}' head trains on one task's classes)")
        super().prepare(backbone, stream)
