"""``auto``: fit the family, weigh it by backtests, predict with calibrated intervals.

1. The prefix is thinned to at most ``max_points`` points (consecutive logged steps
   averaged in ln L; the lr schedule stays exact), which bounds the cost of a long log.
2. Every candidate (:data:`~lossrate.auto.CANDIDATES`: the ODE models and the peer laws,
   each by its own recipe, all through :func:`lossrate.fit`) is fitted on the prefix and on
   the rolling-origin backtests inside it, at the extrapolation ratio asked for
   (:mod:`._backtest`).
3. Their weights come from the backtests: stacking or the single best, whichever does
   better out of sample (:mod:`._combine`). The prediction is the weighted mean of the
   members' ln L.
4. The 90 % interval is calibrated on the backtest errors at matching horizons
   (:mod:`._calibrate`); observation noise, measured on the raw prefix around its smoothed
   curve, is added for the interval of an observed loss.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from .._errors import DataError, InvalidArgumentError, LossrateError
from .._model import CurveModel, Param, RunData
from .._results import FitResult, Prediction
from ..fitting.engine import Fit, as_run, fit, z_quantile
from ..fitting.predict import predict, prediction_steps
from ..metrics import smooth_window, smoothed
from ..schedule import Schedule
from ..trajectory import Trajectory
from ._backtest import Backtest, run_backtests, run_transfer_tests
from ._calibrate import Calibration, calibrate
from ._candidates import DECAY_SHARE, Candidate, candidates
from ._combine import Combination, combine

__all__ = ["AutoFit", "AutoModel", "fit_auto", "predict_auto", "thin"]

#: the prefix is thinned to at most this many points
MAX_POINTS = 300
#: interval steps evaluated with parameter draws (the rest interpolated in ln L)
_KNOTS = 128
#: extrapolation ratio backtested when the schedule ends at the prefix (nothing to predict)
_DEFAULT_RATIO = 2.0
#: thinned columns kept (bin means): the ODE models read them for their closure and start
_KEEP = ("alpha_eff", "grad_sq", "pgrad_sq")


@dataclass(frozen=True, eq=False)
class AutoModel(CurveModel):
    """The weighted mean of member curves in ln L: ln L = sum_m w_m ln L_m(s; theta_m).

    Not fitted itself (it has no parameters): :func:`fit_auto` builds it.
    """

    name: ClassVar[str] = "auto"
    members: tuple[tuple[str, float, CurveModel, Mapping[str, float]], ...] = ()

    def params(self, run: RunData) -> Sequence[Param]:
        return ()

    def guesses(self, run: RunData) -> Sequence[Mapping[str, float]]:
        return ({},)

    def curve(self, theta: Mapping[str, float], run: RunData, steps: np.ndarray) -> np.ndarray:
        """The weighted mean of ln L_m, renormalised over the members finite at each step (a
        law in the lr sum is infinite at S = 0; the others still say what the loss is)."""
        total = np.zeros(np.shape(steps))
        weight = np.zeros(np.shape(steps))
        with np.errstate(all="ignore"):
            for _label, w, model, th in self.members:
                lm = np.log(np.asarray(model.curve(th, run, steps), dtype=float))
                ok = np.isfinite(lm)
                total = total + np.where(ok, w * lm, 0.0)
                weight = weight + np.where(ok, w, 0.0)
            return np.where(weight > 0, np.exp(total / np.where(weight > 0, weight, 1.0)), np.inf)

    def describe(self) -> str:
        parts = " + ".join(f"{label} {w:.2f}" for label, w, _m, _t in self.members)
        return f"auto ({parts})"


@dataclass(frozen=True, eq=False)
class AutoFit(FitResult):
    """The result of :func:`fit_auto` (a :class:`~lossrate.FitResult`).

    Beyond the FitResult fields: ``run`` (the thinned prefix and the schedule), ``members``
    (every candidate's fit on the prefix), ``failed`` (candidates whose fit failed, with
    why), ``combination`` (weights, scores, rule), ``calibration``, ``ratio`` (the
    extrapolation ratio backtested), ``horizon`` (the step it reaches), ``noise_raw``
    (sd of a logged ln L around the smoothed curve), ``backtests``.
    """

    run: RunData | None = field(default=None, repr=False)
    members: Mapping[str, Fit] = field(default_factory=dict, repr=False)
    failed: Mapping[str, str] = field(default_factory=dict)
    combination: Combination | None = field(default=None, repr=False)
    calibration: Calibration | None = field(default=None, repr=False)
    ratio: float = 1.0
    horizon: int = 0
    noise_raw: float = 0.0
    backtests: tuple[Backtest, ...] = field(default=(), repr=False)
    lr_cut: float = 0.0
    decay_seen: bool = False
    floor: float = 0.0

    @property
    def weights(self) -> dict[str, float]:
        return dict(self.combination.weights) if self.combination else {}

    def why(self) -> list[str]:
        """Plain-language lines: which models carry the weight, and why."""
        c = self.combination
        if c is None:
            return []
        lines = [f"weights: {_weights_text(c.weights)}"]
        ranked = sorted(c.scores.items(), key=lambda kv: kv[1])
        runs = [bt.run for bt in self.backtests if bt.run]
        origins = len(self.backtests) - len(runs)
        where = f"{origins} origins in the prefix" + (
            f" + {len(runs)} earlier runs cut at the same fraction" if runs else ""
        )
        lines.append(
            f"backtests ({where}; extrapolation ratio {self.ratio:.2g}x): median "
            "|ln(pred/obs)| at the horizon, scaled to that ratio: "
            + ", ".join(f"{m} {_pct(v)}" for m, v in ranked)
        )
        if self.failed:
            lines.append(
                "not used: " + "; ".join(f"{m} ({msg[:80]})" for m, msg in self.failed.items())
            )
        if self.calibration is not None:
            lines.append("interval: " + self.calibration.describe(self.level))
        return lines

    def report(self) -> str:
        head = (
            f"{self.model.describe()}  —  {'converged' if self.success else 'FAILED'}: "
            f"{self.message}"
        )
        lines = [head, *self.why()]
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        c = self.combination
        out["auto"] = {
            "weights": self.weights,
            "rule": c.rule if c else None,
            "why": c.why if c else None,
            "backtest_scores": dict(c.scores) if c else {},
            "cv_error": dict(c.cv_error) if c else {},
            "backtests": len(self.backtests),
            "earlier_runs": [bt.run for bt in self.backtests if bt.run],
            "ratio": self.ratio,
            "horizon": self.horizon,
            "calibration_scale": self.calibration.scale(self.level) if self.calibration else None,
            "calibration": self.calibration.describe(self.level) if self.calibration else None,
            "noise_sd_log": self.noise_raw,
            "failed": dict(self.failed),
            "floor": self.floor,
            "decay_seen": self.decay_seen,
            "members": {m: f.to_dict() for m, f in self.members.items() if m in self.weights},
        }
        return out


def _pct(v: float) -> str:
    return "failed" if not np.isfinite(v) else f"{100 * v:.2f} %"


def _weights_text(w: Mapping[str, float]) -> str:
    return ", ".join(f"{m} {v:.2f}" for m, v in sorted(w.items(), key=lambda kv: -kv[1]))


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


def member_floor(f: Fit) -> float | None:
    """The loss a fitted model approaches: the budget floor of an ODE model's rate
    (:func:`lossrate.floor` of its components), else the model's own
    :meth:`~lossrate.CurveModel.asymptote`, else its ``L_inf``; None when it names none."""
    theta = f.theta()
    components = getattr(f.model, "components", None)
    if callable(components):
        from ..bounds import floor

        closure, rate, L0 = components(theta, f.runs[0])
        return float(floor(closure, rate, L0))
    value = f.model.asymptote(theta, f.runs[0])
    if value is not None:
        return float(value)
    return float(theta["L_inf"]) if "L_inf" in theta else None


#: a member may dip this share below its own floor (noise in the fit) before it is refused
_BELOW_FLOOR = 0.01


def _implausible(f: Fit, sn: int, end: int, run: RunData | None = None) -> str:
    """Why a member's prediction from the cut to ``end`` cannot be used ("" when it can): not
    finite, or below the floor of its own law. A loss-drop term whose size the prefix never
    saw can run past the loss above the floor (the multi-power law fitted on a WSD run's
    stable phase predicted 0.74 where the run ended at 2.72, its own floor near 2): no law
    holds there, so no weight is given to it."""
    grid = np.unique(np.linspace(sn, max(end, sn), 64).round().astype(np.int64))
    with np.errstate(all="ignore"):
        path = np.asarray(f.model.curve(f.theta(), run or f.runs[0], grid), dtype=float)
    if not np.all(np.isfinite(path)) or not np.all(path > 0):
        return f"its prediction up to step {int(grid[-1])} is not finite"
    floor = member_floor(f)
    if floor is not None and floor > 0 and float(path.min()) < (1 - _BELOW_FLOOR) * floor:
        at = int(grid[int(np.argmin(path))])
        return (
            f"its prediction falls to {float(path.min()):.4g} at step {at}, below its own "
            f"floor {floor:.4g}: a drop the fitted law cannot support"
        )
    return ""


#: a member further than this in ln L from the others' weighted median at the horizon is
#: left out (also when its spread-based distance, 5 median absolute deviations, is larger)
_OUTLIER_LOG = 0.1


def _drop_outliers(
    combo: Combination, members: Mapping[str, Fit], end: int
) -> tuple[Combination, dict[str, str]]:
    """Members whose prediction at ``end`` lies far from the weighted median of the weighted
    members (more than max(5 MAD, 0.1) in ln L) lose their weight: a law extrapolating a
    drop the prefix never showed (an lr decay's gain fitted on a stable phase) is not
    caught by backtests made inside that phase, and in a weighted mean of ln L one such law
    moves the answer by its share of a fall that nothing supports."""
    w = dict(combo.weights)
    if len(w) < 3:
        return combo, {}
    at = {}
    for m in w:
        f = members[m]
        with np.errstate(all="ignore"):
            at[m] = float(np.log(f.model.curve(f.theta(), f.runs[0], np.array([end]))[0]))
    names = sorted(w, key=lambda m: at[m])
    cum = np.cumsum([w[m] for m in names])
    med = at[names[int(np.searchsorted(cum, 0.5 * cum[-1]))]]
    mad = float(np.median([abs(at[m] - med) for m in names]))
    far = {m for m in names if abs(at[m] - med) > max(5 * mad, _OUTLIER_LOG)}
    if not far or len(far) == len(w):
        return combo, {}
    kept = {m: v for m, v in w.items() if m not in far}
    total = sum(kept.values())
    kept = {m: v / total for m, v in kept.items()}
    why = {
        m: f"its prediction at step {end}, {np.exp(at[m]):.4g}, lies far from the other "
        f"models' ({np.exp(med):.4g}), in a way its backtests could not test"
        for m in far
    }
    note = f"; left out as an outlier at the horizon: {', '.join(sorted(far))}"
    return dataclasses.replace(combo, weights=kept, why=combo.why + note), why


def _pooled_floor(members: Mapping[str, Fit], weights: Mapping[str, float]) -> float:
    """The members' floors pooled as their predictions are: exp(sum_m w_m ln floor_m) (0
    when a member has none or a floor of 0)."""
    total = 0.0
    for m, w in weights.items():
        f = member_floor(members[m])
        if f is None or f <= 0:
            return 0.0
        total += w * float(np.log(f))
    return float(np.exp(total))


def _decay_seen(run: RunData) -> bool:
    """The logged steps see the lr fall below 90 % of its peak after the peak."""
    lr = run.schedule.at(np.clip(run.traj.step, 0, run.schedule.n_steps - 1))
    i = int(np.argmax(lr))
    return bool(lr[i] > 0 and float(np.min(lr[i:])) < DECAY_SHARE * float(lr[i]))


def _named(earlier: Any) -> dict[str, RunData]:
    items = list(earlier.items()) if isinstance(earlier, Mapping) else list(enumerate(earlier))
    out = {}
    for name, item in items:
        rd = _as_run(item, None)
        out[str(rd.traj.meta.name or name) if not isinstance(earlier, Mapping) else str(name)] = rd
    return out


def _as_run(data: Any, schedule: Schedule | None) -> RunData:
    return as_run(data, AutoModel(), schedule)


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
    ratio = (end - s0) / (sn - s0) if end > sn else _DEFAULT_RATIO
    traj = thin(raw, int(max_points))
    frun = RunData(traj, run.schedule)
    say = progress or (lambda _s: None)
    smooth_log = np.log(smoothed(traj.loss))
    backtests = run_backtests(traj, run.schedule, smooth_log, ratio, cands, seed=seed)
    if earlier:
        backtests += run_transfer_tests(
            _named(earlier), 1.0 / ratio, cands, max_points=int(max_points), seed=seed, thin=thin
        )
    say("backtests")
    members: dict[str, Fit] = {}
    failed: dict[str, str] = {}
    for c in cands:
        try:
            f = fit(frun, c.build(run.schedule), bootstrap=0, level=level, seed=seed, **c.options)
        except LossrateError as exc:
            failed[c.label] = str(exc)
            continue
        why = _implausible(f, sn, min(max(end, sn), run.schedule.n_steps))
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
    combo = combine(
        backtests, labels, {m: members[m].metrics.get("bic", np.inf) for m in labels}, ratio
    )
    cal = calibrate(backtests, combo.cv_paths)
    combo, outliers = _drop_outliers(combo, members, min(max(end, sn), run.schedule.n_steps))
    failed.update(outliers)
    floor = _pooled_floor(members, combo.weights)
    model = AutoModel(
        tuple(
            (m, w, members[m].model, members[m].theta())
            for m, w in sorted(combo.weights.items(), key=lambda kv: -kv[1])
        )
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
        decay_seen=_decay_seen(run),
        floor=floor,
    )


# ---------------------------------------------------------------- predict
def predict_auto(
    afit: AutoFit,
    steps: Any = None,
    *,
    schedule: Schedule | None = None,
    level: float | None = None,
) -> Prediction:
    """The weighted prediction of an :class:`AutoFit` with its calibrated interval.

    ln L(s) = sum_m w_m ln L_m(s). Half-width of the mean curve on either side: the wider of
    the members' own (their parameter draws, weighted alike) and the calibrated
    h(rho) = q ln rho, rho = (s - s0)/(sn - s0) (:mod:`._calibrate`); the interval of an
    observed loss adds z * noise_raw in quadrature.
    """
    if afit.run is None or afit.combination is None or afit.calibration is None:
        raise InvalidArgumentError("this AutoFit carries no run; refit it with lossrate.fit.")
    lev = afit.level if level is None else float(level)
    if not 0 < lev < 1:
        raise InvalidArgumentError(f"level must lie in (0, 1), got {level!r}.")
    rd = afit.run if schedule is None else afit.run.with_schedule(schedule)
    s0, sn = afit.train_steps[next(iter(afit.train_steps))]
    warnings: list[str] = []
    if steps is None:
        steps = np.arange(s0, rd.schedule.n_steps + 1)
    rd, steps = prediction_steps(rd, steps, schedule, warnings)
    uniq = np.unique(steps)
    knots = (
        uniq
        if uniq.size <= _KNOTS
        else np.unique(uniq[np.linspace(0, uniq.size - 1, _KNOTS).round().astype(int)])
    )
    afit = _plausible_under(afit, rd, sn, int(steps.max()), warnings)
    best = afit.model.curve({}, rd, steps)
    with np.errstate(all="ignore"):
        best = np.log(best)
    own_lo = np.zeros(knots.shape)
    own_hi = np.zeros(knots.shape)
    for label, w, _model, _theta in afit.model.members:  # type: ignore[attr-defined]
        p = predict(afit.members[label], knots, run=None, schedule=rd.schedule, level=lev)
        with np.errstate(all="ignore"):
            lm = np.log(p.loss)
            lo_m = lm - np.log(p.mean_lower if p.mean_lower is not None else p.loss)
            hi_m = np.log(p.mean_upper if p.mean_upper is not None else p.loss) - lm
        # where a law is infinite (S = 0) it says nothing about the width
        own_lo += w * np.where(np.isfinite(lo_m), lo_m, 0.0)
        own_hi += w * np.where(np.isfinite(hi_m), hi_m, 0.0)
    lo_own = np.interp(steps, knots, own_lo)
    hi_own = np.interp(steps, knots, own_hi)
    cal = afit.calibration.halfwidth((steps - s0) / max(sn - s0, 1), lev)
    h_lo = np.maximum(lo_own, cal)
    h_hi = np.maximum(hi_own, cal)
    finite = np.isfinite(best)  # a law infinite at S = 0 makes the pooled curve so there
    raw = best
    best = np.where(finite, best, 0.0)
    h_lo, h_hi = _lr_extrapolation(afit, rd, steps, best, h_lo, h_hi)
    best, h_lo, more = _decay_sanity(afit, rd, steps, best, h_lo, sn)
    best = np.where(finite, best, raw)
    h_lo = np.where(finite, h_lo, 0.0)
    h_hi = np.where(finite, h_hi, 0.0)
    warnings.extend(more)
    zn = z_quantile(lev) * afit.noise_raw
    if not np.all(np.isfinite(best[steps > sn])):
        warnings.append("the prediction is not finite at some steps after the fitted ones")
    elif afit.floor > 0 and float(np.min(best)) < np.log(afit.floor) - 1e-9:
        warnings.append(
            f"the prediction falls below the members' floor {afit.floor:.4g}: it extrapolates "
            "a drop the fitted laws do not support; treat its low end with suspicion"
        )
    return Prediction(
        step=steps,
        t=rd.schedule.S(steps),
        loss=np.exp(best),
        lower=np.exp(best - np.sqrt(h_lo**2 + zn**2)),
        upper=np.exp(best + np.sqrt(h_hi**2 + zn**2)),
        level=lev,
        mean_lower=np.exp(best - h_lo),
        mean_upper=np.exp(best + h_hi),
        warnings=tuple(warnings),
    )


def _plausible_under(afit: AutoFit, rd: RunData, sn: int, end: int, warnings: list[str]) -> AutoFit:
    """The fit with only the members whose prediction under ``rd`` (a what-if schedule)
    stays finite and above their own floor up to ``end``, weights renormalised (the fit
    checked them under the run's own schedule only)."""
    members = afit.model.members  # type: ignore[attr-defined]
    bad = {
        label: why
        for label, _w, _m, _t in members
        if (why := _implausible(afit.members[label], sn, end, rd))
    }
    if not bad or len(bad) == len(members):
        return afit
    kept = [(lb, w, m, t) for lb, w, m, t in members if lb not in bad]
    total = sum(w for _lb, w, _m, _t in kept)
    warnings.extend(f"{lb} is not weighed under this schedule: {why}" for lb, why in bad.items())
    model = AutoModel(tuple((lb, w / total, m, t) for lb, w, m, t in kept))
    return dataclasses.replace(afit, model=model)


def _decay_sanity(
    afit: AutoFit, rd: RunData, steps: np.ndarray, best: np.ndarray, h_lo: np.ndarray, sn: int
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Through an lr decay ahead of the cut: never predict more than without the decay, and
    where the prefix never saw a decay, let the interval show that its gain is unknown.

    The "no decay" curve holds the lr at its value at the cut, ``lr_cut``. Where the
    schedule's lr up to a step never exceeds it, the prediction there is at most that
    curve's. Without a decay in the prefix the gain is not identified: the lower edge then
    reaches the largest gain linear response allows, all of the loss above the floor f being
    noise held up in proportion to the lr, L_low(s) = f + (L_flat(s) - f) eta(s) / lr_cut.
    """
    sched = rd.schedule
    notes: list[str] = []
    ahead = steps > sn
    if afit.lr_cut <= 0 or not ahead.any():
        return best, h_lo, notes
    lr = sched.at(np.clip(steps, 0, sched.n_steps - 1))
    if not np.any(lr[ahead] < DECAY_SHARE * afit.lr_cut):
        return best, h_lo, notes
    cut = min(sn, sched.n_steps - 1)
    flat_lr = np.concatenate([sched.lr[: cut + 1], np.full(sched.n_steps - cut - 1, afit.lr_cut)])
    flat = rd.with_schedule(Schedule(flat_lr, "no decay"))
    with np.errstate(all="ignore"):
        base = np.log(afit.model.curve({}, flat, steps))
    lr_steps = np.maximum.accumulate(np.where(ahead, lr, 0.0))
    under = ahead & (lr_steps <= afit.lr_cut * (1 + 1e-9)) & np.isfinite(base)
    higher = under & (best > base)
    if higher.any():
        notes.append(
            "the weighted models predicted a higher loss with the lr decay than without it at "
            f"{int(higher.sum())} step(s); the prediction there is the no-decay curve (a decay "
            "does not raise the loss)"
        )
        best = np.where(higher, base, best)
    if not afit.decay_seen:
        with np.errstate(all="ignore"):
            share = np.clip(lr / afit.lr_cut, 0.0, 1.0)
            low = np.log(afit.floor + np.maximum(np.exp(base) - afit.floor, 0.0) * share)
        low = np.where(ahead & np.isfinite(low), low, best)
        h_lo = np.maximum(h_lo, best - np.minimum(low, best))
        notes.append(
            "the decay gain is not identified: the fitted steps hold no lr decay and no earlier "
            "run that decayed was given, so the prediction's drop after the decay is the "
            "models' guess; the interval's lower edge allows the largest drop linear response "
            f"permits (all of the loss above the floor {afit.floor:.4g} held up by the lr). "
            "Give earlier runs that decayed (--prior) to narrow it."
        )
    return best, h_lo, notes


#: members whose backtest score is within this factor of the best one are credible
_CREDIBLE = 10.0


def _lr_extrapolation(
    afit: AutoFit,
    rd: RunData,
    steps: np.ndarray,
    best: np.ndarray,
    h_lo: np.ndarray,
    h_hi: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Where the lr falls below any lr the fitted steps saw after their peak, the backtests
    (made at the lrs seen) cannot tell the models apart; the interval there also spans the
    predictions of every credible member (backtest score within a factor 10 of the best:
    the laws that explain the prefix, whatever they say about lrs it never saw)."""
    c = afit.combination
    if c is None or afit.run is None:
        return h_lo, h_hi
    sched = rd.schedule
    fitted = afit.run.traj.step
    seen = afit.run.schedule.at(np.clip(fitted, 0, afit.run.schedule.n_steps - 1))
    lowest = float(np.min(seen[int(np.argmax(seen)) :]))
    lr = sched.at(np.clip(steps, 0, sched.n_steps - 1))
    beyond = (steps > fitted[-1]) & (lr < lowest * (1 - 1e-9))
    if not beyond.any():
        return h_lo, h_hi
    finite = [v for v in c.scores.values() if np.isfinite(v)]
    top = min(finite) if finite else np.inf
    credible = [
        m
        for m, v in c.scores.items()
        if m in afit.members
        and m not in afit.failed
        and v <= _CREDIBLE * top + 1e-4
        and not _implausible(afit.members[m], int(fitted[-1]), int(steps.max()), rd)
    ]
    lo, hi = best.copy(), best.copy()
    for m in credible:
        f = afit.members[m]
        with np.errstate(all="ignore"):
            p = np.log(np.asarray(f.model.curve(f.theta(), rd, steps), dtype=float))
        ok = np.isfinite(p)
        lo = np.where(ok, np.minimum(lo, p), lo)
        hi = np.where(ok, np.maximum(hi, p), hi)
    with np.errstate(invalid="ignore"):  # a law infinite at S = 0 is inf there in all
        h_lo = np.where(beyond, np.maximum(h_lo, best - lo), h_lo)
        h_hi = np.where(beyond, np.maximum(h_hi, hi - best), h_hi)
    return h_lo, h_hi
