"""Prediction intervals calibrated on the backtests (split-conformal, scaled by horizon).

An extrapolation's error in ln L grows with how far it reaches: at a step whose ratio to the
fitted span is rho = (s - s0) / (sn - s0) > 1, the backtests show errors e = ln(pred / obs)
whose size scales like ln rho (zero at the cut, then growing with each doubling of the
span). So each backtest point gives a score |e| / ln rho, from the out-of-sample
(leave-one-origin-out) combined prediction; the calibrated half-width of the mean curve at
ratio rho is

    h(rho) = q_level * ln rho,

q_level the level-quantile of the scores, every backtest weighing the same (its points
share its weight), times 1 + 1/n for n backtests. This is split-conformal calibration
(Angelopoulos & Bates 2021, "A gentle introduction to conformal prediction") with a
horizon-scaled score, pooled over the backtests because a prefix holds few of them; the
factor 1 + 1/n stands in for the finite-sample correction of the quantile's level, which
with n < 10 backtests would always give the largest score. (On the mpl curves at k = 25 %,
the pooled coverage of the held-out points was 0.88 with the plain quantile, 0.92 with the
factor and 0.98 with the largest score; see benchmarks/predict_accuracy.py.) The interval of the mean curve is the wider of this and the models' own
(parameter) interval; observation noise is added in quadrature for the interval of an
observed loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ._backtest import Backtest

__all__ = ["Calibration", "calibrate"]

_MIN_RATIO = 1.05  # points this close to the cut carry no horizon information


@dataclass(frozen=True, eq=False)
class Calibration:
    """Horizon-scaled backtest scores and the quantile of them at any level."""

    scores: np.ndarray  # |e| / ln(rho) of every backtest point
    weights: np.ndarray  # each backtest's points share weight 1
    n_backtests: int

    def scale(self, level: float) -> float:
        """q_level of the module docstring (0 without scores: the models' own interval)."""
        if self.scores.size == 0:
            return 0.0
        order = np.argsort(self.scores)
        cum = np.cumsum(self.weights[order]) / self.weights.sum()
        i = int(np.searchsorted(cum, level - 1e-12))
        q = float(self.scores[order][min(i, order.size - 1)])
        return q * (1.0 + 1.0 / max(self.n_backtests, 1))

    def halfwidth(self, ratio: np.ndarray, level: float) -> np.ndarray:
        """h(rho) at ``ratio`` (0 inside the fitted span)."""
        r = np.asarray(ratio, dtype=float)
        return self.scale(level) * np.log(np.maximum(r, 1.0))

    def describe(self, level: float) -> str:
        if self.scores.size == 0:
            return "no backtest: the interval is the models' own (not calibrated)"
        return (
            f"calibrated on {self.n_backtests} backtests ({self.scores.size} points): "
            f"{100 * level:.0f} % of their errors |ln(pred/obs)| lie within "
            f"{self.scale(level):.3g} x ln(horizon ratio)"
        )


def calibrate(bts: Sequence[Backtest], paths: Sequence[np.ndarray]) -> Calibration:
    """Scores of the out-of-sample combined predictions ``paths`` (one per backtest)."""
    scores, weights = [], []
    for bt, p in zip(bts, paths):
        use = (bt.ratio >= _MIN_RATIO) & np.isfinite(p)
        if not use.any():
            continue
        s = np.abs(p[use] - bt.observed[use]) / np.log(bt.ratio[use])
        scores.append(s)
        weights.append(np.full(s.size, 1.0 / s.size))
    if not scores:
        return Calibration(np.zeros(0), np.zeros(0), 0)
    return Calibration(np.concatenate(scores), np.concatenate(weights), len(scores))
