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

from typing import Any

from retain.errors import RetainError
from retain.methods.heads.aligned import AlignedConfig, AlignedHead
from retain.methods.heads.analytic import AnalyticConfig, AnalyticHead
from retain.methods.heads.base import Head, StatisticsHead
from retain.methods.heads.linear import LinearHeads
from retain.methods.heads.prototypes import Prototypes
from retain.options import Options

HEAD_CONFIGS: dict[str, type[Options]] = {"analytic": AnalyticConfig, "aligned": AlignedConfig}
# the learning rate of the task-local classifier when --head-lr is not given (None: --lr).
# Measured on wordnet45 quick (benchmarks/results/heads_quick.json): at 100x the backbone's
# rate the classifier takes up the loss before the backbone drifts; final accuracy with the
# analytic head rose from 0.645 to 0.665 (inflora), 0.148 to 0.601 (plate), 0.107 to 0.639
# (seq-lora), and every retention ratio with it. The aligned head did worse on inflora (0.613
# to 0.542): its rows start from that classifier, so it keeps --lr.
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


def make_head(scheme: str, dim: int, num_classes: int, options: dict[str, Any] | None = None
              ) -> Head:
    options = options or {}
    if scheme == "none":
        return NoHead()
    if scheme == "prototypes":
        return Prototypes(dim, num_classes)
    if scheme == "analytic":
        return AnalyticHead(dim, num_classes, AnalyticConfig.from_options(options))
    if scheme == "aligned":
        return AlignedHead(dim, num_classes, AlignedConfig.from_options(options))
    return LinearHeads(dim, num_classes, per_task=scheme == "task-heads")


__all__ = ["DEFAULT_HEAD_LR", "HEAD_CONFIGS", "AlignedHead", "AnalyticHead", "Head", "LinearHeads",
           "NoHead", "Prototypes", "StatisticsHead", "head_options", "make_head"]
