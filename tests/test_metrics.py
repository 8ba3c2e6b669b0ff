"""Prediction metrics against hand-computed numbers."""

from __future__ import annotations

import numpy as np
import pytest

from lossrate import InvalidArgumentError
from lossrate.metrics import (
    average_scores,
    coverage,
    final_rel_err,
    mae,
    pred_e,
    r2,
    rmse,
    score,
    worst_e,
)

Y = [2.0, 4.0, 5.0, 5.0]  # mean 4, SS_tot = 4 + 0 + 1 + 1 = 6
P = [2.5, 4.0, 4.0, 6.0]  # errors 0.5, 0, -1, 1


def test_hand_computed_values() -> None:
    assert r2(P, Y) == pytest.approx(1 - (0.25 + 0 + 1 + 1) / 6)
    assert mae(P, Y) == pytest.approx(2.5 / 4)
    assert rmse(P, Y) == pytest.approx(np.sqrt(2.25 / 4))
    assert pred_e(P, Y) == pytest.approx((0.25 + 0 + 0.2 + 0.2) / 4)
    assert worst_e(P, Y) == pytest.approx(0.25)
    assert final_rel_err(P, Y) == pytest.approx(0.2)


def test_coverage_counts_points_inside_inclusive_bounds() -> None:
    assert coverage([1, 4, 6, 4], [3, 4, 7, 6], Y) == pytest.approx(0.75)  # 5 < 6 misses


def test_score_collects_everything_and_coverage_only_with_both_bounds() -> None:
    s = score(P, Y)
    assert set(s) == {"r2", "mae", "rmse", "pred_e", "worst_e", "final_rel_err"}
    assert s["mae"] == pytest.approx(0.625)
    s = score(P, Y, lower=np.array(Y) - 1, upper=np.array(Y) + 1)
    assert s["coverage"] == 1.0
    with pytest.raises(InvalidArgumentError, match="both lower and upper"):
        score(P, Y, lower=Y)


def test_perfect_prediction() -> None:
    s = score(Y, Y)
    assert s["r2"] == 1.0 and s["mae"] == 0.0 and s["worst_e"] == 0.0


def test_average_scores_is_the_per_metric_mean() -> None:
    avg = average_scores([{"mae": 1.0, "r2": 0.5}, {"mae": 3.0, "r2": 1.0}])
    assert avg == {"mae": 2.0, "r2": 0.75}
    with pytest.raises(InvalidArgumentError, match="same metrics"):
        average_scores([{"mae": 1.0}, {"r2": 1.0}])
    with pytest.raises(InvalidArgumentError, match="empty"):
        average_scores([])


@pytest.mark.parametrize(
    ("pred", "obs", "match"),
    [
        ([1.0, 2.0], [1.0], "one shape"),
        ([], [], "non-empty"),
        ([1.0, np.nan], [1.0, 2.0], "NaN"),
        ([1.0, 2.0], [0.0, 2.0], "observed > 0"),
    ],
)
def test_bad_input_is_named(pred: list[float], obs: list[float], match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        score(pred, obs)


def test_coverage_rejects_crossed_bounds() -> None:
    with pytest.raises(InvalidArgumentError, match="lower must be <= upper"):
        coverage([2.0], [1.0], [1.5])
