"""Prediction metrics against hand-computed numbers."""

from __future__ import annotations

import numpy as np
import pytest

from lossrate import InvalidArgumentError
from lossrate.metrics import (
    average_scores,
    coverage,
    final_log_err,
    final_rel_err,
    mae,
    pred_e,
    r2,
    rmse,
    score,
    smooth_window,
    smoothed,
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
    assert set(s) == {
        "r2",
        "mae",
        "rmse",
        "pred_e",
        "worst_e",
        "final_rel_err",
        "final_log_err",
        "smooth_window",
    }
    assert s["mae"] == pytest.approx(0.625)
    # four points are too few to smooth: the final errors are the raw last point's
    assert s["smooth_window"] == 1
    assert s["final_rel_err"] == pytest.approx(0.2)
    assert s["final_log_err"] == pytest.approx(np.log(6.0 / 5.0))
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


def test_final_log_err_is_the_log_ratio_of_the_last_point() -> None:
    assert final_log_err([1.0, 2.0], [1.0, 1.0]) == pytest.approx(np.log(2.0))
    assert final_log_err([1.0, 0.5], [1.0, 1.0]) == pytest.approx(np.log(2.0))
    with pytest.raises(InvalidArgumentError, match="log-ratio"):
        final_log_err([1.0, 0.0], [1.0, 1.0])


def test_smooth_window_is_five_percent_odd_and_clipped() -> None:
    assert smooth_window(4) == 1
    assert smooth_window(5) == 5
    assert smooth_window(100) == 5
    assert smooth_window(400) == 19  # 20, made odd
    assert smooth_window(10_000) == 51


def test_smoothing_keeps_an_exponential_and_removes_noise_without_lag() -> None:
    s = np.arange(400.0)
    clean = 2.0 * np.exp(-s / 150.0)  # ln L is a straight line: order-1 smoothing keeps it
    np.testing.assert_allclose(smoothed(clean), clean, rtol=1e-12)
    rng = np.random.default_rng(0)
    noisy = clean * np.exp(rng.normal(0.0, 0.1, s.size))
    sm = smoothed(noisy)
    # the last point: a trailing mean of a falling curve would sit above the truth by
    # about half the window's fall; the local line does not
    assert abs(np.log(sm[-1] / clean[-1])) < 0.1 / np.sqrt(19) * 3
    assert np.std(np.log(sm / clean)) < 0.5 * np.std(np.log(noisy / clean))
    with pytest.raises(InvalidArgumentError, match="ln"):
        smoothed([1.0, -1.0, 2.0])


def test_score_takes_the_final_error_against_the_smoothed_observation() -> None:
    s = np.arange(200.0)
    clean = np.exp(-s / 100.0)
    rng = np.random.default_rng(1)
    noisy = clean * np.exp(rng.normal(0.0, 0.2, s.size))
    out = score(clean, noisy)
    assert out["smooth_window"] == 9
    raw = abs(np.log(clean[-1] / noisy[-1]))
    assert out["final_log_err"] < raw
    assert out["final_log_err"] == pytest.approx(abs(np.log(clean[-1] / smoothed(noisy)[-1])))
