"""Continual-learning metrics: pure functions of the accuracy matrix (``specs/metrics.md``).

``R[t][i]`` is the accuracy on task ``i`` after training through task ``t`` (0-based here; the
spec counts from 1). ``R`` is given as a list of rows, row ``t`` holding ``t + 1`` entries, or as a
square array whose entries above the diagonal are ignored.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Matrix = Sequence[Sequence[float]] | np.ndarray


def as_square(R: Matrix) -> np.ndarray:
    T = len(R)
    out = np.full((T, T), np.nan)
    for t in range(T):
        row = np.asarray(R[t], dtype=float)[: t + 1]
        if len(row) != t + 1:
            raise ValueError(f"row {t + 1} of the accuracy matrix needs {t + 1} entries")
        out[t, : t + 1] = row
    return out


def accuracy_per_task(R: Matrix) -> list[float]:
    """``A_t = (1/t) sum_{i<=t} R[t][i]`` for every ``t``."""
    M = as_square(R)
    return [float(np.mean(M[t, : t + 1])) for t in range(len(M))]


def sample_weighted_accuracy_per_task(R: Matrix, test_sizes: Sequence[int]) -> list[float]:
    """Correct predictions over all seen test samples after each task."""
    M, n = as_square(R), np.asarray(test_sizes, dtype=float)
    return [float(np.dot(M[t, : t + 1], n[: t + 1]) / n[: t + 1].sum()) for t in range(len(M))]


def final_accuracy(R: Matrix) -> float:
    return accuracy_per_task(R)[-1]


def average_incremental_accuracy(R: Matrix) -> float:
    return float(np.mean(accuracy_per_task(R)))


def forgetting(R: Matrix) -> float:
    """Chaudhry et al.: mean over old tasks of (best accuracy before the last task - final)."""
    M = as_square(R)
    T = len(M)
    if T < 2:
        return float("nan")  # undefined with one task
    return float(np.mean([np.max(M[i:T - 1, i]) - M[T - 1, i] for i in range(T - 1)]))


def forgetting_from_first(R: Matrix) -> float:
    """Avalanche's stream forgetting: mean of (accuracy just after learning - final)."""
    M = as_square(R)
    T = len(M)
    if T < 2:
        return float("nan")
    return float(np.mean([M[i, i] - M[T - 1, i] for i in range(T - 1)]))


def bwt(R: Matrix) -> float:
    """GEM backward transfer: mean of (final - just after learning); negative = forgot."""
    return -forgetting_from_first(R)


def fwt(R_full: Matrix, baseline: Sequence[float]) -> float:
    """Forward transfer ``(1/(T-1)) sum_{i>=2} (R[i-1][i] - b_i)``.

    Needs accuracies on tasks not yet trained, so ``R_full`` is a square ``T x T`` matrix
    (task-incremental); ``baseline[i]`` is the untrained model's accuracy on task ``i``.
    """
    M, b = np.asarray(R_full, dtype=float), np.asarray(baseline, dtype=float)
    T = len(M)
    if T < 2:
        return float("nan")
    return float(np.mean([M[i - 1, i] - b[i] for i in range(1, T)]))


def plasticity(R: Matrix) -> float:
    """Mean accuracy on each task right after learning it."""
    M = as_square(R)
    return float(np.mean(np.diag(M)))


def summary(R: Matrix, test_sizes: Sequence[int] | None = None) -> dict[str, float]:
    out = {
        "final_accuracy": final_accuracy(R),
        "average_incremental_accuracy": average_incremental_accuracy(R),
        "forgetting": forgetting(R),
        "bwt": bwt(R),
        "plasticity": plasticity(R),
        "accuracy_per_task": accuracy_per_task(R),
    }
    if test_sizes is not None:
        sw = sample_weighted_accuracy_per_task(R, test_sizes)
        out["final_accuracy_sample_weighted"] = sw[-1]
    return out
