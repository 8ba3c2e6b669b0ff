"""Prediction from a fit: the curve at any steps, under the fitted or another schedule.

The point prediction is the model at the best-fit parameters. Its interval combines

* parameter uncertainty: the model at every parameter draw of the fit (bootstrap or
  Gaussian), whose pointwise quantiles of ln L give ``mean_lower``/``mean_upper``;
* observation noise: N(0, noise_sd^2) on ln L, noise_sd the fit's robust residual sd,
  added in quadrature to each side's half-width: lower = ln m - sqrt(d_lo^2 + (z sd)^2).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._errors import InvalidArgumentError
from .._model import RunData
from .._results import FitResult, Prediction
from ..schedule import Schedule
from ..trajectory import Trajectory
from .engine import as_run
from .intervals import z_quantile
from .result import Fit

__all__ = ["predict", "prediction_steps"]

_MAX_DRAWS = 200


def predict(
    fit_result: FitResult,
    steps: Any = None,
    *,
    run: str | Trajectory | RunData | None = None,
    schedule: Schedule | None = None,
    level: float | None = None,
) -> Prediction:
    """The loss a fitted model predicts at ``steps``, with an interval at ``level``.

    Args:
        fit_result: the result of :func:`lossrate.fit` or :func:`lossrate.fit_many`.
        steps: optimizer steps (default: every step from the run's first logged step to the
            end of its schedule).
        run: for a joint fit, the name of a fitted run; or a new Trajectory/RunData whose
            schedule drives a prediction from the shared parameters (cross-run prediction).
        schedule: predict under this schedule instead (a what-if); it must cover ``steps``.
            Without it, steps beyond the run's schedule continue its last lr (with a warning).
        level: interval level (default: the fit's).

    Returns:
        a :class:`~lossrate.Prediction`; ``lower``/``upper`` bound the observed loss,
        ``mean_lower``/``mean_upper`` the model curve.

    Raises:
        InvalidArgumentError: a fit without its runs, an unknown run, steps outside the schedule,
            or a new run when some parameter is per-run.
    """
    if not isinstance(fit_result, FitResult):
        raise InvalidArgumentError(
            f"fit_result must be a FitResult from lossrate.fit / fit_many, got "
            f"{type(fit_result).__name__}."
        )
    lev = fit_result.level if level is None else float(level)
    if not 0 < lev < 1:
        raise InvalidArgumentError(f"level must lie in (0, 1), got {level!r}.")
    model = fit_result.model
    warnings: list[str] = []
    fitted_last = None
    log = bool(fit_result.extra.get("log", True))
    if not isinstance(fit_result, Fit) or fit_result.pmap is None or fit_result.z_hat is None:
        # a result from another fitter (e.g. a peer's own recipe): point estimates only
        if not isinstance(run, Trajectory | RunData):
            raise InvalidArgumentError(
                "this FitResult does not carry its runs (it comes from another fitter or from "
                "JSON): pass run=<Trajectory or RunData> (with schedule=...) to predict."
            )
        rd = as_run(run, model, schedule)
        point = {**fit_result.fixed, **fit_result.params}
        theta_of = lambda z: point  # noqa: E731
        z_best: Any = None
        noise = float(np.median(list(fit_result.noise_sd.values()))) if fit_result.noise_sd else 0.0
        draws = None
        warnings.append(
            "the fit carries no parameter draws: the interval holds observation noise only"
        )
    else:
        pm = fit_result.pmap
        log = fit_result.log
        z_best = fit_result.z_hat
        draws = _draws(fit_result)
        if isinstance(run, Trajectory | RunData):
            rd = as_run(run, model, schedule)
            theta_of = lambda z: pm.theta_new(z, rd)  # noqa: E731
            noise = float(np.median(list(fit_result.noise_sd.values())))
        else:
            r = fit_result.run_index(run)
            rd = pm.runs[r] if schedule is None else pm.runs[r].with_schedule(schedule)
            theta_of = lambda z: pm.thetas(z)[r]  # noqa: E731
            noise = float(fit_result.noise_sd[fit_result.run_names[r]])
            fitted_last = int(pm.runs[r].traj.step[-1])
    rd, steps = prediction_steps(rd, steps, schedule, warnings)
    if not fit_result.success:
        warnings.append(f"the fit did not converge: {fit_result.message}")
    if fitted_last is not None and steps.max() > fitted_last:
        first = int(rd.traj.step[0])
        ratio = (steps.max() - first) / max(fitted_last - first, 1)
        if ratio > 4:
            warnings.append(
                f"extrapolating {ratio:.1f}x the fitted span (to step {int(steps.max())}); "
                "intervals assume the model form holds that far."
            )
    best = _log_curve(model, theta_of(z_best), rd, steps, log)
    z = z_quantile(lev)
    a = (1 - lev) / 2
    if draws is None:
        lo_m = hi_m = best
    else:
        curves = np.array([_log_curve(model, theta_of(d), rd, steps, log) for d in draws])
        ok = np.all(np.isfinite(curves), axis=1)
        if ok.sum() < max(5, 0.5 * len(curves)):
            warnings.append("most parameter draws give no finite curve here; interval unreliable")
        curves = curves[ok] if ok.any() else best[None, :]
        with np.errstate(invalid="ignore"):  # a law that diverges at S = 0 is inf there
            lo_m = np.minimum(np.quantile(curves, a, axis=0), best)
            hi_m = np.maximum(np.quantile(curves, 1 - a, axis=0), best)
    with np.errstate(invalid="ignore"):
        lo = best - np.sqrt((best - lo_m) ** 2 + (z * noise) ** 2)
        hi = best + np.sqrt((hi_m - best) ** 2 + (z * noise) ** 2)
    back = np.exp if log else (lambda v: v)
    return Prediction(
        step=steps,
        t=rd.schedule.S(steps),
        loss=back(best),
        lower=back(lo),
        upper=back(hi),
        level=lev,
        mean_lower=back(lo_m),
        mean_upper=back(hi_m),
        warnings=tuple(warnings),
    )


def prediction_steps(
    rd: RunData, steps: Any, schedule: Schedule | None, warnings: list[str]
) -> tuple[RunData, np.ndarray]:
    """The steps to predict (default: from the run's first logged step to the end of its
    schedule), checked, and the run with its schedule continued at its last lr when they
    reach beyond it without a what-if ``schedule`` (said in ``warnings``)."""
    if steps is None:
        steps = np.arange(int(rd.traj.step[0]), rd.schedule.n_steps + 1)
    steps = np.atleast_1d(np.asarray(steps))
    if steps.ndim != 1 or steps.size == 0:
        raise InvalidArgumentError(f"steps must be a non-empty 1-D array, got shape {steps.shape}.")
    if schedule is None and steps.min() >= 0 and steps.max() > rd.schedule.n_steps:
        last = float(rd.schedule.lr[-1])
        warnings.append(
            f"steps beyond the run's {rd.schedule.n_steps}-step schedule: its last lr {last:.4g} "
            "is continued to step "
            f"{int(steps.max())}; pass schedule= to predict under another plan."
        )
        rd = rd.with_schedule(rd.schedule.extend(int(steps.max())))
    if np.any(steps < 0) or np.any(steps > rd.schedule.n_steps):
        raise InvalidArgumentError(
            f"steps must lie in [0, {rd.schedule.n_steps}] (the schedule's steps), got "
            f"[{steps.min()}, {steps.max()}]; pass schedule= covering them (Schedule.extend)."
        )
    return rd, steps


def _log_curve(
    model: Any, theta: dict[str, float], rd: RunData, steps: np.ndarray, log: bool
) -> np.ndarray:
    with np.errstate(all="ignore"):
        m = np.asarray(model.curve(theta, rd, steps), dtype=float)
        return np.log(m) if log else m


def _draws(fr: Fit) -> list[np.ndarray] | None:
    """Free-coordinate draws z (search scale) from the fit's natural-unit samples."""
    if fr.samples is None or fr.pmap is None:
        return None
    s = np.asarray(fr.samples)
    if s.shape[0] > _MAX_DRAWS:
        idx = np.linspace(0, s.shape[0] - 1, _MAX_DRAWS).astype(int)
        s = s[idx]
    return [fr.pmap.to_z(row) for row in s]
