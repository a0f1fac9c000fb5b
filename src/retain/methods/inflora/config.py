"""InfLoRA's knobs, with the paper's defaults (Liang & Li, CVPR 2024)."""

from __future__ import annotations

from dataclasses import dataclass, field

from retain.methods.base import MethodConfig


@dataclass
class InfLoRAConfig(MethodConfig):
    rank: int = field(default=10, metadata={"help": "rank r of each task's branch A_t B_t"})
    lambda_b: float = field(default=0.95, metadata={
        "help": "DualGPM threshold base: eps_t = lambda_b + (1 - lambda_b) t / T (0.98 for "
                "ImageNet-R in the official configs); 1.0 protects every input direction with "
                "positive energy, never an empty one"})
    schedule_tasks: int | None = field(default=None, metadata={
        "help": "T of the threshold schedule: the stream's length when None; set it to the "
                "number of tasks a run will learn over all its sessions (`retain learn`), so "
                "that each task's threshold does not depend on when it was learnt"})
    target_modules: list[str] = field(default_factory=lambda: ["key", "value"], metadata={
        "help": "nn.Linear modules to adapt (name suffixes); the paper adapts keys and values"})
    energy: str = field(default="paper", metadata={
        "help": "'paper': energy = eigenvalues of the input covariance (singular values squared "
                "of the representation matrix); 'official': the official code squares the "
                "covariance's singular values (keeps fewer directions)"})
    first_task: str = field(default="reach", metadata={
        "help": "directions the memory takes from the first task: 'reach' the fewest whose "
                "energy reaches eps_0 (paper); 'below' those whose cumulative energy stays below "
                "eps_0, at least one (official code: one fewer)"})
    dropout: bool = field(default=True, metadata={
        "help": "train the backbone in train mode (dropout on); false trains it in eval mode, as "
                "the official code does"})
    merge: bool = field(default=True, metadata={
        "help": "merge A_t B_t into W after each task (paper; one branch alive, no inference "
                "cost); False keeps every branch and sums them (official code)"})
    scale_b: bool = field(default=False, metadata={
        "help": "divide the designed B_t by sqrt(3), as the official code does"})
    qkv_parts: list[str] = field(default_factory=lambda: ["k", "v"], metadata={
        "help": "for a fused qkv layer (name ending in 'qkv', output 3x its input), which thirds "
                "of the output rows the branch adapts"})

    def __post_init__(self) -> None:
        from retain.errors import RetainError

        if self.energy not in ("paper", "official"):
            raise RetainError(f"inflora energy must be 'paper' or 'official', got '{self.energy}'")
        if self.first_task not in ("reach", "below"):
            raise RetainError(f"inflora first_task must be 'reach' or 'below', got "
                              f"'{self.first_task}'")
        if self.rank < 1:
            raise RetainError(f"inflora rank must be at least 1, got {self.rank}")
        if self.schedule_tasks is not None and self.schedule_tasks < 1:
            raise RetainError(f"inflora schedule_tasks must be 1 or more, got "
                              f"{self.schedule_tasks}")
        if not 0.0 < self.lambda_b <= 1.0:
            raise RetainError(f"inflora lambda_b must lie in (0, 1], got {self.lambda_b}")
        if set(self.qkv_parts) - {"q", "k", "v"}:
            raise RetainError(f"inflora qkv_parts must be among q, k, v, got {self.qkv_parts}")
