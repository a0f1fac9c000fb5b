"""Every metric on a hand-worked matrix (values worked out in the comments)."""

import math

import pytest

from retain import metrics

# R[t][i]: accuracy on task i after task t.
R = [[0.5],
     [0.9, 0.8],
     [0.3, 0.5, 0.7]]


def test_accuracy_after_each_task():
    # A_1 = 0.5, A_2 = (0.9 + 0.8) / 2 = 0.85, A_3 = (0.3 + 0.5 + 0.7) / 3 = 0.5
    assert metrics.score_per_task(R) == pytest.approx([0.5, 0.85, 0.5])
    assert metrics.final_score(R) == pytest.approx(0.5)
    assert metrics.average_incremental_score(R) == pytest.approx((0.5 + 0.85 + 0.5) / 3)


def test_forgetting_uses_the_best_earlier_accuracy():
    # task 1: max(R[1][1], R[2][1]) - R[3][1] = 0.9 - 0.3 = 0.6; task 2: 0.8 - 0.5 = 0.3
    assert metrics.forgetting(R) == pytest.approx(0.45)


def test_first_variant_and_bwt():
    # task 1: R[1][1] - R[3][1] = 0.5 - 0.3 = 0.2; task 2: 0.8 - 0.5 = 0.3 -> 0.25
    assert metrics.forgetting_from_first(R) == pytest.approx(0.25)
    assert metrics.bwt(R) == pytest.approx(-0.25)


def test_plasticity_is_the_diagonal_mean():
    assert metrics.plasticity(R) == pytest.approx((0.5 + 0.8 + 0.7) / 3)


def test_sample_weighted_accuracy_differs_with_unequal_tasks():
    # after task 2: (0.9*10 + 0.8*30) / 40 = 0.825; after task 3: (3 + 15 + 42) / 100 = 0.6
    assert metrics.sample_weighted_score_per_task(R, [10, 30, 60]) == pytest.approx(
        [0.5, 0.825, 0.6])


def test_single_task_and_bad_rows():
    assert math.isnan(metrics.forgetting([[0.7]]))  # undefined, not zero
    assert math.isnan(metrics.bwt([[0.7]]))
    with pytest.raises(ValueError, match="row 2"):
        metrics.final_score([[0.5], [0.4]])


def test_square_input_ignores_the_upper_triangle():
    square = [[0.5, math.nan, 99.0], [0.9, 0.8, 99.0], [0.3, 0.5, 0.7]]
    assert metrics.summary(square)["forgetting"] == pytest.approx(0.45)
