"""PLATE's knobs (Cosentino, 2026): one help text per knob, shared by the ``peft`` config
(``PlateConfig``, for ``get_peft_model``) and the continual method's options (``PlateOptions``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from retain.errors import RetainError
from retain.methods.base import MethodConfig
from retain.methods.peft_method import MethodPeftConfig

HELP = {
    "r": "trainable output neurons per layer (plasticity: more neurons learn more and drift "
         "more); capped at 90% of the layer's outputs",
    "tau": "fraction of the frozen rows' squared Frobenius energy kept out of the trained input "
           "subspace Q (retention: higher tau, smaller Q, less drift)",
    "alpha": "constant scale s in dW = s B A Q^T (no division by r)",
    "max_rank": "cap on k, the dimension of the protected input subspace Q",
    "target_modules": "nn.Linear modules to adapt (name suffixes), or 'all-linear'",
    "exact_limit": "layers with at most this many output rows rank neurons by exact mean |cosine| "
                   "to all other rows; larger ones by the mean over random anchor rows",
    "anchors": "anchor rows for the neuron ranking of layers above exact_limit",
    "seed": "seed drawing the anchor rows (the exact ranking is deterministic)",
    "selection": "how B and Q are chosen: 'exact' (exact cosines, exact eigendecomposition, "
                 "null space included) or 'official' (the authors' code: a 128-column bf16 "
                 "sketch with 256 strided anchors for B, a randomised Hadamard path for Q whose "
                 "reduced SVD returns high-energy directions when k reaches the frozen rows)",
    "recompute": "after each task of a stream the update is merged into W; 'merged' recomputes B "
                 "and Q from the merged weights, 'original' keeps the first task's B and Q",
}

PEFT_TYPE = "PLATE"


def _check(r: int, tau: float, alpha: float, max_rank: int, selection: str) -> None:
    if r < 1:
        raise RetainError(f"plate r must be at least 1, got {r}")
    if not 0.0 <= tau < 1.0:
        raise RetainError(f"plate tau must lie in [0, 1) (tau = 1 leaves no input direction to "
                          f"train), got {tau}")
    if max_rank < 1:
        raise RetainError(f"plate max_rank must be at least 1, got {max_rank}")
    if selection not in ("exact", "official"):
        raise RetainError(f"plate selection must be 'exact' or 'official', got '{selection}'")
    if alpha == 0:
        raise RetainError("plate alpha must be non-zero (the update would vanish)")


@dataclass
class PlateConfig(MethodPeftConfig):
    """``peft`` configuration of PLATE: ``dW = alpha * B A Q^T`` with ``B`` (a selector of the
    ``r`` most redundant output neurons) and ``Q`` (the low-energy input subspace of the rows that
    stay frozen) computed from the weights alone, and only ``A`` trained."""

    peft_type_name: ClassVar[str] = PEFT_TYPE
    r: int = field(default=8, metadata={"help": HELP["r"]})
    tau: float = field(default=0.9, metadata={"help": HELP["tau"]})
    alpha: float = field(default=1.0, metadata={"help": HELP["alpha"]})
    max_rank: int = field(default=512, metadata={"help": HELP["max_rank"]})
    selection: Literal["exact", "official"] = field(default="exact", metadata={
        "help": HELP["selection"]})
    exact_limit: int = field(default=4096, metadata={"help": HELP["exact_limit"]})
    anchors: int = field(default=1024, metadata={"help": HELP["anchors"]})
    seed: int = field(default=0, metadata={"help": HELP["seed"]})

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.r, self.tau, self.alpha, self.max_rank, self.selection)


@dataclass
class PlateOptions(MethodConfig):
    """Options of the continual ``plate`` method (``--set KEY=VALUE``)."""

    r: int = field(default=8, metadata={"help": HELP["r"]})
    tau: float = field(default=0.9, metadata={"help": HELP["tau"]})
    alpha: float = field(default=1.0, metadata={"help": HELP["alpha"]})
    max_rank: int = field(default=512, metadata={"help": HELP["max_rank"]})
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"], metadata={
        "help": HELP["target_modules"]})
    recompute: Literal["merged", "original"] = field(default="original", metadata={
        "help": HELP["recompute"]})
    selection: Literal["exact", "official"] = field(default="exact", metadata={
        "help": HELP["selection"]})

    def __post_init__(self) -> None:
        _check(self.r, self.tau, self.alpha, self.max_rank, self.selection)
        if self.recompute not in ("merged", "original"):
            raise RetainError(f"plate recompute must be 'merged' or 'original', got "
                              f"'{self.recompute}'")

    def peft_config(self, model=None) -> PlateConfig:
        from retain.methods.peft_glue import peft_targets

        return PlateConfig(r=self.r, tau=self.tau, alpha=self.alpha, max_rank=self.max_rank,
                           selection=self.selection,
                           target_modules=peft_targets(self.target_modules, model))

