"""``auto``: fit the family, weigh it by backtests, predict with calibrated intervals.

1. The prefix is thinned to at most ``max_points`` points (consecutive logged steps
   averaged in ln L; the lr schedule stays exact), which bounds the cost of a long log.
2. Every candidate (:data:`~lossrate.auto.CANDIDATES`: the ODE models and the peer laws,
   each by its own recipe, all through :func:`lossrate.fit`) is fitted on the prefix and on
   the rolling-origin backtests inside it, at the extrapolation ratio asked for
   (:mod:`._backtest`).
3. Their weights come from the backtests, inverse to each model's squared backtest error
   (:mod:`._combine`). The prediction is the weighted mean of the members' ln L. The fits
   of step 2 run in ``jobs`` worker processes when asked (:mod:`._pool`), with the
   serial answer.
4. The 90 % interval is calibrated on the backtest errors at matching horizons
   (:mod:`._calibrate`); observation noise, measured on the raw prefix around its smoothed
   curve, is added for the interval of an observed loss.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .._errors import DataError, InvalidArgumentError, LossrateError
from .._model import RunData
from ..fitting.engine import Fit, as_run, fit
from ..metrics import smooth_window, smoothed
from ..schedule import Schedule, decays_after_peak
from ..trajectory import Trajectory
from ._backtest import plan_backtests, plan_transfer_tests, point_prediction
from ._calibrate import calibrate
from ._candidates import DECAY_SHARE, Candidate, candidates
from ._combine import combine
from ._members import at_horizon, drop_outliers, implausible, joins, pooled_floor
from ._pool import check_jobs, run_tasks
from ._result import AutoFit, AutoModel

__all__ = ["fit_auto", "thin"]

#: the prefix is thinned to at most this many points
MAX_POINTS = 300
#: extrapolation ratio backtested when the schedule ends at the prefix (nothing to predict)
_DEFAULT_RATIO = 2.0
#: the shortest extrapolation ratio backtested (horizons closer than that hold no points)
_MIN_RATIO = 1.25
#: thinned columns kept (bin means): the ODE models read them for their closure and start
_KEEP = ("alpha_eff", "grad_sq", "pgrad_sq", "pgrad_sq_debiased")


# ---------------------------------------------------------------- data
def thin(traj: Trajectory, max_points: int = MAX_POINTS) -> Trajectory:
    """At most ``max_points`` points: consecutive logged steps binned, each bin at its mean
    step with the mean of its ln L (and the mean of the measured columns the ODE models
    read); the trajectory itself when it is short enough."""
    n = traj.n
    if n <= max_points:
        return traj
    edges = np.linspace(0, n, max_points + 1).astype(int)
    counts = np.diff(edges)
    idx = np.repeat(np.arange(max_points), counts)

    def mean(a: np.ndarray) -> np.ndarray:
        return np.bincount(idx, weights=a, minlength=max_points) / counts

    step = np.floor(mean(traj.step.astype(float)) + 0.5)
    cols: dict[str, Any] = {}
    for name in _KEEP:
        a = getattr(traj, name)
        if a is not None and np.isfinite(a).any():
            ok = np.isfinite(a)
            num = np.bincount(idx, weights=np.where(ok, a, 0.0), minlength=max_points)
            den = np.bincount(idx, weights=ok.astype(float), minlength=max_points)
            with np.errstate(invalid="ignore", divide="ignore"):
                cols[name] = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    t = np.interp(step, traj.step, traj.t)
    lr = None if traj.lr is None else np.interp(step, traj.step, traj.lr)
    return Trajectory(
        step=step,
        t=t,
        loss=np.exp(mean(np.log(traj.loss))),
        lr=lr,
        meta=traj.meta,
        **cols,
    )


def _noise(traj: Trajectory) -> float:
    """Robust sd of ln L around its smoothed curve (the scatter of one logged loss)."""
    y = np.log(traj.loss)
    if y.size < 5:
        return 0.0
    e = y - np.log(smoothed(traj.loss))
    return float(1.4826 * np.median(np.abs(e - np.median(e))))


def _decay_seen(run: RunData) -> bool:
    """The logged steps see the lr fall below 90 % of its peak after the peak (the prefix's,
    or an earlier run's: its tests then show how the laws fare through a decay)."""
    lr = run.schedule.at(np.clip(run.traj.step, 0, run.schedule.n_steps - 1))
    return decays_after_peak(lr, DECAY_SHARE)


def _named(earlier: Any) -> dict[str, RunData]:
    items = list(earlier.items()) if isinstance(earlier, Mapping) else list(enumerate(earlier))
    out = {}
    for name, item in items:
        rd = _as_run(item, None)
        out[str(rd.traj.meta.name or name) if not isinstance(earlier, Mapping) else str(name)] = rd
    return out


def _as_run(data: Any, schedule: Schedule | None) -> RunData:
    return as_run(data, AutoModel(), schedule)


# ---------------------------------------------------------------- tasks
def _task(task: tuple[Any, ...]) -> Any:
    """One fit: a backtest's point prediction (an array) or a final fit (a Fit, or the
    error message when it failed)."""
    if task[0] == "point":
        _, c, head, schedule, steps, seed = task
        return point_prediction(c, head, schedule, steps, seed)
    _, c, frun, level, seed = task
    try:
        return fit(frun, c.build(frun.schedule), bootstrap=0, level=level, seed=seed, **c.options)
    except LossrateError as exc:
        return str(exc)


def _cost(task: tuple[Any, ...]) -> float:
    """Rough relative cost of a task (the drop-sum models are the slow ones; final fits
    run several starts and an interval)."""
    c = task[1]
    base = 4.0 if c.lumped else 2.0 if c.model == "ode" else 1.0
    return base * (3.0 if task[0] == "final" else 1.0)


# ---------------------------------------------------------------- fit
def fit_auto(
    data: Trajectory | RunData,
    *,
    schedule: Schedule | None = None,
    horizon: int | None = None,
    ahead: Schedule | None = None,
    models: Sequence[str | Candidate] | str | None = None,
    earlier: Mapping[str, Trajectory | RunData] | Sequence[Trajectory | RunData] | None = None,
    level: float = 0.9,
    seed: int = 0,
    max_points: int = MAX_POINTS,
    jobs: int = 1,
    progress: Callable[[str], None] | None = None,
) -> AutoFit:
    """Fit ``auto`` on a run's logged steps (module docstring).

    Args:
        data: the prefix (a Trajectory with its lr, or with ``schedule``; or a RunData).
        schedule: the lr of every step, to the end of the run (default: rebuilt from the
            logged lr, which then ends at the prefix).
        horizon: the last step to be predicted, which sets the extrapolation ratio of the
            backtests (default: the end of ``ahead``, else of the schedule; when that is the
            prefix's own end, a ratio of 2).
        ahead: the schedule the prediction will follow (a what-if), when it is not
            ``schedule``: its length sets the default horizon.
        models: the models weighed (labels of :data:`~lossrate.auto.CANDIDATES` or
            registered names; default all of those).
        earlier: earlier runs of the same kind (whole logs, never the run itself): each is
            cut at the same fraction of its steps, and every model's error on the rest of it
            joins the backtests (a leave-one-run-out test at the full ratio), for the weights
            and the interval alike.
        level: interval level.
        seed: seed of the fits' starts.
        max_points: the prefix is thinned to at most this many points.
        jobs: worker processes for the fits (1: none; 0: every core); the answer is the
            same (:mod:`._pool`).
        progress: called with the name of each finished fit.

    Raises:
        InvalidArgumentError: bad options.
        DataError: too few points, or no candidate could be fitted.
    """
    t_start = time.perf_counter()
    if not 0 < float(level) < 1:
        raise InvalidArgumentError(f"level must lie in (0, 1), e.g. 0.9, got {level!r}.")
    if int(max_points) != max_points or max_points < 20:
        raise InvalidArgumentError(f"max_points must be a whole number >= 20, got {max_points!r}.")
    n_jobs = check_jobs(jobs)
    run = _as_run(data, schedule)
    cands = candidates(models)
    raw = run.traj
    s0, sn = int(raw.step[0]), int(raw.step[-1])
    if raw.n < 8 or sn <= s0:
        raise DataError(
            f"the run holds {raw.n} logged step(s); auto needs at least 8 to fit and backtest."
        )
    plan = run.schedule if ahead is None else ahead
    end = plan.n_steps if horizon is None else int(horizon)
    if horizon is not None and not sn < end <= plan.n_steps:
        raise InvalidArgumentError(
            f"horizon={horizon!r} must lie after the last fitted step {sn} and within the "
            f"schedule's {plan.n_steps} steps; extend the schedule to reach it."
        )
    # a prediction barely past the log (or none) still backtests a reach worth measuring
    ratio = max((end - s0) / (sn - s0), _MIN_RATIO) if end > sn else _DEFAULT_RATIO
    traj = thin(raw, int(max_points))
    frun = RunData(traj, run.schedule)
    say = progress or (lambda _s: None)
    smooth_log = np.log(smoothed(traj.loss))
    plans = plan_backtests(traj, run.schedule, smooth_log, ratio)
    earlier_runs = _named(earlier) if earlier else {}
    if earlier_runs:
        plans += plan_transfer_tests(
            earlier_runs, 1.0 / ratio, max_points=int(max_points), thin=thin
        )
    tasks: list[tuple[Any, ...]] = [
        ("point", c, p.head, p.schedule, p.steps, seed) for p in plans for c in cands
    ]
    tasks += [("final", c, frun, level, seed) for c in cands]
    results, pool_note = run_tasks(_task, tasks, n_jobs, [_cost(t) for t in tasks])
    preds = iter(results[: len(plans) * len(cands)])
    backtests = [p.backtest({c.label: next(preds) for c in cands}) for p in plans]
    say("backtests")
    members: dict[str, Fit] = {}
    failed: dict[str, str] = {}
    for c, f in zip(cands, results[len(plans) * len(cands) :]):
        if isinstance(f, str):
            failed[c.label] = f
            continue
        why = implausible(f, sn, min(max(end, sn), run.schedule.n_steps))
        if why:
            failed[c.label] = why
            continue
        members[c.label] = f
        say(c.label)
    if not members:
        raise DataError(
            "auto: no candidate model could be fitted to this run: "
            + "; ".join(f"{m}: {msg}" for m, msg in failed.items())
        )
    labels = [c.label for c in cands if c.label in members]
    last = min(max(end, sn), run.schedule.n_steps)
    combo = combine(
        backtests,
        labels,
        {m: members[m].metrics.get("bic", np.inf) for m in labels},
        ratio,
        at_horizon(members, last) if not backtests else None,
    )
    cal = calibrate(backtests, combo.cv_paths)
    combo, outliers = drop_outliers(combo, members, last)
    failed.update(outliers)
    floor = pooled_floor(members, combo.weights)
    model = AutoModel.of(
        combo.weights,
        members,
        {m: j for m in combo.weights if (j := joins(members[m], frun, smooth_log)) is not None},
    )
    notes = [
        f"fitted on {traj.n} points"
        + (
            f" (the {raw.n} logged steps thinned by averaging ln L in bins)"
            if traj.n < raw.n
            else ""
        ),
        f"observed losses smoothed over {smooth_window(traj.n)} points (Savitzky-Golay, order 1, "
        "on ln L) for the backtest scores",
    ]
    if pool_note:
        notes.append(pool_note)
    for m in combo.weights:
        if not members[m].success:
            notes.append(f"{m}'s fit did not converge ({members[m].message}); its backtests count")
    return AutoFit(
        model=model,
        params={},
        stderr={},
        ci={},
        level=float(level),
        fixed={},
        metrics={
            "n": float(traj.n),
            "n_logged": float(raw.n),
            "backtests": float(len(backtests)),
            "ratio": float(ratio),
            "seconds": time.perf_counter() - t_start,
        },
        success=True,
        message=combo.why,
        notes=tuple(notes),
        noise_sd={traj.meta.name or "run0": _noise(raw)},
        train_steps={traj.meta.name or "run0": (s0, sn)},
        extra={"log": True},
        run=frun,
        members=members,
        failed=failed,
        combination=combo,
        calibration=cal,
        ratio=float(ratio),
        horizon=int(end),
        noise_raw=_noise(raw),
        backtests=tuple(backtests),
        lr_cut=float(run.schedule.lr[min(sn, run.schedule.n_steps - 1)]),
        decay_seen=_decay_seen(run) or any(_decay_seen(rd) for rd in earlier_runs.values()),
        floor=floor,
    )
