"""``analytic``: a ridge-regression head from running statistics (RanPAC, NeurIPS 2023; ACIL).

Features pass through a fixed random projection and a ReLU, ``h = ReLU(f R)`` (``R``: ``d x M``,
drawn from ``seed``; ``projection=0``: ``h = f``). When a task ends, ``G += h^T h`` and
``Q += h^T Y`` (one-hot ``Y`` over every class of the stream) are summed over its training data
(and across processes), and ``W = (G + lambda I)^-1 Q`` is solved in float64; logits are ``h W``.
On a frozen backbone this is ridge regression on every item seen so far: the head cannot forget.

``lambda`` is chosen per task: every ``holdout``-th training item of the task (by its position
in the task's data, so any number of processes picks the same items) is held out, ``W`` is
solved for each value of the grid on the old statistics plus the rest of the task, and the value
that scores best on the held-out items wins (``select='accuracy'``, or ``'mse'``: RanPAC's
squared error); ``W`` is then refitted on all of the task. Stores ``Q`` (float64) and the upper
triangle of the symmetric ``G`` in float32 (the seed rebuilds ``R``): ``4 M (M + 1) / 2 + 8 M C``
bytes (M = 5000, C = 45 classes: 52 MB), the same for every task. ``G`` is summed in float64
over a task and rounded to float32 when the task ends, in every run, so that a resumed run
continues from exactly the numbers an uninterrupted one holds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from retain.dist import all_reduce_sum
from retain.errors import RetainError
from retain.methods.heads.base import ExportedHead, StatisticsHead, masked, seen_rows
from retain.options import Options


@dataclass
class AnalyticConfig(Options):
    projection: int = field(default=5000, metadata={
        "help": "width M of the random ReLU projection (0: ridge on the features themselves)"})
    lambdas: list[float] = field(
        default_factory=lambda: [1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4],
        metadata={"help": "ridge values tried per task (comma-separated)"})
    select: str = field(default="accuracy", metadata={
        "help": "how lambda is picked on the held-out items: accuracy, or mse (RanPAC's rule)"})
    holdout: int = field(default=5, metadata={
        "help": "every holdout-th training item of a task is held out to pick lambda (5: 20%)"})
    seed: int = field(default=0, metadata={"help": "seed of the random projection R"})

    def __post_init__(self) -> None:
        if self.select not in ("accuracy", "mse"):
            raise RetainError(f"analytic head: select must be accuracy or mse, got {self.select}")
        if self.projection < 0 or self.holdout < 2 or not self.lambdas:
            raise RetainError("analytic head: projection >= 0, holdout >= 2 and at least one "
                              "lambda are needed")
        if any(lam <= 0 for lam in self.lambdas):
            raise RetainError("analytic head: every lambda must be positive")


class AnalyticHead(StatisticsHead):
    def __init__(self, dim: int, num_classes: int, config: AnalyticConfig):
        super().__init__(dim, num_classes)
        self.config = config
        width = config.projection or dim
        if config.projection:
            gen = torch.Generator().manual_seed(config.seed)
            self.register_buffer("projection", torch.randn(dim, width, generator=gen),
                                 persistent=False)
        else:
            self.projection = None
        self.register_buffer("gram", torch.zeros(width, width, dtype=torch.float64))
        self.register_buffer("targets", torch.zeros(width, num_classes, dtype=torch.float64))
        self.register_buffer("seen", torch.zeros(num_classes, dtype=torch.bool))
        self.ridge: float | None = None  # the lambda of the current W
        self.choices: list[dict[str, Any]] = []  # per task: lambda and held-out scores
        self._solution: torch.Tensor | None = None  # W, from G, Q and lambda

    # G is symmetric: a checkpoint holds its upper triangle once, row after row (M (M + 1) / 2
    # numbers instead of M^2), as ``gram_triangle``
    def _save_to_state_dict(self, destination, prefix, keep_vars) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        gram = destination.pop(prefix + "gram")
        destination[prefix + "gram_triangle"] = torch.cat(
            [gram[i, i:] for i in range(gram.shape[0])]).float()  # exact: see absorb

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        packed = state_dict.pop(prefix + "gram_triangle", None)
        if packed is not None:
            n, start = self.gram.shape[0], 0
            gram, packed = torch.empty_like(self.gram), packed.to(self.gram.dtype)
            for i in range(n):
                gram[i, i:] = packed[start:start + n - i]
                gram[i:, i] = packed[start:start + n - i]
                start += n - i
            state_dict[prefix + "gram"] = gram
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def expand(self, features: torch.Tensor) -> torch.Tensor:
        """``h = ReLU(f R)`` in float32 (or ``f``), whatever autocast says."""
        with torch.autocast(features.device.type, enabled=False):
            f = features.float()
            return f if self.projection is None else F.relu(f @ self.projection)

    @torch.no_grad()
    def absorb(self, task, batches, featurize) -> None:
        width, n_classes = self.gram.shape[0], self.num_classes
        gram, targets = torch.zeros_like(self.gram), torch.zeros_like(self.targets)
        held_gram, held_targets = torch.zeros_like(self.gram), torch.zeros_like(self.targets)
        held_h, held_y = [], []
        for batch in batches():
            h = self.expand(featurize(batch)).double()
            y = F.one_hot(batch["labels"], n_classes).double()
            gram += h.T @ h
            targets += h.T @ y
            hold = batch["index"] % self.config.holdout == 0
            held_gram += h[hold].T @ h[hold]
            held_targets += h[hold].T @ y[hold]
            held_h.append(h[hold])
            held_y.append(batch["labels"][hold])
        for t in (gram, targets, held_gram, held_targets):
            all_reduce_sum(t)  # training data is sharded across processes
        self.seen[torch.as_tensor(task.classes, device=self.seen.device)] = True
        held = (torch.cat(held_h) if held_h else gram.new_zeros(0, width),
                torch.cat(held_y) if held_y else self.seen.new_zeros(0, dtype=torch.long))
        scores = self._scores(self.gram + gram - held_gram,
                              self.targets + targets - held_targets, *held)
        pick = (max if self.config.select == "accuracy" else min)(scores, key=scores.get)
        self.gram += gram
        # G is kept at float32 precision between tasks (its sums stay float64 within a task):
        # the checkpoint stores it as float32, and a resumed or extended run must continue from
        # the very numbers an uninterrupted run continues from
        self.gram.copy_(self.gram.float())
        self.targets += targets
        self.ridge = pick
        self.choices.append({"task": task.index, "lambda": pick, self.config.select: scores})
        self._solution = cholesky_ridge(self.gram, self.targets, pick)

    def _scores(self, gram, targets, held_h, held_labels) -> dict[float, float]:
        """Each lambda's held-out accuracy or squared error (over the seen classes), with the
        counts summed across processes. One Cholesky solve per lambda: sharing one
        factorisation across the grid did not pay on 2 cores at M = 5000 (an eigendecomposition
        cost about 16 Cholesky solves; a tridiagonal reduction, LAPACK's ``sytrd``, 5.5 s
        against 6.5 s for the seven solves, and 0.14 s more per lambda: the same in all)."""
        seen = self.seen
        out = {}
        for lam in self.config.lambdas:
            scores = held_h @ cholesky_ridge(gram, targets, lam)
            if self.config.select == "accuracy":
                value = (masked(scores, seen).argmax(-1) == held_labels).double().sum()
                count = torch.tensor(float(len(held_labels)), dtype=torch.float64)
            else:
                y = F.one_hot(held_labels, self.num_classes).double()
                value = ((scores - y)[:, seen] ** 2).sum()
                count = torch.tensor(float(len(held_labels) * int(seen.sum())),
                                     dtype=torch.float64)
            total = all_reduce_sum(torch.stack([value.cpu(), count]).to(gram.device))
            out[float(lam)] = float(total[0] / total[1].clamp_min(1))
        return out

    def solution(self) -> torch.Tensor:
        if self._solution is None or self._solution.device != self.gram.device:
            self._solution = cholesky_ridge(self.gram, self.targets, self.ridge or 1.0)
        return self._solution

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        if self.ridge is None:
            return features.new_full((features.shape[0], self.num_classes), float("-inf"))
        scores = (self.expand(features).double() @ self.solution()).float()
        return masked(scores, self.seen)

    def export(self) -> ExportedHead:
        rows = seen_rows(self.seen)
        weight = self.solution().T[rows]  # float64: the ridge solution as solved
        return ExportedHead("none" if self.projection is None else "relu_projection", weight,
                            weight.new_zeros(len(rows)), rows, self.projection)

    def state(self) -> dict[str, Any]:
        return {"lambda": self.ridge, "choices": self.choices}

    def load_state(self, state: dict[str, Any]) -> None:
        self.ridge, self.choices = state["lambda"], list(state["choices"])
        self._solution = None  # solved again from the loaded G and Q


def cholesky_ridge(gram: torch.Tensor, targets: torch.Tensor, lam: float) -> torch.Tensor:
    """``(G + lambda I)^-1 Q`` in float64 (Cholesky; ``G`` is positive semi-definite)."""
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    chol, info = torch.linalg.cholesky_ex(gram + lam * eye)
    if int(info) != 0:  # not numerically positive definite: a least-squares solve
        return torch.linalg.lstsq(gram + lam * eye, targets).solution
    return torch.cholesky_solve(targets, chol)
