"""The recommendation checked against earlier runs: what the fit predicts for each earlier
run's own schedule against the final loss that run reached (smoothed), and whether an
earlier schedule of the same budget already did better than the recommendation promises.

For every earlier run e with its lr logged: r_e = ln(L_e / L_hat_e), L_e the smoothed final
loss it reached and L_hat_e the fit's prediction under its schedule at its last step. The
recommendation's level-corrected final loss is L_best exp(median r_e); an earlier run of the
same budget and peak (within 2 %) whose L_e lies below it is named: the law's own error on
the schedules already run says the search may not beat it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._results import Prediction
from ..metrics import smoothed
from ..schedule import Schedule
from ..trajectory import Trajectory

__all__ = ["EarlierCheck", "check_earlier"]

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

    @property
    def log_error(self) -> float:
        """ln(realised / predicted)."""
        return float(np.log(self.realised / self.predicted))


def check_earlier(
    earlier: Mapping[str, Any] | Iterable[Any] | None,
    predict: Callable[[np.ndarray, Schedule], Prediction],
) -> tuple[EarlierCheck, ...]:
    """The fit's prediction against each earlier run that logs its lr (others are skipped)."""
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
        if np.isfinite(pred) and pred > 0 and np.isfinite(real) and real > 0:
            name = str(traj.meta.name or key)
            out.append(EarlierCheck(name, last, pred, real, float(np.max(sched.lr))))
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
