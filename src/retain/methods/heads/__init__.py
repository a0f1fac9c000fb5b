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
from typing import Any

from retain.errors import RetainError
from retain.methods.heads.aligned import AlignedConfig, AlignedHead
from retain.methods.heads.analytic import AnalyticConfig, AnalyticHead
from retain.methods.heads.base import Head, StatisticsHead
from retain.methods.heads.linear import LinearHeads
from retain.methods.heads.prototypes import Prototypes
from retain.options import Options

HEAD_CONFIGS: dict[str, type[Options]] = {"analytic": AnalyticConfig, "aligned": AlignedConfig}
# the learning rate of the task-local classifier when --head-lr is not given (None: --lr): at
# 100x the backbone's rate the classifier takes up the loss before the backbone drifts; the
# aligned head's rows start from that classifier, so it keeps --lr (the measurement:
# docs/heads.md)
DEFAULT_HEAD_LR: dict[str, float] = {"analytic": 5e-2}


class NoHead(Head):
    """Language modelling: the model's own LM head scores; nothing to build or train here."""


def head_options(scheme: str, options: dict[str, Any]) -> dict[str, Any]:
    """The head's options with every default filled in (an error for a head without any)."""
    import dataclasses

    if scheme not in HEAD_CONFIGS:
        if options:
            raise RetainError(f"the '{scheme}' head has no options; drop --head-set "
                              f"(heads with options: {', '.join(HEAD_CONFIGS)})")
        return {}
    return dataclasses.asdict(HEAD_CONFIGS[scheme].from_options(options, scheme, "--head-set"))


# every head by name (``retain.catalogue.HEADS`` describes them; a test compares the two):
# (dim, num_classes, options) -> Head
BUILDERS: dict[str, Callable[[int, int, dict[str, Any]], Head]] = {
    "task-heads": lambda dim, n, options: LinearHeads(dim, n, per_task=True),
    "growing": lambda dim, n, options: LinearHeads(dim, n, per_task=False),
    "prototypes": lambda dim, n, options: Prototypes(dim, n),
    # options: parsed and checked by RunConfig.resolved (head_options)
    "analytic": lambda dim, n, options: AnalyticHead(dim, n, AnalyticConfig(**options)),
    "aligned": lambda dim, n, options: AlignedHead(dim, n, AlignedConfig(**options)),
    "none": lambda dim, n, options: NoHead(),
}


def make_head(scheme: str, dim: int, num_classes: int, options: dict[str, Any] | None = None
              ) -> Head:
    if scheme not in BUILDERS:
        raise RetainError(f"unknown head '{scheme}': choose one of "
                          f"{', '.join(n for n in BUILDERS if n != 'none')}")
    return BUILDERS[scheme](dim, num_classes, options or {})


__all__ = ["BUILDERS", "DEFAULT_HEAD_LR", "HEAD_CONFIGS", "AlignedHead", "AnalyticHead", "Head",
           "LinearHeads", "NoHead", "Prototypes", "StatisticsHead", "head_options", "make_head"]
