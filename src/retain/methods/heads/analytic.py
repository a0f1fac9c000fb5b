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
squared error); ``W`` is then refitted on all of the task. ``select='pooled'`` picks the value
with the best accuracy over the held-out items of every task so far, each task's scored when
that task ended (its scores are kept, not its items): the last task's few held-out items no
longer pick the value for the whole stream alone. Stores ``Q`` and the upper triangle
of the symmetric ``G``, both float64 (the seed rebuilds ``R``): ``8 M (M + 1) / 2 + 8 M C`` bytes
(M = 5000, C = 45 classes: 101.8 MB), the same for every task. Not float32: ``G`` is positive
semi-definite, and singular while fewer items than ``M`` have been seen; rounded to float32 it
had negative eigenvalues larger than the small lambdas of the grid, whose held-out scores then
collapsed (InfLoRA on wordnet45 quick, task 2, lambda 0.01: 0.171 against 0.867)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from retain.dist import all_reduce_sum
from retain.errors import RetainError
from retain.methods.heads.base import ExportedHead, StatisticsHead, masked, seen_rows
from retain.options import Options

SELECT = ("accuracy", "mse", "pooled")


@dataclass
class AnalyticConfig(Options):
    projection: int = field(default=5000, metadata={
        "help": "width M of the random ReLU projection (0: ridge on the features themselves)"})
    lambdas: list[float] = field(
        default_factory=lambda: [1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4],
        metadata={"help": "ridge values tried per task (comma-separated)"})
    select: str = field(default="accuracy", metadata={
        "help": "how lambda is picked: accuracy or mse (RanPAC's rule) on the task's held-out "
                "items, or pooled: accuracy over every task's so far, each scored when it ended"})
    holdout: int = field(default=5, metadata={
        "help": "every holdout-th training item of a task is held out to pick lambda (5: 20%)"})
    seed: int = field(default=0, metadata={"help": "seed of the random projection R"})

    def __post_init__(self) -> None:
        if self.select not in SELECT:
            raise RetainError(f"analytic head: select must be one of {', '.join(SELECT)}, got "
                              f"{self.select}")
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
            [gram[i, i:] for i in range(gram.shape[0])])

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
        holdout = self.config.holdout
        # the task's statistics, apart for the items kept back to pick lambda and the rest:
        # features are buffered and summed in products of ``CHUNK`` rows (a product per batch
        # of 32 rows spent most of its time reading and writing the M x M sum)
        rest, held = _Sums(self.gram, self.targets), _Sums(self.gram, self.targets, keep=True)
        for batch in batches():
            h = self.expand(featurize(batch))
            hold = batch["index"] % holdout == 0
            rest.add(h[~hold], batch["labels"][~hold])
            held.add(h[hold], batch["labels"][hold])
        held_h, held_y = held.rows()  # this process's held-out items, to score each lambda
        rest_gram, rest_targets = rest.sums()
        held_gram, held_targets = held.sums()
        self.seen[torch.as_tensor(task.classes, device=self.seen.device)] = True
        rest_gram += self.gram  # the old statistics plus the rest of the task
        scores, held = self._scores(rest_gram, rest_targets.add_(self.targets), held_h, held_y)
        choice = {"task": task.index, self.config.select: scores, "held": held}
        pick = picked([*self.choices, choice], self.config.select)
        gram = rest_gram.add_(held_gram)  # made exactly symmetric, as a checkpoint restores it
        self.gram.copy_(gram.triu()).add_(gram.triu_(1).T)
        self.targets.copy_(rest_targets.add_(held_targets))
        self.ridge = pick
        self.choices.append({"lambda": pick, **choice})
        self._solution = cholesky_ridge(self.gram, self.targets, pick)

    def _scores(self, gram, targets, held_h, held_labels) -> tuple[dict[float, float], float]:
        """Each lambda's held-out accuracy (``accuracy``, ``pooled``) or squared error (over
        the seen classes), with the counts summed across processes, and the number of held-out
        items. One Cholesky solve per lambda: sharing one factorisation across the grid did not
        pay on 2 cores at M = 5000 (an eigendecomposition cost about 16 Cholesky solves; a
        tridiagonal reduction, LAPACK's ``sytrd``, 5.5 s against 6.5 s for the seven solves,
        and 0.14 s more per lambda: the same in all)."""
        seen, mse = self.seen, self.config.select == "mse"
        width = int(seen.sum()) if mse else 1  # numbers scored per held-out item
        out, held = {}, 0.0
        for lam in self.config.lambdas:
            scores = held_h @ cholesky_ridge(gram, targets, lam)
            if mse:
                y = F.one_hot(held_labels, self.num_classes).double()
                value = ((scores - y)[:, seen] ** 2).sum()
            else:
                value = (masked(scores, seen).argmax(-1) == held_labels).double().sum()
            count = torch.tensor(float(len(held_labels) * width), dtype=torch.float64)
            total = all_reduce_sum(torch.stack([value.cpu(), count]).to(gram.device))
            out[float(lam)] = float(total[0] / total[1].clamp_min(1))
            held = float(total[1]) / width
        return out, held

    def resolve(self, lam: float) -> None:
        """Solve W again at ``lam`` from the stored G and Q (what another rule for lambda would
        have given the same statistics); the held-out scores stay as stored."""
        if not (math.isfinite(lam) and lam > 0):
            raise RetainError(f"analytic head: lambda must be a positive number, got {lam}")
        self.ridge, self._solution = float(lam), None

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
        self.ridge = state["lambda"]
        self.choices = [{k: {float(lam): v for lam, v in value.items()}  # JSON keys: strings
                         if isinstance(value, dict) else value for k, value in c.items()}
                        for c in state["choices"]]
        self._solution = None  # solved again from the loaded G and Q


def picked(choices: list[dict[str, Any]], select: str) -> float:
    """The lambda that rule ``select`` picks after the last of ``choices`` (each task's held-out
    scores as the head stores them, the last task's last): ``accuracy`` the best of the last
    task's, ``mse`` the lowest squared error, ``pooled`` the best accuracy over the scores of
    every task stored as the last one's were (a run's tasks under ``pooled``; under
    ``accuracy``, to see where such a run would have ended), weighted by held-out items.
    ``accuracy`` and ``pooled`` store the same numbers (held-out accuracy per lambda), so either
    rule's history serves the other: the final lambda a run would have ended with under the
    other rule, its backbone being the same (the head's solution never feeds back into
    training); ``mse`` only from an ``mse`` history."""
    last = choices[-1]
    key = "mse" if select == "mse" else "pooled" if "pooled" in last else "accuracy"
    if key not in last:
        raise RetainError(f"analytic head: the stored held-out scores cannot give rule "
                          f"{select} (mse needs a run made with mse; accuracy and pooled, a run "
                          "made with either)")
    scores = last[key]
    if select == "pooled":
        done = [c for c in choices if key in c]
        if any("held" not in c for c in done):
            raise RetainError("analytic head: a task's scores were stored without their count "
                              "of held-out items (an older run): rule pooled cannot weigh them")
        total = sum(c["held"] for c in done) or 1.0
        scores = {lam: sum(c["held"] * c[key][lam] for c in done) / total for lam in scores}
    return (min if select == "mse" else max)(scores, key=scores.get)


CHUNK = 1024  # feature rows per product when a task's statistics are summed


class _Sums:
    """``h^T h`` and ``h^T Y`` (one-hot ``Y``) of a stream of feature rows, summed in float64 a
    product per ``CHUNK`` rows, and across processes when read; ``keep`` keeps the rows."""

    def __init__(self, gram: torch.Tensor, targets: torch.Tensor, keep: bool = False):
        self.gram, self.targets, self.keep = torch.zeros_like(gram), torch.zeros_like(targets), keep
        self.pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.kept: list[tuple[torch.Tensor, torch.Tensor]] = []

    def add(self, h: torch.Tensor, labels: torch.Tensor) -> None:
        self.pending.append((h, labels))
        if sum(len(x) for x, _ in self.pending) >= CHUNK:
            self._fold()

    def _fold(self) -> None:
        if not self.pending:
            return
        h = torch.cat([x for x, _ in self.pending]).double()
        y = F.one_hot(torch.cat([y for _, y in self.pending]), self.targets.shape[1]).double()
        self.gram.addmm_(h.T, h)
        self.targets.addmm_(h.T, y)
        if self.keep:
            self.kept.extend(self.pending)
        self.pending = []

    def rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows kept (and their labels), in the order they came."""
        self._fold()
        if not self.kept:
            return (self.gram.new_zeros(0, self.gram.shape[0]),
                    torch.zeros(0, dtype=torch.long, device=self.gram.device))
        return (torch.cat([x for x, _ in self.kept]).double(),
                torch.cat([y for _, y in self.kept]))

    def sums(self) -> tuple[torch.Tensor, torch.Tensor]:
        self._fold()
        return all_reduce_sum(self.gram), all_reduce_sum(self.targets)


def cholesky_ridge(gram: torch.Tensor, targets: torch.Tensor, lam: float) -> torch.Tensor:
    """``(G + lambda I)^-1 Q`` in float64 (Cholesky; ``G`` is positive semi-definite)."""
    system = gram.clone()
    system.diagonal().add_(lam)
    chol, info = torch.linalg.cholesky_ex(system)
    if int(info) != 0:  # not numerically positive definite: a least-squares solve
        return torch.linalg.lstsq(system, targets).solution
    return torch.cholesky_solve(targets, chol)
