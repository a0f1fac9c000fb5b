"""Classification heads shared by every method (``head=`` in the run config, knobs in
``head_options``).

- ``task-heads``: one linear head per task, cross-entropy with task-local labels on the current
  head only; prediction is the argmax over all heads' logits;
- ``growing``: linear heads over all seen classes, cross-entropy over all of them (the naive
  reference: it pushes old classes down when trained on new data alone);
- ``prototypes``: cosine similarity to per-class mean features computed when the class's task
  ends;
- ``analytic``: ridge regression on randomly projected features from running statistics
  (RanPAC);
- ``aligned``: one linear head re-trained after each task on features sampled from stored class
  Gaussians (SLCA).

The last three are built from statistics: while a task trains, a temporary task-local linear
classifier gives the backbone its loss. ``none``: language-modelling streams (the model's own LM
head scores).

All classification heads return logits over every class of the stream with ``-inf`` where a
class is not yet seen.
In a domain-incremental stream, where tasks share classes, a class's logit is the max over the
heads that cover it and its prototype is the running mean over the tasks that had it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from retain.errors import RetainError
from retain.methods.heads.aligned import AlignedConfig, AlignedHead
from retain.methods.heads.analytic import AnalyticConfig, AnalyticHead
from retain.methods.heads.base import Head, StatisticsHead
from retain.methods.heads.linear import LinearHeads
from retain.methods.heads.prototypes import Prototypes
from retain.options import Options


class NoHead(Head):
    """Language modelling: the model's own LM head scores; nothing to build or train here."""


@dataclass(frozen=True)
class HeadSpec:
    """A head's one registration (``retain.catalogue.HEADS`` describes it without torch; a
    test compares the two): how it is built, its options and its default rate."""

    build: Callable[[int, int, dict[str, Any]], Head]  # (dim, num_classes, options) -> Head
    config: type[Options] | None = None  # its options (None: it takes none)
    # the rate of the task-local classifier when --head-lr is not given (None: --lr)
    lr: float | None = None


REGISTRY: dict[str, HeadSpec] = {
    "task-heads": HeadSpec(lambda dim, n, options: LinearHeads(dim, n, per_task=True)),
    "growing": HeadSpec(lambda dim, n, options: LinearHeads(dim, n, per_task=False)),
    "prototypes": HeadSpec(lambda dim, n, options: Prototypes(dim, n)),
    # at 100x the backbone's rate the classifier takes up the loss before the backbone drifts
    # (the measurement: docs/heads.md); options parsed and checked by RunConfig.resolved
    "analytic": HeadSpec(lambda dim, n, options: AnalyticHead(dim, n, AnalyticConfig(**options)),
                         AnalyticConfig, 5e-2),
    # its rows start from the task-local classifier: it keeps --lr
    "aligned": HeadSpec(lambda dim, n, options: AlignedHead(dim, n, AlignedConfig(**options)),
                        AlignedConfig),
    "none": HeadSpec(lambda dim, n, options: NoHead()),
}
@dataclass(frozen=True)
class RunHead:
    """The run's head: its registration, its name (what results and checkpoints say), its
    options with every default filled and its rate."""

    name: str
    spec: HeadSpec
    options: dict[str, Any]
    lr: float

    def build(self, dim: int, num_classes: int) -> Head:
        return self.spec.build(dim, num_classes, dict(self.options))


HEAD_CONFIGS: dict[str, type[Options]] = {n: h.config for n, h in REGISTRY.items() if h.config}


def head_options(scheme: str, options: dict[str, Any]) -> dict[str, Any]:
    """The head's options with every default filled in (an error for a head without any)."""
    import dataclasses

    config = REGISTRY[scheme].config if scheme in REGISTRY else None
    if config is None:
        if options:
            raise RetainError(f"the '{scheme}' head has no options; drop --head-set "
                              f"(heads with options: {', '.join(HEAD_CONFIGS)})")
        return {}
    return dataclasses.asdict(config.from_options(options, scheme, "--head-set"))


def head_lr(scheme: str, lr: float) -> float:
    """The head's default rate: its own, else ``lr``."""
    own = REGISTRY[scheme].lr if scheme in REGISTRY else None
    return lr if own is None else own


__all__ = ["HEAD_CONFIGS", "REGISTRY", "HeadSpec", "AlignedHead", "AnalyticHead", "Head",
           "LinearHeads", "NoHead", "Prototypes", "RunHead", "StatisticsHead", "head_lr",
           "head_options"]
