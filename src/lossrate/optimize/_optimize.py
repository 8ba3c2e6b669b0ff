"""``optimize_schedule``: the lr schedule that minimises the predicted final loss within a
step budget, searched through a fitted law's what-if predictions.

For each family (WSD, cosine, free-form monotone; :mod:`lossrate.optimize`) the search
scans a coarse grid of the family's few coordinates and polishes the best points with a
bounded Powell search, ranking schedules by the fit's point prediction of ln L at the
final step (:class:`._objective.Objective`, about a millisecond per schedule); the few best
of each family are then predicted with their intervals through :func:`lossrate.predict`
(which never lets a decay raise the loss and widens the interval where the decay gain is
not identified), and the lowest is kept.

The earlier runs then check the law's ranking (:func:`._check.keep_earlier`): when the law
orders a pair of earlier runs of this budget against the losses they reached, its pick is
recommended only if the law predicts it beats the best of them by more than that error;
otherwise that run's schedule, whose outcome is measured, is recommended
(``ScheduleOptimum.kept``, ``recommended``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .._errors import InvalidArgumentError
from .._model import RunData
from .._results import FitResult, Prediction
from ..auto import AutoFit
from ..schedule import Schedule, decays_after_peak
from ..trajectory import Trajectory
from ._check import beaten_by, check_earlier, keep_earlier
from ._family import Budget, Family
from ._objective import Objective, fitted_run
from ._registry import FAMILIES, get_family
from ._result import FamilyOptimum, Gain, ScheduleOptimum, relative
from ._search import search
from .cosine import standard_cosine

__all__ = ["optimize_schedule"]

_GRID = 120  # steps of the predicted curves kept for the figure
_PEAK_TOL = 1e-6


def optimize_schedule(
    fit_or_prior: Any,
    budget_steps: int,
    family: str | Family | Sequence[str | Family] = tuple(FAMILIES),
    *,
    data: Trajectory | RunData | None = None,
    earlier: Mapping[str, Any] | Sequence[Any] | None = None,
    prior: Any = None,
    peak: float | None = None,
    min_lr: float = 0.0,
    level: float | None = None,
    top: int = 3,
    progress: Callable[[str], None] | None = None,
) -> ScheduleOptimum:
    """The best schedule of each ``family`` for ``budget_steps`` steps (module docstring).

    Args:
        fit_or_prior: a fit of the run's prefix from :func:`lossrate.fit` (``auto``, the
            default, or one model) or :func:`lossrate.fit_with_prior`; or a
            :class:`lossrate.Prior`, fitted to ``data`` first (MAP fit).
        budget_steps: optimizer steps of the schedule (the whole run, from step 0; it may
            end before the fitted steps do, to plan the next run).
        family: ``"wsd"``, ``"cosine"``, ``"free"`` (or a :class:`Family`), or several.
        data: the prefix, when ``fit_or_prior`` is a Prior.
        earlier: the earlier runs (trajectories with their lr, or RunData) given to the fit
            (``lossrate.fit(..., earlier=...)``) or behind its prior: their peak lrs widen
            the range the peak may take, a decay among them identifies the decay gain, and
            the fit's prediction for each one's own schedule is checked against the loss it
            reached (``ScheduleOptimum.checks``; a note names those of the same budget that
            reached less than the recommendation promises).
        prior: the :class:`lossrate.Prior` a given fit was made under (likewise: its runs'
            peaks and whether any decayed).
        peak: the peak lr (default: the prefix's). It must lie within the peak lrs the prefix
            and the earlier runs or prior used: the laws were fitted there and say nothing
            reliable about another peak.
        min_lr: no lr below this.
        level: interval level (default: the fit's).
        top: schedules per family predicted with intervals before the best is chosen.
        progress: called with a short text after each family.

    Returns:
        a :class:`ScheduleOptimum`.

    Raises:
        InvalidArgumentError: an unknown family, a budget under 10 steps, a peak outside the range seen, or a fit that does not carry its run.
    """
    fit, peaks, decayed_before = _resolve(fit_or_prior, data, earlier, prior)
    run = fitted_run(fit)
    lev = float(fit.level if level is None else level)
    fams = [get_family(f) for f in ([family] if isinstance(family, str | Family) else family)]
    if not fams:
        raise InvalidArgumentError("family must name at least one schedule family.")
    n = int(budget_steps)
    last = int(run.traj.step[-1])
    if n != budget_steps or n < 10:
        raise InvalidArgumentError(
            f"budget_steps={budget_steps!r} must be a whole number of steps >= 10."
        )
    seen_lr = run.schedule.lr[: max(min(last, run.schedule.n_steps), 1)]
    own_peak = float(np.max(seen_lr))
    peaks = (own_peak, *peaks)
    top_peak = _check_peak(own_peak if peak is None else float(peak), peaks)
    warmup = int(np.argmax(seen_lr >= (1 - 1e-9) * own_peak))
    budget = Budget(n, top_peak, warmup if warmup < n // 2 else 0, float(min_lr))
    identified = bool(decays_after_peak(seen_lr) or decayed_before)
    if isinstance(fit, AutoFit):
        identified = identified or fit.decay_seen
    say = progress or (lambda _s: None)

    objective = Objective(fit, n)
    grid = np.unique(np.linspace(int(run.traj.step[0]), n, _GRID).round().astype(int))
    current = Schedule(run.schedule.extend(n).lr, "current")
    refs = {"current": current, "cosine": standard_cosine(budget)}
    ref_pred = {k: _predict(fit, grid, s, lev) for k, s in refs.items()}
    draws = isinstance(fit, AutoFit) is False
    ref_spread = {k: objective.member_logs(s, theta_draws=draws) for k, s in refs.items()}

    families: dict[str, FamilyOptimum] = {}
    seeds: list[Schedule] = []
    for fam in fams:
        t0 = time.perf_counter()
        calls0 = objective.calls
        cands = search(fam, budget, objective, seeds=seeds)
        chosen = _distinct(cands, fam, budget, int(top))
        scored = []
        for c in chosen:
            sch = fam.build(c.x, budget, c.variant)
            scored.append((float(_predict(fit, np.array([n]), sch, lev).loss[-1]), c, sch))
        _v, best, sch = min(scored, key=lambda t: t[0] if np.isfinite(t[0]) else np.inf)
        pred = _predict(fit, grid, sch, lev)
        spread = objective.member_logs(sch, theta_draws=draws)
        gains = tuple(_gain(k, pred, ref_pred[k], spread, ref_spread[k], identified) for k in refs)
        families[fam.name] = FamilyOptimum(
            family=fam.name,
            schedule=sch,
            settings=fam.settings(best.x, budget, best.variant),
            prediction=pred,
            gains=gains,
            evaluations=objective.calls - calls0,
            seconds=time.perf_counter() - t0,
        )
        seeds.append(sch)
        say(fam.name)
    notes = list(dict.fromkeys(w for f in families.values() for w in f.prediction.warnings))
    if identified and not isinstance(fit, AutoFit):
        # lossrate.predict's decay check reads only the fitted steps
        unseen = [w for w in notes if w.startswith("the decay gain is not identified")]
        notes = [w for w in notes if w not in unseen]
        if unseen:
            notes.append(
                "lossrate.predict notes that the fitted steps hold no lr decay; the earlier "
                "runs (or the prior's) did decay, which identifies the decay gain here"
            )
    if isinstance(fit, AutoFit) and not fit.decay_seen and identified:
        notes.append(
            "the earlier runs decayed, so the decay gain counts as identified here, but auto's "
            "own interval reads only the fitted steps and still allows the largest drop "
            "linear response permits; the gains' intervals above are the members' spread"
        )
    checks = check_earlier(
        earlier,
        lambda st, sc: _predict(fit, st, sc, lev),
        lambda st, sc: float(np.exp(Objective(fit, st)(sc))),
    )
    best_loss = min(f.loss for f in families.values())
    pick = min(families.values(), key=lambda f: f.loss)
    kept, gain_ln, margin, pair = keep_earlier(
        checks, lambda st: float(np.exp(Objective(fit, st)(pick.schedule))), n, budget.peak
    )
    if pair is not None:
        verdict = (
            f"so {kept.name}'s schedule is recommended (its outcome is measured)"
            if kept is not None
            else "less than the law's predicted gain, so its pick stands"
        )
        notes.append(
            f"the law orders the earlier runs {pair[0]} and {pair[1]} against the losses they "
            f"reached (error {100 * margin:.1f} %); it predicts its pick ({pick.family}) beats "
            f"the best earlier run by {100 * gain_ln:.1f} %, {verdict}"
        )
    elif kept is not None:
        notes.append(
            f"the law predicts no gain of its pick ({pick.family}) over the earlier run "
            f"{kept.name} ({100 * gain_ln:.1f} %), so that run's schedule is recommended"
        )
    elif np.isfinite(gain_ln):
        notes.append(
            "the law orders the earlier runs of this budget as the losses they reached, so its "
            f"pick ({pick.family}, predicted {100 * gain_ln:.1f} % below the best of them) stands"
        )
    corrected, beaten = beaten_by(checks, best_loss, n, budget.peak)
    if beaten and not np.isfinite(gain_ln):  # the ranking check above did not apply
        names = ", ".join(f"{c.name} ({c.realised:.4g})" for c in beaten)
        notes.append(
            f"earlier runs of this budget already reached less than the best schedule's "
            f"{best_loss:.4g} corrected by the fit's median error on the earlier runs "
            f"({corrected:.4g}): {names}; the law may not rank their schedules right, so "
            "consider keeping the best of them"
        )
    if len(set(peaks)) == 1 and peak is None:
        notes.append(
            f"the peak lr is held at {top_peak:.4g}, the only peak the fit has seen; give "
            "earlier runs at other peaks to search it"
        )
    return ScheduleOptimum(
        budget=budget,
        model=fit.model.describe(),
        level=lev,
        identified=identified,
        families=families,
        references={k: (refs[k], ref_pred[k]) for k in refs},
        notes=tuple(notes),
        peaks_seen=tuple(sorted(set(peaks))),
        checks=checks,
        kept=kept,
        kept_margin=margin,
    )


def _resolve(
    fit_or_prior: Any, data: Any, earlier: Any, prior: Any
) -> tuple[FitResult, tuple[float, ...], bool]:
    """The fit, the peak lrs of the earlier runs or prior, and whether any of them decayed."""
    from ..prior import Prior, fit_with_prior

    peaks: list[float] = []
    decayed = False
    if prior is not None:
        if not isinstance(prior, Prior):
            raise InvalidArgumentError(
                f"prior must be a lossrate.Prior, got {type(prior).__name__}."
            )
        peaks += [s.peak_lr for s in prior.sources if s.peak_lr]
        decayed = bool(prior.decayed)
    if isinstance(fit_or_prior, Prior):
        if data is None:
            raise InvalidArgumentError(
                "optimize_schedule(prior, ...) needs data=<the run's prefix> to fit under it."
            )
        fit: FitResult = fit_with_prior(data, fit_or_prior)
        peaks += [s.peak_lr for s in fit_or_prior.sources if s.peak_lr]
        decayed = bool(fit_or_prior.decayed)
    elif isinstance(fit_or_prior, FitResult):
        fit = fit_or_prior
        info = fit.extra.get("prior") if isinstance(fit.extra, Mapping) else None
        if isinstance(info, Mapping):
            decayed = bool(info.get("decayed", False))
    else:
        raise InvalidArgumentError(
            "fit_or_prior must be a FitResult (lossrate.fit / fit_with_prior) or a "
            f"lossrate.Prior, got {type(fit_or_prior).__name__}."
        )
    for item in _items(earlier):
        lr = _lr_of(item)
        if lr is not None and lr.size:
            peaks.append(float(np.max(lr)))
            decayed = decayed or decays_after_peak(lr)
    return fit, tuple(peaks), decayed


def _items(earlier: Any) -> Iterable[Any]:
    if earlier is None:
        return ()
    return earlier.values() if isinstance(earlier, Mapping) else earlier


def _lr_of(item: Any) -> np.ndarray | None:
    if isinstance(item, RunData):
        return item.schedule.lr
    if isinstance(item, Trajectory):
        return None if item.lr is None else np.asarray(item.lr, dtype=float)
    return None


def _check_peak(peak: float, peaks: Sequence[float]) -> float:
    lo, hi = min(peaks), max(peaks)
    if not (np.isfinite(peak) and lo * (1 - _PEAK_TOL) <= peak <= hi * (1 + _PEAK_TOL)):
        seen = ", ".join(f"{p:.4g}" for p in sorted(set(peaks)))
        raise InvalidArgumentError(
            f"peak lr {peak!r} lies outside the peak lrs the fit has seen ({seen}): the laws "
            "were fitted there and cannot say what another peak does (nor whether training "
            "stays stable). Keep the peak in that range, or give earlier runs (a prior) whose "
            "peaks span it."
        )
    return float(peak)


def _distinct(cands: list[Any], fam: Family, budget: Budget, k: int) -> list[Any]:
    """The ``k`` best candidates whose schedules differ (the first of equal ones)."""
    out, keys = [], set()
    for c in cands:
        if not np.isfinite(c.value) or c.value >= 1e6:
            continue
        key = fam.build(c.x, budget, c.variant).lr.round(12).tobytes()
        if key in keys:
            continue
        keys.add(key)
        out.append(c)
        if len(out) >= k:
            break
    return out or cands[:1]


def _predict(fit: FitResult, steps: np.ndarray, schedule: Schedule, level: float) -> Prediction:
    """:func:`lossrate.predict` under ``schedule`` (the prior's widening for a prior fit)."""
    from ..fit import predict

    info = fit.extra.get("prior") if isinstance(fit.extra, Mapping) else None
    if info:
        from ..prior import predict_with_prior

        return predict_with_prior(fit, steps, schedule=schedule, level=level, warn=False)  # type: ignore[arg-type]
    return predict(fit, steps, schedule=schedule, level=level)


def _gain(
    over: str,
    pred: Prediction,
    ref: Prediction,
    spread: np.ndarray,
    ref_spread: np.ndarray,
    identified: bool,
) -> Gain:
    """The gain over ``ref`` with its interval: the range of the gain over the members (or
    the parameter draws' 5-95 % range), widened, when the decay gain is not identified, to
    no gain and to the largest drop the prediction's own interval allows."""
    point = relative(float(pred.loss[-1]), float(ref.loss[-1]))
    g = ref_spread - spread  # ln L_ref - ln L, per member / draw
    g = g[np.isfinite(g)]
    if g.size >= 10:
        lo_ln, hi_ln = np.quantile(g, [0.05, 0.95])
    elif g.size:
        lo_ln, hi_ln = float(np.min(g)), float(np.max(g))
    else:
        lo_ln = hi_ln = -np.log1p(-point) if np.isfinite(point) else 0.0
    lower = min(1 - np.exp(-lo_ln), point)
    upper = max(1 - np.exp(-hi_ln), point)
    if not identified:
        low_end = pred.mean_lower if pred.mean_lower is not None else pred.lower
        lower = min(lower, 0.0)
        upper = max(upper, relative(float(low_end[-1]), float(ref.loss[-1])))
    return Gain(over, float(ref.loss[-1]), point, float(lower), float(upper))
