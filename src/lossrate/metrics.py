"""Accuracy of a predicted loss curve against the observed one (the mpl README's metrics).

With prediction p_i and observation y_i, i = 1 .. n:

* ``r2``      1 - sum (y - p)^2 / sum (y - mean y)^2
* ``mae``     mean |p - y|
* ``rmse``    sqrt(mean (p - y)^2)
* ``pred_e``  mean |p - y| / y          (PredE)
* ``worst_e`` max  |p - y| / y          (WorstE)
* ``final_rel_err``  |p_n - y_n| / y_n  (the last point)
* ``coverage``  share of y inside [lower, upper]

The published tables average each metric over the curves predicted:
:func:`average_scores`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._errors import InvalidArgumentError

__all__ = [
    "average_scores",
    "coverage",
    "final_rel_err",
    "mae",
    "pred_e",
    "r2",
    "rmse",
    "score",
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
    """Relative error of the last point, |p_n - y_n| / y_n."""
    return float(_relative(pred, observed)[-1])


def coverage(lower: Any, upper: Any, observed: Any) -> float:
    """Share of observations with lower <= y <= upper."""
    lo, y = _pair(lower, observed)
    hi, _ = _pair(upper, observed)
    if np.any(lo > hi):
        raise InvalidArgumentError("lower must be <= upper at every point.")
    return float(np.mean((y >= lo) & (y <= hi)))


def score(
    pred_loss: Any, observed: Any, lower: Any | None = None, upper: Any | None = None
) -> dict[str, float]:
    """Every metric of the module docstring; ``coverage`` only when both bounds are given."""
    out = {
        "r2": r2(pred_loss, observed),
        "mae": mae(pred_loss, observed),
        "rmse": rmse(pred_loss, observed),
        "pred_e": pred_e(pred_loss, observed),
        "worst_e": worst_e(pred_loss, observed),
        "final_rel_err": final_rel_err(pred_loss, observed),
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
