"""NTK-CL's knobs (Liu et al., 2024), with the paper's defaults: one help text per knob."""

from __future__ import annotations

from dataclasses import dataclass, field

from retain.errors import RetainError
from retain.methods.base import MethodConfig


@dataclass
class NTKCLOptions(MethodConfig):
    """Options of the ``ntk-cl`` method (``--set KEY=VALUE``)."""

    adapter_dim: int = field(default=16, metadata={
        "help": "bottleneck width of the parallel adapter beside each block's MLP"})
    adapter_scale: float = field(default=0.1, metadata={
        "help": "scale of the adapter's output added to the MLP's"})
    prompts: int = field(default=10, metadata={
        "help": "prompt tokens generated per block by mixing the block's input tokens"})
    fusion: str = field(default="attention", metadata={
        "help": "how f_m fuses the adapter and prompt views: 'attention' (the paper's, learnt "
                "query and keys) or 'mean' (their average, nothing learnt)"})
    fusion_dim: int = field(default=64, metadata={
        "help": "query/key width of the attention that fuses the adapter and prompt views"})
    w_nce: float = field(default=0.2, metadata={
        "help": "weight of the contrastive term against old-class prototypes"})
    w_orth: float = field(default=1e-4, metadata={
        "help": "weight of the orthogonality term against the span of old prototypes"})
    w_reg: float = field(default=0.1, metadata={
        "help": "weight of the L2 pull towards the parameters the task started from (the "
                "paper's 1e-3 let the old classes' statistics go stale: --preset paper)"})
    temperature: float = field(default=0.1, metadata={
        "help": "temperature of the contrastive term"})
    orth_rank: int = field(default=40, metadata={
        "help": "most directions of the old prototypes' span used by the orthogonality term"})
    official_losses: bool = field(default=False, metadata={
        "help": "the authors' code's forms: contrastive term maximised (sign flipped), "
                "orthogonality as the signed sum of the out-of-span component with 40 SVD "
                "columns even beyond the prototypes' rank, L2 pull on weights only"})
    official_first_task: bool = field(default=False, metadata={
        "help": "with official_losses: the contrastive term (over the batch alone) and the "
                "orthogonality term (against the first orth_rank columns of the SVD of the "
                "all-zero classifier, arbitrary directions) act on the first task too, as in "
                "the authors' code; false: neither acts before there are old prototypes"})
    inference: str = field(default="whole", metadata={
        "help": "how the prototypes head scores f_m: 'whole' (one cosine over the whole "
                "feature, the paper's) or 'halves' (the authors' code: one cosine per half, "
                "weighted by half_weights)"})
    half_weights: list[float] = field(default_factory=lambda: [0.3, 0.1], metadata={
        "help": "with inference=halves: the weights of the averaged modules' half and of the "
                "current modules' half (the authors' gamma and alpha)"})
    retention_view: str = field(default="modules", metadata={
        "help": "what retention compares with the untouched encoder: 'modules' (mean pooled "
                "feature of the four passes, modules in the path) or 'bypassed' (the frozen "
                "encoder alone, equal to the untouched one by construction)"})

    def __post_init__(self) -> None:
        if min(self.adapter_dim, self.prompts, self.fusion_dim, self.orth_rank) < 1:
            raise RetainError("ntk-cl adapter_dim, prompts, fusion_dim and orth_rank must be "
                              ">= 1")
        if self.temperature <= 0:
            raise RetainError(f"ntk-cl temperature must be > 0, got {self.temperature}")
        if self.fusion not in ("attention", "mean"):
            raise RetainError(f"ntk-cl fusion must be 'attention' or 'mean', got '{self.fusion}'")
        if self.official_first_task and not self.official_losses:
            raise RetainError("ntk-cl official_first_task is the authors' first task under "
                              "their loss forms: add --set official_losses=true")
        if self.inference not in ("whole", "halves"):
            raise RetainError(f"ntk-cl inference must be 'whole' or 'halves', got "
                              f"'{self.inference}'")
        if len(self.half_weights) != 2 or min(self.half_weights) < 0 or not any(
                self.half_weights):
            raise RetainError(f"ntk-cl half_weights must be two numbers >= 0, not both 0 "
                              f"(e.g. 0.3,0.1), got {self.half_weights}")
        if self.retention_view not in ("modules", "bypassed"):
            raise RetainError(f"ntk-cl retention_view must be 'modules' or 'bypassed', got "
                              f"'{self.retention_view}'")

    def check_head(self, head: str) -> None:
        if self.inference == "halves" and head != "prototypes":
            raise RetainError(f"ntk-cl inference=halves scores the prototypes head's class means, "
                              f"not the '{head}' head: use --head prototypes or inference=whole")
