"""The knobs of function-preserving growth, one help text each."""

from __future__ import annotations

from dataclasses import dataclass, field

from retain.errors import RetainError
from retain.methods.base import MethodConfig

SELECT = ("all", "gradient", "spread")
SOURCE = ("latest", "original")


@dataclass
class GrowOptions(MethodConfig):
    """Options of the ``grow`` method (``--set KEY=VALUE``)."""

    factor: int = field(default=2, metadata={
        "help": "g: each growth makes the grown MLP's source units g times as many (g-1 new "
                "copies, every copy's down-projection divided by g); copies beyond the first "
                "start identical and so train identically"})
    layers: list[int] = field(default_factory=list, metadata={
        "help": "indices of the blocks to grow (comma-separated; empty: chosen by 'select')"})
    select: str = field(default="all", metadata={
        "help": "which blocks grow when 'layers' is empty: 'all'; 'spread' (a 'fraction' of "
                "them, evenly spaced); 'gradient' (the 'fraction' whose MLP down-projection "
                "has the largest relative gradient on the task's first batches)"})
    fraction: float = field(default=1 / 3, metadata={
        "help": "share of the blocks grown by select=spread or gradient (at least one)"})
    source: str = field(default="latest", metadata={
        "help": "what a new copy duplicates: 'latest' (the block's most recent copy, so the "
                "pretrained units keep half the MLP for good) or 'original' (the pretrained "
                "units every time)"})
    each_task: bool = field(default=True, metadata={
        "help": "grow again for every task; the previous copies get no more gradient (with "
                "source=latest the newest one's down-projection is divided by g in place when "
                "the next copy duplicates it); false: grow once, before the first task, and "
                "keep training that copy"})
    also_train: list[str] = field(default_factory=list, metadata={
        "help": "G-Train: name parts of modules of the blocks grown for the task that train "
                "beside the new copy (e.g. 'attention' or 'self_attn', 'norm'); other blocks' "
                "stay frozen; empty: G-Freeze, the new copy alone"})
    gradient_batches: int = field(default=4, metadata={
        "help": "batches of the task read by select=gradient"})

    def __post_init__(self) -> None:
        self.layers = [int(i) for i in self.layers]
        self.also_train = [str(p) for p in self.also_train]
        if self.factor < 2:
            raise RetainError(f"grow factor must be >= 2 (g=1 adds nothing), got {self.factor}")
        if self.select not in SELECT:
            raise RetainError(f"grow select must be one of {', '.join(SELECT)}, got "
                              f"'{self.select}'")
        if self.source not in SOURCE:
            raise RetainError(f"grow source must be one of {', '.join(SOURCE)}, got "
                              f"'{self.source}'")
        if not 0 < self.fraction <= 1:
            raise RetainError(f"grow fraction must be in (0, 1], got {self.fraction}")
        if self.gradient_batches < 1:
            raise RetainError("grow gradient_batches must be >= 1")
