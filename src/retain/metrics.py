"""Continual-learning metrics: pure functions of a score matrix and its direction.

``R[t][i]`` is the score on task ``i`` after training through task ``t`` (0-based here; the
documentation counts from 1): accuracy (higher is better) or perplexity (lower is better).
``R`` is given as a list of rows, row ``t`` holding ``t + 1`` entries, or as a square array
whose entries above the diagonal are ignored. An entry may be NaN: a task that could not be
scored then (a run that keeps no test splits, learning in a later session); every mean below
leaves such entries out. With ``higher_is_better=False`` the summary
figures keep their names and read the matrix with the direction reversed, so that a positive
forgetting still means something was lost: forgetting
``mean_i (P[T][i] - min_{t in [i, T-1]} P[t][i])`` and BWT ``mean_i (P[i][i] - P[T][i])``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

Matrix = Sequence[Sequence[float]] | np.ndarray


def as_square(R: Matrix) -> np.ndarray:
    T = len(R)
    out = np.full((T, T), np.nan)
    for t in range(T):
        row = np.asarray(R[t], dtype=float)[: t + 1]
        if len(row) != t + 1:
            raise ValueError(f"row {t + 1} of the score matrix needs {t + 1} entries")
        out[t, : t + 1] = row
    return out


def _mean(values) -> float:
    """The mean of the values that are not NaN (NaN if none is)."""
    values = np.asarray(values, dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmean(values)) if len(values) else float("nan")


def score_per_task(R: Matrix) -> list[float]:
    """``A_t = (1/t) sum_{i<=t} R[t][i]`` for every ``t``."""
    M = as_square(R)
    return [_mean(M[t, : t + 1]) for t in range(len(M))]


def sample_weighted_score_per_task(R: Matrix, test_sizes: Sequence[int]) -> list[float]:
    """The score over all seen test samples after each task (accuracy: correct predictions
    over all of them)."""
    M, n = as_square(R), np.asarray(test_sizes, dtype=float)
    out = []
    for t in range(len(M)):
        row, size = M[t, : t + 1], n[: t + 1]
        scored = ~np.isnan(row)
        total = size[scored].sum()  # 0: nothing scored (--keep-test none, earlier sessions)
        out.append(float(np.dot(row[scored], size[scored]) / total) if total else math.nan)
    return out


def final_score(R: Matrix) -> float:
    return score_per_task(R)[-1]


def average_incremental_score(R: Matrix) -> float:
    return float(np.mean(score_per_task(R)))


def _sign(higher_is_better: bool) -> float:
    return 1.0 if higher_is_better else -1.0


def forgetting(R: Matrix, higher_is_better: bool = True) -> float:
    """Chaudhry et al.: mean over old tasks of (best score before the last task - final),
    signed so that a positive value means lost (for perplexity: final - lowest)."""
    M, s = as_square(R), _sign(higher_is_better)
    T = len(M)
    if T < 2:
        return float("nan")  # undefined with one task
    best = np.nanmax if higher_is_better else np.nanmin
    return _mean([s * (best(M[i:T - 1, i]) - M[T - 1, i]) for i in range(T - 1)])


def relative_forgetting(R: Matrix, higher_is_better: bool = True) -> float:
    """:func:`forgetting` with each term divided by the best score before the last task."""
    M, s = as_square(R), _sign(higher_is_better)
    T = len(M)
    if T < 2:
        return float("nan")
    best = np.nanmax if higher_is_better else np.nanmin
    return _mean([s * (best(M[i:T - 1, i]) - M[T - 1, i]) / best(M[i:T - 1, i])
                  for i in range(T - 1)])


def forgetting_from_first(R: Matrix, higher_is_better: bool = True) -> float:
    """Avalanche's stream forgetting: mean of (score just after learning - final), signed so
    that positive = lost."""
    M, s = as_square(R), _sign(higher_is_better)
    T = len(M)
    if T < 2:
        return float("nan")
    return _mean([s * (M[i, i] - M[T - 1, i]) for i in range(T - 1)])


def bwt(R: Matrix, higher_is_better: bool = True) -> float:
    """GEM backward transfer: mean of (final - just after learning) for accuracy, (just after
    - final) for perplexity; negative = forgot."""
    return -forgetting_from_first(R, higher_is_better)


def plasticity(R: Matrix) -> float:
    """Mean score (accuracy, perplexity) on each task right after learning it."""
    M = as_square(R)
    return _mean(np.diag(M))


def summary(R: Matrix, test_sizes: Sequence[int] | None = None, score: str = "accuracy",
            higher_is_better: bool = True) -> dict[str, float]:
    """The summary figures of a score matrix, named after the score (``final_accuracy``,
    ``final_perplexity``, ...)."""
    out = {
        f"final_{score}": final_score(R),
        f"average_incremental_{score}": average_incremental_score(R),
        "forgetting": forgetting(R, higher_is_better),
        "bwt": bwt(R, higher_is_better),
        "plasticity": plasticity(R),
        f"{score}_per_task": score_per_task(R),
    }
    if not higher_is_better:
        out["relative_forgetting"] = relative_forgetting(R, higher_is_better)
        out[f"final_{score}_geometric"] = float(np.exp(_mean(np.log(as_square(R)[-1]))))
    if test_sizes is not None and higher_is_better:
        sw = sample_weighted_score_per_task(R, test_sizes)
        out[f"final_{score}_sample_weighted"] = sw[-1]
    return out
