"""The search's objective: ln of the predicted final loss under a schedule, from the point
estimate of a fit, evaluated at the final step only and cached by schedule.

For an ``auto`` fit it is the pooled curve, sum_m w_m ln L_m(n) over the members whose
prediction is finite and not below their own floor (renormalised), as
:func:`lossrate.auto.predict_auto` weighs them; for one model, ln L(n) at the fit. The
search ranks thousands of schedules this way (about a millisecond each); the few best are
then predicted with their intervals through :func:`lossrate.predict`.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from .._errors import InvalidArgumentError
from .._model import CurveModel, RunData
from .._results import FitResult
from ..auto import AutoFit
from ..auto._members import member_floor
from ..fitting.result import Fit
from ..schedule import Schedule

__all__ = ["Objective", "fitted_run"]

_MAX_DRAWS = 60
_BELOW_FLOOR = 0.02


def fitted_run(fit: FitResult) -> RunData:
    """The run a fit was made on (its prefix and schedule)."""
    if isinstance(fit, AutoFit) and fit.run is not None:
        return fit.run
    runs = getattr(fit, "runs", ())
    if isinstance(fit, Fit) and len(runs) == 1:
        return runs[0]
    raise InvalidArgumentError(
        "optimize_schedule needs the fit of one run made by lossrate.fit (auto or one model) "
        "or lossrate.fit_with_prior; a joint fit of several runs or a fit read from JSON does "
        "not carry the run to predict."
    )


class Objective:
    """Callable: ``objective(schedule)`` = ln L(n_steps) predicted under ``schedule``."""

    def __init__(self, fit: FitResult, n_steps: int) -> None:
        self.run = fitted_run(fit)
        self.end = np.array([int(n_steps)])
        self.members: list[tuple[str, float, CurveModel, dict[str, float], float | None]] = []
        if isinstance(fit, AutoFit):
            for label, w, model, theta in fit.model.members:  # type: ignore[attr-defined]
                floor = member_floor(fit.members[label]) if label in fit.members else None
                self.members.append((label, float(w), model, dict(theta), floor))
        else:
            self.members.append((fit.model.name, 1.0, fit.model, fit.theta(), None))
        self.fit = fit
        self.calls = 0
        self._cache: dict[bytes, float] = {}

    def member_logs(self, schedule: Schedule, theta_draws: bool = False) -> np.ndarray:
        """ln L(n) of every member (or, for one model with ``theta_draws``, of every
        parameter draw of its fit); NaN where a member cannot be used."""
        rd = self.run.with_schedule(schedule)
        out = []
        if theta_draws and len(self.members) == 1:
            thetas = _draw_thetas(self.fit) or [self.members[0][3]]
            model = self.members[0][2]
            pairs = [(model, th, None) for th in thetas]
        else:
            pairs = [(m, th, floor) for _lb, _w, m, th, floor in self.members]
        for model, theta, floor in pairs:
            with np.errstate(all="ignore"):
                v = float(np.asarray(model.curve(theta, rd, self.end), dtype=float)[-1])
            ok = np.isfinite(v) and v > 0
            if ok and floor is not None and floor > 0 and v < (1 - _BELOW_FLOOR) * floor:
                ok = False
            out.append(np.log(v) if ok else np.nan)
        return np.asarray(out)

    @property
    def weights(self) -> np.ndarray:
        return np.array([w for _lb, w, _m, _t, _f in self.members])

    def __call__(self, schedule: Schedule) -> float:
        key = hashlib.blake2b(schedule.lr.tobytes(), digest_size=16).digest()
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        self.calls += 1
        logs = self.member_logs(schedule)
        ok = np.isfinite(logs)
        w = self.weights
        value = float(np.sum(w[ok] * logs[ok]) / np.sum(w[ok])) if ok.any() else np.inf
        self._cache[key] = value
        return value


def _draw_thetas(fit: Any) -> list[dict[str, float]]:
    """Up to 60 parameter draws of a one-model fit, as parameter dicts."""
    if not isinstance(fit, Fit) or fit.samples is None or fit.pmap is None:
        return []
    s = np.asarray(fit.samples)
    if s.ndim != 2 or s.shape[0] < 5:
        return []
    idx = np.unique(np.linspace(0, s.shape[0] - 1, min(_MAX_DRAWS, s.shape[0])).astype(int))
    pm = fit.pmap
    return [pm.thetas(pm.to_z(s[i]))[0] for i in idx]
