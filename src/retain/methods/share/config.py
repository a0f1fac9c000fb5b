"""Share's knobs (Vaidya et al., 2025): one help text per knob, shared by the ``peft`` config
(``ShareConfig``, for ``get_peft_model``) and the continual method's options (``ShareOptions``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from retain.errors import RetainError
from retain.methods.base import MethodConfig
from retain.methods.peft_method import MethodPeftConfig

HELP = {
    "k": "columns of each shared basis (U_a: d_in x k, U_b: d_out x k); fewer when the "
         "tasks' factors span fewer directions",
    "p": "rank of each task's update: its coefficients E_a, E_b are k x p (the first task is a "
         "rank-p LoRA)",
    "phi": "temporary extra directions per basis trained during a task beside the basis, "
           "folded into it by the SVD update after the task",
    "alpha": "scale numerator: dW = (alpha / p) (U_b E_b)(U_a E_a)^T",
    "target_modules": "nn.Linear modules to adapt (name suffixes), or 'all-linear'",
    "seed": "seed of the temporary directions drawn after each update",
    "task_coefficients": "coefficients of a prediction given a task id: 'own' (that task's "
                         "stored ones, the paper) or 'current' (the latest for every task, as "
                         "the authors' scripts evaluate every old task); only task-incremental "
                         "scores change",
}
COEFFICIENTS = ("own", "current")
PEFT_TYPE = "SHARE"


def _check(k: int, p: int, phi: int, alpha: float) -> None:
    if k < 1 or p < 1 or phi < 0:
        raise RetainError(f"share needs k >= 1, p >= 1 and phi >= 0, got k={k}, p={p}, "
                          f"phi={phi}")
    if alpha == 0:
        raise RetainError("share alpha must be non-zero (the update would vanish)")


@dataclass
class ShareConfig(MethodPeftConfig):
    """``peft`` configuration of Share: per targeted layer, shared orthonormal bases and small
    per-task coefficients, ``dW_t = (alpha / p) (U_b E_b^t)(U_a E_a^t)^T``. A fresh adapter is a
    rank-``p`` LoRA; ``ShareModel.consolidate()`` builds (or updates) the bases from it."""

    peft_type_name: ClassVar[str] = PEFT_TYPE
    k: int = field(default=32, metadata={"help": HELP["k"]})
    p: int = field(default=8, metadata={"help": HELP["p"]})
    phi: int = field(default=2, metadata={"help": HELP["phi"]})
    alpha: float = field(default=16.0, metadata={"help": HELP["alpha"]})
    seed: int = field(default=0, metadata={"help": HELP["seed"]})

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.k, self.p, self.phi, self.alpha)


@dataclass
class ShareOptions(MethodConfig):
    """Options of the continual ``share`` method (``--set KEY=VALUE``)."""

    k: int = field(default=32, metadata={"help": HELP["k"]})
    p: int = field(default=8, metadata={"help": HELP["p"]})
    phi: int = field(default=2, metadata={"help": HELP["phi"]})
    alpha: float = field(default=16.0, metadata={"help": HELP["alpha"]})
    seed: int = field(default=0, metadata={"help": HELP["seed"]})
    target_modules: list[str] = field(default_factory=lambda: ["query", "value"], metadata={
        "help": HELP["target_modules"]})
    task_coefficients: str = field(default="own", metadata={"help": HELP["task_coefficients"]})

    def __post_init__(self) -> None:
        _check(self.k, self.p, self.phi, self.alpha)
        if self.task_coefficients not in COEFFICIENTS:
            raise RetainError(f"share task_coefficients must be one of {', '.join(COEFFICIENTS)}"
                              f", got '{self.task_coefficients}'")

    def peft_config(self, model) -> ShareConfig:
        from retain.methods.peft_glue import peft_targets

        return ShareConfig(k=self.k, p=self.p, phi=self.phi, alpha=self.alpha, seed=self.seed,
                           target_modules=peft_targets(self.target_modules, model))
