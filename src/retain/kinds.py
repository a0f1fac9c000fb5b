"""Task kinds: what a stream's tasks train and how they are scored.

- ``classification``: a head over the stream's classes; rows of the class-incremental accuracy
  matrix and of the task-incremental one (logits restricted to the task's classes); higher is
  better.
- ``lm`` (causal language modelling): the model's own next-token loss, no head; rows of the
  per-task test perplexity matrix (``exp`` of the mean negative log-likelihood over all the
  task's test tokens, padding excluded); lower is better.

The engine asks the kind for a row of scores after every task; metrics and the report read the
direction from ``results["score"]``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from retain.dist import all_reduce_sum
from retain.errors import RetainError
from retain.profiles import CLASSIFICATION_PROFILES, LM_PROFILES, Profile


@dataclass(frozen=True)
class Kind:
    name: str
    score: str  # the matrix's name
    higher_is_better: bool
    profiles: dict[str, Profile]  # for the user's files of this kind

    @property
    def direction(self) -> str:
        return "higher" if self.higher_is_better else "lower"


CLASSIFICATION = Kind("classification", "accuracy", True, CLASSIFICATION_PROFILES)
LM = Kind("lm", "perplexity", False, LM_PROFILES)
KINDS = {k.name: k for k in (CLASSIFICATION, LM)}


def get_kind(name: str) -> Kind:
    if name not in KINDS:
        raise RetainError(f"unknown task kind '{name}': choose one of {', '.join(KINDS)}")
    return KINDS[name]


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token negative log-likelihood and the number of scored tokens (labels of
    ``-100`` are padding)."""
    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                          ignore_index=-100, reduction="sum")
    return nll, (labels != -100).sum()


@torch.no_grad()
def perplexity(batches: Iterable[dict], logits_of: Callable[[dict], torch.Tensor]) -> float:
    """``exp`` of the mean per-token NLL over all batches (summed across processes first)."""
    total = None
    for batch in batches:
        nll, n = token_nll(logits_of(batch), batch["labels"])
        part = torch.stack([nll.double(), n.double()])
        total = part if total is None else total + part
    if total is None:
        raise RetainError("no test sequences to score")
    total = all_reduce_sum(total)
    return float(torch.exp(total[0] / total[1].clamp_min(1)))
