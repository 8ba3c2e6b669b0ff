"""Result types of fitting and prediction: frozen dataclasses with a ``report()``.

Plotting is a function of a result (:mod:`lossrate.report`), never a method of it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._model import CurveModel

__all__ = ["FitResult", "Prediction"]


@dataclass(frozen=True, eq=False)
class FitResult:
    """The outcome of fitting a :class:`~lossrate._model.CurveModel` to one or more runs.

    Attributes:
        model: the fitted model.
        params: best estimates by name (for a joint fit, per-run names are ``"name[run]"``).
        stderr: standard errors by name (NaN where not available).
        ci: (lower, upper) confidence interval by name at level ``level``.
        level: confidence level of ``ci`` (e.g. 0.9).
        fixed: parameters held fixed during the fit, with their values (identifiability).
        metrics: fit statistics: n, k, rss, aic, bic, rmse_log, durbin_watson, ...
        success: whether the optimiser converged to an acceptable point.
        message: what happened, and how to fix a failure.
        notes: decisions the fit took (parameters fixed or reparametrised, data used).
        samples: parameter draws (bootstrap or posterior), shape (n_draws, n_params) in
            the order of ``params``; used for prediction intervals. None when unavailable.
        noise_sd: residual standard deviation of log loss (per run, by run name).
        train_steps: (first, last) step of the data fitted, per run name.
        extra: model-specific diagnostics (JSON-serialisable).
    """

    model: CurveModel
    params: Mapping[str, float]
    stderr: Mapping[str, float]
    ci: Mapping[str, tuple[float, float]]
    level: float
    fixed: Mapping[str, float]
    metrics: Mapping[str, float]
    success: bool
    message: str
    notes: tuple[str, ...] = ()
    samples: np.ndarray | None = None
    noise_sd: Mapping[str, float] = field(default_factory=dict)
    train_steps: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def report(self) -> str:
        """A plain-text table of estimates, errors and intervals, then metrics and notes."""
        lines = [
            f"{self.model.describe()}  —  {'converged' if self.success else 'FAILED'}: {self.message}"
        ]
        pct = round(100 * self.level)
        lines.append(f"{'parameter':<18}{'estimate':>14}{'stderr':>12}  {pct}% interval")
        for name, value in self.params.items():
            lo, hi = self.ci.get(name, (np.nan, np.nan))
            se = self.stderr.get(name, np.nan)
            lines.append(f"{name:<18}{value:>14.6g}{se:>12.3g}  [{lo:.6g}, {hi:.6g}]")
        for name, value in self.fixed.items():
            lines.append(f"{name:<18}{value:>14.6g}{'fixed':>12}")
        if self.metrics:
            lines.append("  ".join(f"{k}={v:.4g}" for k, v in self.metrics.items()))
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (without the samples array)."""
        return {
            "model": self.model.describe(),
            "params": dict(self.params),
            "stderr": dict(self.stderr),
            "ci": {k: list(v) for k, v in self.ci.items()},
            "level": self.level,
            "fixed": dict(self.fixed),
            "metrics": dict(self.metrics),
            "success": self.success,
            "message": self.message,
            "notes": list(self.notes),
            "noise_sd": dict(self.noise_sd),
            "train_steps": {k: list(v) for k, v in self.train_steps.items()},
            "extra": dict(self.extra),
        }

    def to_json(self) -> str:
        """:meth:`to_dict` as indented JSON (NaN written as null)."""
        return json.dumps(_nan_to_none(self.to_dict()), indent=2, sort_keys=True)


@dataclass(frozen=True, eq=False)
class Prediction:
    """Predicted loss at some steps, with a pointwise interval.

    ``lower``/``upper`` bound the *observed* loss at level ``level`` (parameter
    uncertainty plus observation noise); ``mean_lower``/``mean_upper`` bound the
    model curve itself (parameter uncertainty only).
    """

    step: np.ndarray
    t: np.ndarray
    loss: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    level: float
    mean_lower: np.ndarray | None = None
    mean_upper: np.ndarray | None = None
    warnings: tuple[str, ...] = ()

    def report(self) -> str:
        """The final predicted loss with its interval."""
        pct = round(100 * self.level)
        text = (
            f"step {int(self.step[-1])}: predicted loss {self.loss[-1]:.6g} "
            f"({pct}% interval [{self.lower[-1]:.6g}, {self.upper[-1]:.6g}])"
        )
        return "\n".join([text, *(f"warning: {w}" for w in self.warnings)])


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_nan_to_none(v) for v in obj]
    if isinstance(obj, np.generic):
        return _nan_to_none(obj.item())
    return obj
