"""The recommendation checked against earlier runs: what the fit predicts for each earlier
run's own schedule against the final loss that run reached (smoothed), and whether an
earlier schedule of the same budget already did better than the recommendation promises.

Ranking check (:func:`keep_earlier`). The search ranks schedules by the law alone (its
curve at the fitted parameters, without :func:`lossrate.predict`'s clamp); the earlier runs
of the same budget and peak are schedules whose outcome is measured. For each pair (a, b) of
them the law predicts d_law = ln(law_a / law_b) and the runs measured d = ln(L_a / L_b); a
pair the law orders the other way round (d_law d < 0) is a comparison it got wrong by
|d - d_law|. The largest such error is the margin the law has shown it can be wrong by when
comparing two schedules of this budget. The law's pick is recommended only when the law
predicts it beats the best earlier run e (least L_e) by more than that margin:
ln(law_e / law_pick) > margin; otherwise e's schedule, whose outcome is measured, is kept.
A law that orders every earlier pair as measured has margin 0 and is trusted.

Measured on benchmarks/schedule_optimisation.py (ode_relax under the prior from the three
earlier runs cosine / WSD 20 % / WSD 50 %, one seed each): on Fashion-MNIST (Adam) the law
predicts WSD 50 % 2.0 % below WSD 20 % where the runs reached 17 % above it (margin 19 %),
and its pick (a 50 % linear decay) beats WSD 20 % by 2.7 % in the law: WSD 20 % is kept (the
law's pick realised 6.4 % worse than WSD 20 % over 3 seeds). On MNIST (SGD) the law orders all
three pairs as measured: its pick is kept (realised 2.4-4.3 % better than WSD 20 %).

For every earlier run e with its lr logged: r_e = ln(L_e / L_hat_e), L_e the smoothed final
loss it reached and L_hat_e the fit's prediction under its schedule at its last step. The
recommendation's level-corrected final loss is L_best exp(median r_e); an earlier run of the
same budget and peak (within 2 %) whose L_e lies below it is named: the law's own error on
the schedules already run says the search may not beat it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._results import Prediction
from ..metrics import smoothed
from ..schedule import Schedule
from ..trajectory import Trajectory

__all__ = ["EarlierCheck", "check_earlier", "keep_earlier", "misranked"]

_SAME_BUDGET = 0.02


@dataclass(frozen=True)
class EarlierCheck:
    """One earlier run: its final step, the fit's prediction there under its schedule and
    the smoothed loss it reached."""

    name: str
    step: int
    predicted: float
    realised: float
    peak: float
    law: float = float("nan")
    schedule: Schedule | None = field(default=None, compare=False, repr=False)

    @property
    def log_error(self) -> float:
        """ln(realised / predicted)."""
        return float(np.log(self.realised / self.predicted))


def check_earlier(
    earlier: Mapping[str, Any] | Iterable[Any] | None,
    predict: Callable[[np.ndarray, Schedule], Prediction],
    law: Callable[[int, Schedule], float] | None = None,
) -> tuple[EarlierCheck, ...]:
    """The fit's prediction against each earlier run that logs its lr (others are skipped);
    ``law(step, schedule)`` is the law alone there (what the search ranks by)."""
    if earlier is None:
        return ()
    items = earlier.items() if isinstance(earlier, Mapping) else enumerate(earlier)
    out = []
    for key, item in items:
        traj = getattr(item, "traj", item)
        if not isinstance(traj, Trajectory) or traj.lr is None or traj.n < 10:
            continue
        sched = getattr(item, "schedule", None)
        if not isinstance(sched, Schedule):
            sched = Schedule.from_logged(traj.step, traj.lr)
        last = int(traj.step[-1])
        if last > sched.n_steps or last < 1:
            continue
        with np.errstate(all="ignore"):
            pred = float(predict(np.array([last]), sched).loss[-1])
        real = float(smoothed(np.clip(traj.loss, 1e-300, None))[-1])
        with np.errstate(all="ignore"):
            raw = float(law(last, sched)) if law is not None else float("nan")
        if np.isfinite(pred) and pred > 0 and np.isfinite(real) and real > 0:
            name = str(traj.meta.name or key)
            peak = float(np.max(sched.lr))
            out.append(EarlierCheck(name, last, pred, real, peak, raw, sched))
    return tuple(out)


def beaten_by(
    checks: tuple[EarlierCheck, ...], best_loss: float, n_steps: int, peak: float
) -> tuple[float, list[EarlierCheck]]:
    """The level-corrected final loss of the recommendation, and the earlier runs of the same
    budget and peak that reached less."""
    if not checks:
        return best_loss, []
    corrected = best_loss * float(np.exp(np.median([c.log_error for c in checks])))
    same = [
        c
        for c in checks
        if abs(c.step + 1 - n_steps) <= _SAME_BUDGET * n_steps
        and abs(c.peak - peak) <= _SAME_BUDGET * peak
        and c.realised < corrected
    ]
    return corrected, same


def _same(checks: tuple[EarlierCheck, ...], n_steps: int, peak: float) -> list[EarlierCheck]:
    """The checks of this budget and peak (within 2 %) with a usable law value."""
    return [
        c
        for c in checks
        if abs(c.step + 1 - n_steps) <= _SAME_BUDGET * n_steps
        and abs(c.peak - peak) <= _SAME_BUDGET * peak
        and np.isfinite(c.law)
        and c.law > 0
    ]


def misranked(
    checks: tuple[EarlierCheck, ...], n_steps: int, peak: float
) -> tuple[float, tuple[str, str] | None]:
    """The largest error |d - d_law| of the law over the pairs of earlier runs (this budget
    and peak) that it orders against their measured losses (module docstring), with that
    pair (better measured first); (0, None) when it orders every pair as measured."""
    same = _same(checks, n_steps, peak)
    worst, pair = 0.0, None
    for i, a in enumerate(same):
        for b in same[i + 1 :]:
            d = float(np.log(a.realised / b.realised))
            d_law = float(np.log(a.law / b.law))
            if d * d_law < 0 or (d != 0 and d_law == 0):
                err = abs(d - d_law)
                if err > worst:
                    worst, pair = err, ((a.name, b.name) if d < 0 else (b.name, a.name))
    return worst, pair


def keep_earlier(
    checks: tuple[EarlierCheck, ...], pick_law: Callable[[int], float], n_steps: int, peak: float
) -> tuple[EarlierCheck | None, float, float, tuple[str, str] | None]:
    """The earlier run to keep instead of the law's pick, or None (module docstring), with the
    law's predicted gain of the pick over the best earlier run (ln), the margin and the
    misordered pair. ``pick_law(step)`` is the law's loss for the pick at ``step``."""
    same = [c for c in _same(checks, n_steps, peak) if c.schedule is not None]
    if not same:
        return None, float("nan"), 0.0, None
    margin, pair = misranked(checks, n_steps, peak)
    best = min(same, key=lambda c: c.realised)
    with np.errstate(all="ignore"):
        gain = float(np.log(best.law / pick_law(best.step)))
    if not np.isfinite(gain) or gain > margin:
        return None, gain, margin, pair
    return best, gain, margin, pair
