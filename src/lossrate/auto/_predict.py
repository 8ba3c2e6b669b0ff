"""``auto``'s prediction: the pooled curve with its calibrated interval, checked against
what a decay can do."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .._errors import InvalidArgumentError
from .._model import RunData
from .._results import Prediction
from ..fitting.intervals import z_quantile
from ..fitting.predict import predict, prediction_steps
from ..metrics import smoothed
from ..schedule import Schedule, continues
from ._candidates import DECAY_SHARE
from ._members import implausible
from ._result import AutoFit, AutoModel

__all__ = ["predict_auto"]

#: interval steps evaluated with parameter draws (the rest interpolated in ln L)
_KNOTS = 128


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
    h(rho) = q ln rho, rho = (s - s0)/(sn - s0) (:mod:`._calibrate`), and past the cut at
    least half of z times the members' weighted sd (:func:`_sd`); past the cut, while
    the lr does not rise above its value there, the upper edge stays at the loss the log
    reached (:func:`_no_rise`). The interval of an observed loss adds z * noise_raw in
    quadrature.
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
    weighted: list[tuple[float, np.ndarray]] = []
    for label, w, _model, _theta in afit.model.members:  # type: ignore[attr-defined]
        p = predict(afit.members[label], knots, run=None, schedule=rd.schedule, level=lev)
        with np.errstate(all="ignore"):
            lm = np.log(p.loss)
            lo_m = lm - np.log(p.mean_lower if p.mean_lower is not None else p.loss)
            hi_m = np.log(p.mean_upper if p.mean_upper is not None else p.loss) - lm
        # where a law is infinite (S = 0) it says nothing about the width
        own_lo += w * np.where(np.isfinite(lo_m), lo_m, 0.0)
        own_hi += w * np.where(np.isfinite(hi_m), hi_m, 0.0)
        weighted.append((w, lm))
    lo_own = np.interp(steps, knots, own_lo)
    hi_own = np.interp(steps, knots, own_hi)
    cal = afit.calibration.halfwidth((steps - s0) / max(sn - s0, 1), lev)
    spread = np.where(
        steps > sn, _SPREAD * z_quantile(lev) * np.interp(steps, knots, _sd(weighted)), 0.0
    )
    h_lo = np.maximum.reduce([lo_own, cal, spread])
    h_hi = np.maximum.reduce([hi_own, cal, spread])
    finite = np.isfinite(best)  # a law infinite at S = 0 makes the pooled curve so there
    raw = best
    best = np.where(finite, best, 0.0)
    h_lo, h_hi = _lr_extrapolation(afit, rd, steps, best, h_lo, h_hi)
    h_known = h_lo  # without the unidentified decay's edge
    best, h_lo, more = _decay_sanity(afit, rd, steps, best, h_lo, sn)
    h_hi = _no_rise(afit, rd, steps, best, h_hi, sn)
    best = np.where(finite, best, raw)
    h_lo = np.where(finite, h_lo, 0.0)
    h_hi = np.where(finite, h_hi, 0.0)
    zn = z_quantile(lev) * afit.noise_raw
    lower = np.exp(best - np.sqrt(h_lo**2 + zn**2))
    upper = np.exp(best + np.sqrt(h_hi**2 + zn**2))
    if more and more[-1].startswith(_UNIDENTIFIED):
        i = int(np.argmax(steps))  # the last step, at the edge without the decay's reach
        low = float(np.exp(best[i] - np.hypot(h_known[i] if finite[i] else 0.0, zn)))
        more[-1] += (
            f" If the decay gains what the weighted models guess, the {100 * lev:.0f} % "
            f"interval at step {int(steps[i])} is [{low:.4g}, {float(upper[i]):.4g}]."
        )
    warnings.extend(more)
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
        lower=lower,
        upper=upper,
        level=lev,
        mean_lower=np.exp(best - h_lo),
        mean_upper=np.exp(best + h_hi),
        warnings=tuple(warnings),
    )


#: past the cut the half-width is at least this share of z times the weighted sd of the
#: members' ln L (their disagreement): see :func:`_sd`
_SPREAD = 0.5


def _sd(weighted: list[tuple[float, np.ndarray]]) -> np.ndarray:
    """The weighted sd of the members' ln L at each knot (over the finite ones).

    An interval narrower than the laws' own disagreement claims the backtests settled which
    law is right, which a few backtests inside a prefix cannot: on the mpl WSD curves with
    an lr step-down at half the run (wsdcon, k = 50 %) the calibrated half-width alone
    covered 63 % of the held-out losses (the step at the cut puts the first held-out point
    0.8 % off, where h(rho) = q ln rho is 0). Half of z times the sd takes them to 87 %
    (``benchmarks/auto_variants.py``); no other group of the mpl curves or of the real-log
    suite changes (the calibrated width is wider there), and the point prediction does not.
    """
    w = np.array([wi for wi, _ in weighted], dtype=float)[:, None]
    lm = np.array([x for _, x in weighted], dtype=float)
    ok = np.isfinite(lm)
    den = np.sum(w * ok, 0)
    with np.errstate(all="ignore"):
        mu = np.sum(np.where(ok, w * lm, 0.0), 0) / den
        var = np.sum(np.where(ok, w * (lm - mu) ** 2, 0.0), 0) / den
    return np.where(den > 0, np.sqrt(np.maximum(var, 0.0)), 0.0)


def _plausible_under(afit: AutoFit, rd: RunData, sn: int, end: int, warnings: list[str]) -> AutoFit:
    """The fit with only the members whose prediction under ``rd`` (a what-if schedule)
    stays finite and above their own floor up to ``end``, weights renormalised (the fit
    checked them under the run's own schedule only)."""
    members = afit.model.members  # type: ignore[attr-defined]
    bad = {
        label: why
        for label, _w, _m, _t in members
        if (why := implausible(afit.members[label], sn, end, rd))
    }
    if not bad or len(bad) == len(members):
        return afit
    kept = [(lb, w, m, t) for lb, w, m, t in members if lb not in bad]
    total = sum(w for _lb, w, _m, _t in kept)
    warnings.extend(f"{lb} is not weighed under this schedule: {why}" for lb, why in bad.items())
    model = AutoModel(tuple((lb, w / total, m, t) for lb, w, m, t in kept), afit.model.starts)  # type: ignore[attr-defined]
    return dataclasses.replace(afit, model=model)


def _held(afit: AutoFit, lr: np.ndarray, ahead: np.ndarray) -> np.ndarray:
    """The steps past the cut (``ahead``) up to which the lr ``lr`` has never risen above its
    value at the cut: there no law of the family lets the loss rise."""
    return ahead & (np.maximum.accumulate(np.where(ahead, lr, 0.0)) <= afit.lr_cut * (1 + 1e-9))


_UNIDENTIFIED = "the decay gain is not identified"


def _decay_sanity(
    afit: AutoFit, rd: RunData, steps: np.ndarray, best: np.ndarray, h_lo: np.ndarray, sn: int
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Through an lr decay ahead of the cut: never predict more than without the decay, and
    where the prefix never saw a decay, let the interval show that its gain is unknown.

    The clamp holds only for a what-if that continues the fitted run (the same lr up to the
    cut); a schedule that differs before the cut is another run, whose decay may end higher
    (its own prediction then stands in for the no-decay curve below).

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
    if continues(afit.run.schedule, sched, cut):
        flat = rd.with_schedule(sched.held_from(cut, afit.lr_cut, name="no decay"))
        with np.errstate(all="ignore"):
            base = np.log(afit.model.curve({}, flat, steps))
        under = _held(afit, lr, ahead) & np.isfinite(base)
        higher = under & (best > base)
        if higher.any():
            notes.append(
                "the weighted models predicted a higher loss with the lr decay than without it "
                f"at {int(higher.sum())} step(s); the prediction there is the no-decay curve (a "
                "decay does not raise the loss)"
            )
            best = np.where(higher, base, best)
    else:  # another run from an earlier step: its decay may end higher; no clamp
        base = best
    if not afit.decay_seen:
        with np.errstate(all="ignore"):
            share = np.clip(lr / afit.lr_cut, 0.0, 1.0)
            low = np.log(afit.floor + np.maximum(np.exp(base) - afit.floor, 0.0) * share)
        low = np.where(ahead & np.isfinite(low), low, best)
        h_lo = np.maximum(h_lo, best - np.minimum(low, best))
        notes.append(
            f"{_UNIDENTIFIED}: the fitted steps hold no lr decay and no earlier "
            "run that decayed was given, so the prediction's drop after the decay is the "
            "models' guess; the interval's lower edge allows the largest drop linear response "
            f"permits (all of the loss above the floor {afit.floor:.4g} held up by the lr). "
            "Give earlier runs that decayed (--prior) to narrow it."
        )
    return best, h_lo, notes


def _no_rise(
    afit: AutoFit, rd: RunData, steps: np.ndarray, best: np.ndarray, h_hi: np.ndarray, sn: int
) -> np.ndarray:
    """The upper edge of the mean curve past the cut, while the lr never rises above its
    value at the cut, stays at or below the loss the log had reached there (its smoothed
    value at the last fitted step), or at the prediction where that is higher: every model
    of the family has dL/dt <= 0, so an edge above it is no law's answer (the calibrated
    h(rho), symmetric in ln L, put the edge of a Hugging Face GPT-2 run's prediction 30 %
    above the loss at the cut). Observation noise still widens the interval of a logged
    loss. A what-if that changes the lr before the cut is another run: no cap."""
    ahead = steps > sn
    sched = rd.schedule
    if afit.run is None or afit.lr_cut <= 0 or not ahead.any():
        return h_hi
    if not continues(afit.run.schedule, sched, min(sn, sched.n_steps - 1)):
        return h_hi
    traj = afit.run.traj
    reached = float(np.log(smoothed(traj.loss)[-1]))
    held = _held(afit, sched.at(np.clip(steps, 0, sched.n_steps - 1)), ahead)
    room = np.maximum(reached, best) - best
    return np.where(held & np.isfinite(best), np.minimum(h_hi, room), h_hi)


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
        and not implausible(afit.members[m], int(fitted[-1]), int(steps.max()), rd)
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
