"""Run configuration: the run config dataclass, and resolving it for saving."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from retain.errors import RetainError
from retain.profiles import get_profile

SCENARIOS = ("class", "task", "domain")
HEADS = ("task-heads", "growing", "prototypes")


@dataclass
class RunConfig:
    """Everything one run needs; saved, fully resolved, with its results."""

    method: str = field(default="seq-lora", metadata={"help": "method name (`retain list`)"})
    benchmark: str | None = field(
        default="wordnet45", metadata={"help": "built-in benchmark; None when `data` is given"})
    data: str | None = field(
        default=None, metadata={"help": "CSV or JSON Lines file with `text` and `label` columns"})
    profile: str = field(default="quick", metadata={"help": "smoke, quick or full"})
    scenario: str = field(default="class", metadata={"help": "class, task or domain incremental"})
    classes_per_task: int | None = field(
        default=None, metadata={"help": "classes per task for user data (default 5)"})
    class_order: list[int] | None = field(
        default=None, metadata={"help": "explicit class order (indices of the sorted labels)"})
    class_order_seed: int | None = field(
        default=None, metadata={"help": "seed of the class-order permutation (wordnet45: 1993)"})
    seed: int = field(default=0, metadata={"help": "training seed (shuffling, init, dropout)"})
    backbone: str | None = field(
        default=None, metadata={"help": "packaged name (minilm), local path or hub id"})
    pooling: str = field(default="auto", metadata={"help": "auto, mean, cls or last"})
    head: str | None = field(
        default=None, metadata={"help": "task-heads, growing or prototypes (default: method's)"})
    epochs: int | None = field(default=None, metadata={"help": "override of the profile's epochs"})
    batch_size: int | None = field(default=None, metadata={"help": "override of the profile"})
    max_length: int | None = field(default=None, metadata={"help": "override of the profile"})
    lr: float | None = field(default=None, metadata={"help": "learning rate (default: method's)"})
    head_lr: float | None = field(
        default=None, metadata={"help": "learning rate of linear heads (default: lr)"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    mixed_precision: str = field(default="no", metadata={"help": "no, fp16 or bf16 (accelerate)"})
    cpu: bool = field(default=False, metadata={"help": "force the CPU even if a GPU is present"})
    retention: bool = field(
        default=True, metadata={"help": "measure retained pretrained capability at the end"})
    retention_limit: int | None = field(
        default=None, metadata={"help": "pairs per similarity set (None: all; smoke: 60)"})
    method_options: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "overrides of the method's config fields"})
    out: str = field(default="runs/latest", metadata={"help": "output directory"})

    def resolved(self) -> RunConfig:
        """Fill every default that depends on the profile, benchmark or method."""
        from retain.methods import get_method_class

        cls = get_method_class(self.method)
        prof = get_profile(self.profile)
        if self.scenario not in SCENARIOS:
            raise RetainError(f"unknown scenario '{self.scenario}': choose one of "
                              f"{', '.join(SCENARIOS)}")
        if self.data is None and self.benchmark is None:
            raise RetainError("nothing to run on: give --benchmark NAME or --data FILE")
        head = self.head or cls.default_head
        if head not in HEADS:
            raise RetainError(f"unknown head '{head}': choose one of {', '.join(HEADS)}")
        method_config = cls.config_class.from_options(self.method_options)
        lr = self.lr if self.lr is not None else cls.default_lr
        return dataclasses.replace(
            self,
            benchmark=None if self.data else self.benchmark,
            backbone=self.backbone or "minilm",
            head=head,
            epochs=self.epochs if self.epochs is not None else prof.epochs,
            batch_size=self.batch_size if self.batch_size is not None else prof.batch_size,
            max_length=self.max_length if self.max_length is not None else prof.max_length,
            lr=lr,
            head_lr=self.head_lr if self.head_lr is not None else lr,
            class_order_seed=self._order_seed(),
            retention_limit=(self.retention_limit if self.retention_limit is not None
                             else 60 if self.profile == "smoke" else None),
            method_options=dataclasses.asdict(method_config),
        )

    def _order_seed(self) -> int:
        if self.class_order_seed is not None:
            return self.class_order_seed
        if self.data:
            return self.seed
        from retain.data.wordnet import DEFAULT_ORDER_SEED

        return DEFAULT_ORDER_SEED

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

