"""Accuracy of a predicted loss curve against the observed one (the mpl README's metrics).

With prediction p_i and observation y_i, i = 1 .. n:

* ``r2``      1 - sum (y - p)^2 / sum (y - mean y)^2
* ``mae``     mean |p - y|
* ``rmse``    sqrt(mean (p - y)^2)
* ``pred_e``  mean |p - y| / y          (PredE)
* ``worst_e`` max  |p - y| / y          (WorstE)
* ``final_rel_err``  |p_n - y~_n| / y~_n  (the last point, against the smoothed loss y~)
* ``final_log_err``  |ln(p_n / y~_n)|       (the log ratio: fair when losses head to 0)
* ``coverage``  share of y inside [lower, upper]

A single batch loss is noisy, so the final-loss errors are taken against the *smoothed*
observed loss y~ (:func:`smoothed`): a Savitzky–Golay filter of order 1 on ln y over a
window of :func:`smooth_window` logged points (5 % of them, odd, clipped to [5, 51]); at
the last point that is the straight line through the window's ln y, so a falling curve is
not biased upwards as a trailing mean would be. With ``smooth=False`` (or fewer than 5
points) y~ = y.

The published tables average each metric over the curves predicted:
:func:`average_scores`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.signal import savgol_filter

from ._errors import InvalidArgumentError

__all__ = [
    "average_scores",
    "coverage",
    "final_log_err",
    "final_rel_err",
    "mae",
    "pred_e",
    "r2",
    "rmse",
    "score",
    "smooth_window",
    "smoothed",
    "worst_e",
]


def _pair(pred: Any, observed: Any) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred, dtype=float)
    y = np.asarray(observed, dtype=float)
    if p.ndim != 1 or p.shape != y.shape or p.size == 0:
        raise InvalidArgumentError(
            f"pred and observed must be non-empty 1-D arrays of one shape, got {p.shape} and {y.shape}."
        )
    for name, a in (("pred", p), ("observed", y)):
        if not np.all(np.isfinite(a)):
            raise InvalidArgumentError(f"{name} holds NaN or inf; drop those points first.")
    return p, y


def _relative(pred: Any, observed: Any) -> np.ndarray:
    p, y = _pair(pred, observed)
    if np.any(y <= 0):
        raise InvalidArgumentError("relative errors need observed > 0 everywhere.")
    return np.abs(p - y) / y


def r2(pred: Any, observed: Any) -> float:
    """Coefficient of determination 1 - SS_res / SS_tot (-inf if observed is constant and missed)."""
    p, y = _pair(pred, observed)
    ss_res = float(np.sum((y - p) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    if ss_tot == 0:
        return 1.0 if ss_res == 0 else -np.inf
    return 1.0 - ss_res / ss_tot


def mae(pred: Any, observed: Any) -> float:
    """Mean absolute error."""
    p, y = _pair(pred, observed)
    return float(np.mean(np.abs(p - y)))


def rmse(pred: Any, observed: Any) -> float:
    """Root mean squared error."""
    p, y = _pair(pred, observed)
    return float(np.sqrt(np.mean((p - y) ** 2)))


def pred_e(pred: Any, observed: Any) -> float:
    """PredE: mean relative error |p - y| / y."""
    return float(np.mean(_relative(pred, observed)))


def worst_e(pred: Any, observed: Any) -> float:
    """WorstE: largest relative error |p - y| / y."""
    return float(np.max(_relative(pred, observed)))


def final_rel_err(pred: Any, observed: Any) -> float:
    """Relative error of the last point, |p_n - y_n| / y_n (smooth ``observed`` first with
    :func:`smoothed` for a batch-loss log)."""
    return float(_relative(pred, observed)[-1])


def final_log_err(pred: Any, observed: Any) -> float:
    """Log-ratio error of the last point, |ln(p_n / y_n)|."""
    p, y = _pair(pred, observed)
    if p[-1] <= 0 or y[-1] <= 0:
        raise InvalidArgumentError("log-ratio errors need pred > 0 and observed > 0.")
    return float(abs(np.log(p[-1] / y[-1])))


def smooth_window(n: int) -> int:
    """Logged points in the smoothing window of :func:`smoothed`: 5 % of ``n``, odd, within
    [5, 51] and at most ``n`` (1: no smoothing, for fewer than 5 points)."""
    if n < 5:
        return 1
    w = int(np.clip(round(0.05 * n), 5, 51))
    w = min(w, n)
    return w if w % 2 else w - 1


def smoothed(observed: Any, window: int | None = None) -> np.ndarray:
    """The observed loss smoothed by a Savitzky–Golay filter of order 1 on its log (module
    docstring); ``window`` logged points (default :func:`smooth_window`)."""
    y = np.asarray(observed, dtype=float)
    if y.ndim != 1 or y.size == 0:
        raise InvalidArgumentError(f"observed must be a non-empty 1-D array, got shape {y.shape}.")
    if not np.all(np.isfinite(y)) or np.any(y <= 0):
        raise InvalidArgumentError("smoothing works on ln(observed): it must be finite and > 0.")
    w = smooth_window(y.size) if window is None else int(window)
    if w < 1 or w > y.size:
        raise InvalidArgumentError(f"window must lie in [1, {y.size}], got {window!r}.")
    if w < 3:
        return y.copy()
    w = w if w % 2 else w - 1
    return np.asarray(np.exp(savgol_filter(np.log(y), w, 1, mode="interp")), dtype=float)


def coverage(lower: Any, upper: Any, observed: Any) -> float:
    """Share of observations with lower <= y <= upper."""
    lo, y = _pair(lower, observed)
    hi, _ = _pair(upper, observed)
    if np.any(lo > hi):
        raise InvalidArgumentError("lower must be <= upper at every point.")
    return float(np.mean((y >= lo) & (y <= hi)))


def score(
    pred_loss: Any,
    observed: Any,
    lower: Any | None = None,
    upper: Any | None = None,
    *,
    smooth: bool = True,
) -> dict[str, float]:
    """Every metric of the module docstring; ``coverage`` only when both bounds are given.

    The final-loss errors are taken against the smoothed observed loss (``smooth=True``, the
    window in ``smooth_window``) and, when the observed loss is not positive everywhere, the
    raw one; the pointwise metrics against the raw observations.
    """
    p, y = _pair(pred_loss, observed)
    positive = bool(np.all(y > 0))
    w = smooth_window(y.size) if smooth and positive else 1
    y_s = smoothed(y, w) if w > 1 else y
    out = {
        "r2": r2(p, y),
        "mae": mae(p, y),
        "rmse": rmse(p, y),
        "pred_e": pred_e(p, y),
        "worst_e": worst_e(p, y),
        "final_rel_err": final_rel_err(p, y_s),
        "final_log_err": final_log_err(p, y_s) if positive and p[-1] > 0 else float("nan"),
        "smooth_window": float(w),
    }
    if (lower is None) != (upper is None):
        raise InvalidArgumentError("pass both lower and upper for coverage, or neither.")
    if lower is not None:
        out["coverage"] = coverage(lower, upper, observed)
    return out


def average_scores(scores: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """The mean of each metric over curves (the published tables' convention)."""
    if not scores:
        raise InvalidArgumentError("scores is empty; pass one score dict per curve.")
    keys = set(scores[0])
    if any(set(s) != keys for s in scores):
        raise InvalidArgumentError("every score dict must hold the same metrics.")
    return {k: float(np.mean([s[k] for s in scores])) for k in scores[0]}
