"""Data-driven starting values shared by the peer laws."""

from __future__ import annotations

import numpy as np

from .._model import RunData

__all__ = ["loss_range", "power_fit"]


def loss_range(run: RunData) -> tuple[float, float]:
    """(min, max) of the observed loss."""
    return float(np.min(run.traj.loss)), float(np.max(run.traj.loss))


def power_fit(x: np.ndarray, loss: np.ndarray, floor: float) -> tuple[float, float]:
    """(A, alpha) of ``loss - floor ~ A x^-alpha`` by a straight line in log-log space
    (alpha clipped to [0.05, 2.5], then A refitted for that slope).

    Points with x <= 0 or loss <= floor are left out; with fewer than two points left
    (or a non-decreasing curve) the answer is a neutral (max excess, 0.5).
    """
    ok = (x > 0) & (loss > floor)
    excess = loss[ok] - floor
    if ok.sum() < 2 or np.ptp(np.log(x[ok])) == 0:
        return float(max(np.max(loss - floor), 1e-3)), 0.5
    lx, ly = np.log(x[ok]), np.log(excess)
    slope = np.polyfit(lx, ly, 1)[0]
    alpha = float(np.clip(-slope, 0.05, 2.5))
    return float(np.exp(np.mean(ly + alpha * lx))), alpha
