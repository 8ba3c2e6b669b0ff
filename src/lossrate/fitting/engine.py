"""The fitting engine: robust least squares on log L for one run or many.

For runs r = 1..R with logged losses y_ri at steps s_ri, a curve model m(s; theta_r, run_r)
and a parameter map z -> (theta_1 .. theta_R) (:mod:`lossrate.fitting.params`):

    minimise  sum_ri  rho( (ln m(s_ri; theta_r) - ln y_ri) / w_ri )
            + sum_j   rho( (z_j - mu_j) / tau_j )                      (Gaussian priors)

* ``rho`` is scipy's robust loss ("soft_l1", "huber" or "linear") with ``f_scale`` in units
  of the standardised residual (default 3: points beyond 3 noise sd are down-weighted);
* w_ri is the noise sd of ln y, one level per run from the data (robust scale of second
  differences of ln y, which sees the batch noise but not a smooth trend). With
  ``weights="measured"`` and a run that logs ``loss_std`` and ``batch_size`` its shape
  follows sigma_L / (L sqrt(B)) (theory §4.2) instead; that is not the default because late
  in a run sigma_L / L grows tenfold, so those weights hand the fit to the early steps and a
  law that is not exact there extrapolates far worse (the demo's MNIST run: power_steps
  +147 % with them, +66 % without), and because the same curve must get the same fit from
  a plain CSV and from an instrumented log;
* the search runs on z = ln(value) for log-scale parameters, within bounds, from every guess
  of the model plus jittered copies of the best one (``starts``), and keeps the best optimum.

Intervals: a moving-block bootstrap of the log residuals (:mod:`.bootstrap`), refitted from
the optimum, or linearised (one Gauss–Newton step per replicate: with ``bootstrap=0``, or
when refits would be slow). Both give parameter draws (``FitResult.samples``) for
:func:`predict`. The Gauss–Newton covariance (inflated for residual autocorrelation) only
serves the identifiability notes.

The residuals and their Jacobians live in :mod:`.problem`, the intervals in :mod:`.intervals`,
the result type :class:`Fit` in :mod:`.result`; this module checks the inputs, searches from
several starts and assembles the result.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .._errors import DataError, InvalidArgumentError, check_choice
from .._model import CurveModel, RunData
from ..schedule import Schedule
from ..trajectory import Trajectory
from .bootstrap import durbin_watson, lag1_autocorrelation
from .intervals import _bootstrap, _covariance, _identifiability_notes, _intervals
from .params import ParamMap
from .problem import _BIG, _least_squares, _Problem
from .result import Fit

__all__ = ["Fit", "as_run", "fit", "fit_many", "resolve_model", "run_name"]

LOSSES = ("soft_l1", "huber", "linear")
_SCREEN = 4  # function evaluations per parameter when screening a start
_POLISH = 2  # screened starts run to convergence
_POLISH_NFEV = 40  # their evaluation budget per parameter
_EXTRA_ROUNDS = 3  # further budgets for a fit still improving when its budget ran out
_SCREEN_POINTS = 600  # starts are screened on at most this many points


# ---------------------------------------------------------------- inputs
def resolve_model(model: CurveModel | str) -> CurveModel:
    """A model instance from an instance or a registered name."""
    if isinstance(model, CurveModel):
        return model
    if isinstance(model, str):
        from .registry import get_model

        return get_model(model)
    raise InvalidArgumentError(
        f"model must be a CurveModel or a registered name, got {type(model).__name__}."
    )


def run_name(run: RunData, i: int) -> str:
    return run.traj.meta.name or f"run{i}"


def as_run(
    data: Trajectory | RunData | tuple[Trajectory, Schedule],
    model: CurveModel,
    schedule: Schedule | None = None,
) -> RunData:
    """Pair a trajectory with its schedule (or take a RunData or a (Trajectory, Schedule)
    pair); models that ignore the lr get a unit schedule."""
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[1], Schedule):
        pair_traj, pair_sched = data
        data, schedule = pair_traj, pair_sched if schedule is None else schedule
    if isinstance(data, RunData):
        return data if schedule is None else data.with_schedule(schedule)
    if not isinstance(data, Trajectory):
        raise InvalidArgumentError(
            f"data must be a Trajectory or RunData, got {type(data).__name__}; build one with "
            "Trajectory.from_arrays(loss, step=..., lr=...)."
        )
    if schedule is None and data.lr is None and not getattr(model, "needs_schedule", True):
        schedule = Schedule(np.ones(int(data.step[-1]) + 1), "unit")
    if schedule is None and data.lr is None:
        raise InvalidArgumentError(
            f"model {model.name!r} depends on the learning rate, but the trajectory has no 'lr' "
            "column and no schedule was given. Pass schedule=Schedule.make(...) covering the run, "
            "or log lr."
        )
    return RunData.from_trajectory(data, schedule)


def _drop_zero_time(model: CurveModel, runs: list[RunData]) -> tuple[list[RunData], list[str]]:
    """Leave out logged steps at intrinsic time S = 0 for a law that diverges there."""
    if not getattr(model, "positive_time", False):
        return runs, []
    out, n = [], 0
    for run in runs:
        keep = run.schedule.S(np.clip(run.traj.step, 0, run.schedule.n_steps)) > 0
        if keep.all() or not keep.any():
            out.append(run)
            continue
        n += int((~keep).sum())
        out.append(RunData(run.traj.select(keep), run.schedule))
    if not n:
        return out, []
    return out, [f"{n} logged step(s) at S = sum(lr) = 0 left out: {model.name} diverges there"]


def _check_run(run: RunData, name: str, k: int, log: bool) -> None:
    y = run.traj.loss
    n = y.size
    if n < k + 2:
        raise DataError(
            f"run {name!r} has {n} points, too few to fit {k} parameters (need at least {k + 2}). "
            "Log more steps, fit a longer prefix, or fix some parameters (fix={...})."
        )
    if log and (y <= 0).any():
        raise DataError(
            f"run {name!r} has a loss <= 0 at step {int(run.traj.step[np.argmin(y)])}; the fit "
            "works on ln L. Pass log=False, or shift the loss by its known minimum."
        )
    if np.ptp(y) == 0:
        raise DataError(
            f"run {name!r} has a constant loss ({y[0]!r}); there is no decrease to fit."
        )
    m = max(2, n // 10)
    head, tail = float(np.median(y[:m])), float(np.median(y[-m:]))
    if not tail < head:
        raise DataError(
            f"run {name!r}: the loss does not fall (median of the first {m} points {head:.4g}, "
            f"of the last {m} points {tail:.4g}); a loss-curve model needs a decreasing loss. "
            "Check the column (accuracy instead of loss?) or cut a diverging tail."
        )


def _starts(prob: _Problem, starts: int, rng: np.random.Generator) -> list[np.ndarray]:
    pm = prob.pmap
    per_run = [list(prob.model.guesses(run)) for run in pm.runs]
    for name, g in zip(pm.names, per_run):
        if not g:
            raise InvalidArgumentError(
                f"model {prob.model.name!r} gave no starting guess for {name!r}."
            )
    n_guess = max(len(g) for g in per_run)
    cands = [pm.start([g[i % len(g)] for g in per_run]) for i in range(n_guess)]
    costs = [float(np.sum(prob.residuals(c) ** 2)) for c in cands]
    best = cands[int(np.argmin(costs))]
    span = pm.upper - pm.lower
    sd = np.minimum(0.1 * span, 0.5)
    for _ in range(max(0, starts)):
        cands.append(pm.clip(best + rng.normal(0.0, 1.0, best.size) * sd))
    return cands


# ---------------------------------------------------------------- public
def fit(
    data: Trajectory | RunData,
    model: CurveModel | str,
    *,
    schedule: Schedule | None = None,
    fix: Mapping[str, float] | None = None,
    loss: str = "soft_l1",
    f_scale: float | None = None,
    log: bool = True,
    starts: int = 2,
    level: float = 0.9,
    bootstrap: int = 200,
    seed: int = 0,
    prior: Mapping[str, tuple[float, float]] | None = None,
    weights: str = "noise",
    intervals: bool = True,
) -> Fit:
    """Fit a curve model to one run by robust least squares on ln L (module docstring).

    Args:
        data: the observed run (a Trajectory, paired with ``schedule`` or its logged lr, or a
            RunData).
        model: a :class:`~lossrate._model.CurveModel` or a registered name ("ode", ...).
        schedule: the lr of every step (default: rebuilt from the logged lr).
        fix: parameter values to hold fixed, by name.
        loss: robust loss, "soft_l1" (default), "huber" or "linear" (plain least squares).
        f_scale: robust-loss scale in noise sd units (default 3); in raw units of the fitted
            quantity with ``weights="none"``.
        log: fit ln L (relative errors, default) or L.
        starts: jittered starts added to the model's own guesses.
        level: confidence level of the intervals.
        bootstrap: moving-block bootstrap replicates (0: Gauss–Newton covariance instead).
        seed: seed of the jitter and the bootstrap.
        prior: Gaussian priors ``{"name": (mean, sd)}``: mean in natural units, sd on the
            search scale (relative for log-scale parameters).
        weights: "noise" (standardise residuals by the run's estimated noise sd),
            "measured" (its shape from the logged sigma_L / (L sqrt(B)), module docstring) or
            "none" (raw residuals: a peer's own recipe, e.g. loss="huber", f_scale=1e-3 on
            ln L).
        intervals: False skips the bootstrap: point estimates only (NaN errors, no draws;
            a prediction's interval then holds observation noise only), for fits whose
            interval nobody reads (backtests).

    Returns:
        a :class:`Fit` (a :class:`~lossrate.FitResult`).

    Raises:
        InvalidArgumentError: bad options, unknown parameter names, no lr for a model that
            needs one.
        DataError: too few points, a constant or rising loss, a loss <= 0 with ``log``.
    """
    m = resolve_model(model)
    run = as_run(data, m, schedule)
    return _fit(
        m,
        [run],
        [run_name(run, 0)],
        single=True,
        shared=None,
        per_run=(),
        depends=None,
        fix=fix,
        loss=loss,
        f_scale=f_scale,
        log=log,
        starts=starts,
        level=level,
        bootstrap=bootstrap,
        seed=seed,
        prior=prior,
        weights=weights,
        intervals=intervals,
    )


def fit_many(
    runs: Sequence[Trajectory | RunData] | Mapping[str, Trajectory | RunData],
    model: CurveModel | str,
    *,
    shared: Sequence[str] | None = None,
    per_run: Sequence[str] = (),
    depends: Mapping[str, str] | None = None,
    schedules: Sequence[Schedule | None] | None = None,
    fix: Mapping[str, float] | None = None,
    prior: Mapping[str, tuple[float, float]] | None = None,
    loss: str = "soft_l1",
    f_scale: float | None = None,
    log: bool = True,
    starts: int = 2,
    level: float = 0.9,
    bootstrap: int = 200,
    seed: int = 0,
    weights: str = "noise",
) -> Fit:
    """Fit one model jointly to several runs: one stacked residual vector, one parameter map.

    Parameters are shared by default; those in ``per_run`` get one copy per run, named
    ``"name[run]"``; ``depends={"p": "covariate"}`` makes p follow a log-linear law in a
    RunMeta field across runs (:mod:`lossrate.fitting.params`). Run names come from a mapping's
    keys, else ``meta.name``, else ``run0, run1, ...``. Other arguments as in :func:`fit`.
    """
    m = resolve_model(model)
    if isinstance(runs, Mapping):
        names, items = list(runs.keys()), list(runs.values())
    else:
        items = list(runs)
        names = []
    if not items:
        raise InvalidArgumentError("runs is empty; pass at least one Trajectory or RunData.")
    if schedules is not None and len(schedules) != len(items):
        raise InvalidArgumentError(
            f"schedules has {len(schedules)} entries for {len(items)} runs; give one per run."
        )
    rds = [as_run(d, m, None if schedules is None else schedules[i]) for i, d in enumerate(items)]
    if not names:
        names = [run_name(r, i) for i, r in enumerate(rds)]
    if len(set(names)) != len(names):
        raise InvalidArgumentError(
            f"run names must be unique, got {names}; set RunMeta.name or pass a mapping."
        )
    return _fit(
        m,
        rds,
        [str(n) for n in names],
        single=False,
        shared=shared,
        per_run=per_run,
        depends=depends,
        fix=fix,
        loss=loss,
        f_scale=f_scale,
        log=log,
        starts=starts,
        level=level,
        bootstrap=bootstrap,
        seed=seed,
        prior=prior,
        weights=weights,
    )


# ---------------------------------------------------------------- core
def _fit(
    model: CurveModel,
    runs: list[RunData],
    names: list[str],
    *,
    single: bool,
    shared: Sequence[str] | None,
    per_run: Sequence[str],
    depends: Mapping[str, str] | None,
    fix: Mapping[str, float] | None,
    loss: str,
    f_scale: float | None,
    log: bool,
    starts: int,
    level: float,
    bootstrap: int,
    seed: int,
    prior: Mapping[str, tuple[float, float]] | None,
    weights: str,
    intervals: bool = True,
) -> Fit:
    t_start = time.perf_counter()
    loss = check_choice("loss", loss, LOSSES)
    weights = check_choice("weights", weights, ("noise", "measured", "none"))
    f_scale = 3.0 if f_scale is None else float(f_scale)
    if not (np.isfinite(f_scale) and f_scale > 0):
        raise InvalidArgumentError(f"f_scale must be finite and > 0, got {f_scale!r}.")
    if not 0 < float(level) < 1:
        raise InvalidArgumentError(f"level must lie in (0, 1), e.g. 0.9, got {level!r}.")
    if int(bootstrap) != bootstrap or bootstrap < 0:
        raise InvalidArgumentError(f"bootstrap must be a whole number >= 0, got {bootstrap!r}.")
    if int(starts) != starts or starts < 0:
        raise InvalidArgumentError(f"starts must be a whole number >= 0, got {starts!r}.")
    runs, dropped = _drop_zero_time(model, runs)
    settle = getattr(model, "for_runs", None)
    if callable(settle):  # settings the model decides from all the runs together
        model = settle(runs)
    pm = ParamMap(
        model,
        runs,
        names,
        shared=shared,
        per_run=per_run,
        fix=fix,
        depends=depends,
        single=single,
    )
    for run, name in zip(runs, names):
        k_run = sum(1 for rule in pm.rules[names.index(name)].values() if rule[0] != "fixed")
        _check_run(run, name, k_run, log)
    prob = _Problem(pm, log, prior, weights)
    notes = list(prob.notes) + dropped
    notes.extend(_model_notes(model, runs))
    rng = np.random.default_rng(seed)

    best = _multistart(prob, _starts(prob, int(starts), rng), loss, f_scale, notes)
    if best is None:
        raise DataError(
            f"model {model.name!r}: no start gave a finite fit; check the data or give fix=... "
            "values for the parameters you know."
        )
    z_hat = best.x
    k = pm.n_free
    fitted = prob.curves(z_hat)
    resid = [m - y for m, y in zip(fitted, prob.obs)]
    e_all = np.concatenate(resid)
    n = e_all.size
    rss = float(e_all @ e_all)
    rho1 = float(np.mean([lag1_autocorrelation(e) for e in resid]))
    dw = float(np.mean([durbin_watson(e) for e in resid]))
    noise = {nm: _robust_sd(e) for nm, e in zip(names, resid)}
    safe_rss = max(rss, 1e-300)
    metrics: dict[str, float] = {
        "n": float(n),
        "k": float(k),
        "rss": rss,
        "rmse": float(np.sqrt(rss / n)),
        "aic": float(n * np.log(safe_rss / n) + 2 * k),
        "bic": float(n * np.log(safe_rss / n) + k * np.log(n)),
        "durbin_watson": dw,
        "lag1_autocorr": rho1,
        "cost": float(best.cost),
        "nfev": float(best.nfev),
    }
    success, message, extra_notes = _judge(best, pm, z_hat)
    notes.extend(extra_notes)

    cov_z = _covariance(best)
    notes.extend(_identifiability_notes(cov_z, pm.free_names))
    values = pm.values(z_hat)
    if intervals:
        draws, b_note = _bootstrap(
            prob, best, fitted, resid, loss, f_scale, int(bootstrap), rng, refit=success
        )
        notes.append(b_note)
    else:
        draws = None
        notes.append("no intervals computed (intervals=False)")
    params = {f.name: float(v) for f, v in zip(pm.free, values)}
    stderr, ci, samples = _intervals(draws, pm, level)
    metrics["seconds"] = time.perf_counter() - t_start
    return Fit(
        model=model,
        params=params,
        stderr=stderr,
        ci=ci,
        level=float(level),
        fixed=dict(pm.fixed),
        metrics=metrics,
        success=success,
        message=message,
        notes=tuple(dict.fromkeys(notes)),
        samples=samples,
        noise_sd=noise,
        train_steps={nm: (int(r.traj.step[0]), int(r.traj.step[-1])) for nm, r in zip(names, runs)},
        extra={
            "loss": loss,
            "f_scale": f_scale,
            "log": log,
            "weights": weights,
            "runs": list(names),
        },
        runs=tuple(runs),
        run_names=tuple(names),
        pmap=pm,
        z_hat=z_hat,
        log=log,
    )


def _multistart(
    prob: _Problem, cands: list[np.ndarray], loss: str, f_scale: float, notes: list[str]
) -> Any:
    """Screen every start briefly, run the best ``_POLISH`` to convergence, and finish the
    winner on all points (screening and polishing use at most ``_SCREEN_POINTS`` points)."""
    k = prob.effective_k()
    screen = prob.thinned(_SCREEN_POINTS)

    def run(p: _Problem, z0: np.ndarray, nfev: int) -> Any:
        try:
            return _least_squares(p, z0, loss, f_scale, max_nfev=nfev * (k + 1))
        except (ValueError, np.linalg.LinAlgError) as exc:  # e.g. residuals not finite
            notes.append(f"a start failed: {exc}")
            return None

    screened = [r for r in (run(screen, z0, _SCREEN) for z0 in cands) if r is not None]
    if not screened:
        return None
    screened.sort(key=lambda r: r.cost)
    polished = [r if r.status != 0 else run(screen, r.x, _POLISH_NFEV) for r in screened[:_POLISH]]
    polished = [r for r in polished if r is not None]
    if not polished:
        return None
    best = min(polished, key=lambda r: r.cost)
    if screen is not prob:
        best = run(prob, best.x, _POLISH_NFEV)
    for _ in range(_EXTRA_ROUNDS):  # out of budget: go on while the cost still falls
        if best is None or best.status != 0:
            break
        more = run(prob, best.x, _POLISH_NFEV)
        if more is None:
            break
        stalled = best.cost - more.cost <= 1e-9 * max(best.cost, 1e-300)
        best = more
        if stalled:  # a flat valley: further evaluations do not lower the cost
            best.status, best.message = 2, "the cost stopped falling along a flat direction"
            break
    return best


def _model_notes(model: CurveModel, runs: Sequence[RunData]) -> list[str]:
    hook = getattr(model, "notes", None)
    if not callable(hook):
        return []
    out: list[str] = []
    for run in runs:
        out.extend(str(n) for n in hook(run))
    return out


def _robust_sd(e: np.ndarray) -> float:
    """1.4826 MAD, floored by a tenth of the RMS (a fit with half its residuals 0 still has noise)."""
    mad = 1.4826 * float(np.median(np.abs(e - np.median(e))))
    rms = float(np.sqrt(np.mean(e**2)))
    return max(mad, 0.1 * rms)


def _judge(res: Any, pm: ParamMap, z: np.ndarray) -> tuple[bool, str, list[str]]:
    notes = []
    span = pm.upper - pm.lower
    at_lo = z - pm.lower <= 1e-6 * span
    at_hi = pm.upper - z <= 1e-6 * span
    for f, lo, hi in zip(pm.free, at_lo, at_hi):
        if lo or hi:
            notes.append(
                f"{f.name} ended at its {'lower' if lo else 'upper'} bound "
                f"({f.to_value(f.lower if lo else f.upper):.4g}); the data push it there: fix it "
                "(fix={...}) or check that the model suits the curve."
            )
    if not np.all(np.isfinite(res.fun)) or np.any(np.abs(res.fun) >= _BIG):
        return (
            False,
            (
                "the best fit leaves points where the model is not finite; give starting values "
                "through fix=..., or a model whose range covers the data."
            ),
            notes,
        )
    if res.status <= 0:
        return (
            False,
            (
                f"least squares stopped early ({res.message}); raise starts, fix poorly identified "
                "parameters (see notes), or fit a longer stretch of the curve."
            ),
            notes,
        )
    return True, f"converged ({res.message.rstrip('.')})", notes
