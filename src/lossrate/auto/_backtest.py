"""Rolling-origin backtests inside a prefix, at the extrapolation ratio asked for.

A prefix whose logged steps run from s0 to sn, asked to predict to step H, extrapolates by
the ratio r = (H - s0) / (sn - s0) (predicting from 30 % of a run to its end: r = 3.3).
The prefix holds backtests of the same ratio: an origin o, fit on the steps <= o, predicts
the steps in (o, min(s0 + r (o - s0), sn)], scored against the smoothed observed loss.
Origins with the full ratio lie in [s0 + (sn - s0) / (2 r), s0 + (sn - s0) / r]; an origin
needs ``min_points`` logged points before it, so a short prefix or a large r moves the
origins later and their ratios fall short of r (their horizons end at sn). An origin needs
at least 12 points, and a fifth of the prefix's: a backtest on a handful of noisy points
tells more about the noise than about the law. Three more origins lie late in the prefix,
between 50 % and 80 % of it (horizons at sn, shorter ratios): they fit about as much of
the run as the final fit does, which the early ones cannot (on the real-log suite the
early origins alone picked worse laws for runs whose later part bends).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from .._errors import LossrateError
from .._model import RunData
from ..fitting.engine import fit
from ..metrics import smoothed
from ..schedule import Schedule
from ..trajectory import Trajectory
from ._candidates import Candidate

__all__ = [
    "Backtest",
    "Plan",
    "plan_backtests",
    "plan_origins",
    "plan_transfer_tests",
    "point_prediction",
]

#: backtest origins planned per group (full ratio; late)
N_ORIGINS = 3
#: the fewest points a backtest fits, and the least share of the prefix's points
MIN_POINTS = 12
MIN_SHARE = 0.2


@dataclass(frozen=True, eq=False)
class Backtest:
    """One rolling-origin backtest: fit on the steps <= ``origin``, scored at ``steps``.

    ``ratio`` is (step - s0) / (origin - s0) at each scored step, ``observed`` the smoothed
    observed ln L there, ``preds`` every candidate's ln L prediction (NaN where its fit
    failed or its curve is not finite).
    """

    origin: int
    steps: np.ndarray
    ratio: np.ndarray
    observed: np.ndarray
    preds: dict[str, np.ndarray]
    run: str = ""  # an earlier run's name: a leave-one-run-out test on it, not the prefix

    @property
    def horizon_ratio(self) -> float:
        return float(self.ratio[-1])

    def error(self, label: str) -> np.ndarray:
        """ln(pred / observed) of ``label`` at every scored step."""
        return self.preds[label] - self.observed


def plan_origins(
    steps: np.ndarray, ratio: float, *, n: int = N_ORIGINS, min_points: int | None = None
) -> list[tuple[int, int]]:
    """(origin, horizon) pairs, as logged steps of ``steps`` (module docstring).

    ``min_points`` (default: 12, or a fifth of the points when that is more) points must
    lie at or before an origin.
    """
    if min_points is None:
        min_points = max(MIN_POINTS, int(MIN_SHARE * steps.size))
    s0, sn = int(steps[0]), int(steps[-1])
    span = sn - s0
    if steps.size < min_points + 2 or span <= 0:
        return []
    f_min = (int(steps[min_points - 1]) - s0) / span
    f_full = 1.0 / max(ratio, 1.0 + 1e-9)
    hi = min(max(f_full, 1.5 * f_min), 0.8)
    lo = min(max(hi / 2, f_min), hi)
    early = np.geomspace(max(lo, 1e-12), hi, n)
    late = np.geomspace(max(0.5, f_min, hi), max(0.8, f_min, hi), n) if hi < 0.8 else []
    fs = sorted(set(early) | set(late))
    out: list[tuple[int, int]] = []
    for f in fs:
        i = int(np.searchsorted(steps, s0 + f * span, side="right")) - 1
        i = max(i, min_points - 1)
        o = int(steps[i])
        h = int(min(s0 + ratio * (o - s0), sn))
        if h <= o or (out and out[-1][0] == o):
            continue
        if int(np.sum((steps > o) & (steps <= h))) < 2:
            continue
        out.append((o, h))
    return out


@dataclass(frozen=True, eq=False)
class Plan:
    """One backtest to run: fit every candidate on ``head`` (under ``schedule``) and score
    it at ``steps`` against ``observed`` (smoothed ln L); ``ratio`` as in :class:`Backtest`."""

    origin: int
    head: Trajectory
    schedule: Schedule
    steps: np.ndarray
    ratio: np.ndarray
    observed: np.ndarray
    run: str = ""

    def backtest(self, preds: dict[str, np.ndarray]) -> Backtest:
        return Backtest(self.origin, self.steps, self.ratio, self.observed, preds, self.run)


def plan_backtests(
    traj: Trajectory, schedule: Schedule, smooth_log: np.ndarray, ratio: float
) -> list[Plan]:
    """The rolling-origin backtests inside the (thinned) prefix ``traj``, whose smoothed
    ln L is ``smooth_log``."""
    s0 = int(traj.step[0])
    out = []
    for origin, horizon in plan_origins(traj.step, ratio):
        scored = (traj.step > origin) & (traj.step <= horizon)
        steps = traj.step[scored]
        out.append(
            Plan(
                origin=origin,
                head=traj.select(traj.step <= origin),
                schedule=schedule,
                steps=steps,
                ratio=(steps - s0) / max(origin - s0, 1),
                observed=smooth_log[scored],
            )
        )
    return out


def plan_transfer_tests(
    runs: Mapping[str, RunData],
    fraction: float,
    *,
    max_points: int,
    thin: Callable[[Trajectory, int], Trajectory],
) -> list[Plan]:
    """Earlier runs as tests at the full ratio: each is cut at the same ``fraction`` of its
    steps as the run being predicted, every candidate is fitted on that cut alone and
    scored on the rest of the run (against its smoothed loss). Runs too short to cut are
    skipped."""
    out = []
    for name, rd in runs.items():
        whole = thin(rd.traj, max_points)
        cut = whole.step[0] + fraction * (whole.step[-1] - whole.step[0])
        head_mask = whole.step <= cut
        if head_mask.sum() < MIN_POINTS or (~head_mask).sum() < 2:
            continue
        head = whole.select(head_mask)
        smooth_log = np.log(smoothed(whole.loss))
        steps = whole.step[~head_mask]
        s0, origin = int(whole.step[0]), int(head.step[-1])
        out.append(
            Plan(
                origin=origin,
                head=head,
                schedule=rd.schedule,
                steps=steps,
                ratio=(steps - s0) / max(origin - s0, 1),
                observed=smooth_log[~head_mask],
                run=str(name),
            )
        )
    return out


def point_prediction(
    c: Candidate, head: Trajectory, schedule: Schedule, steps: np.ndarray, seed: int
) -> np.ndarray:
    """ln L of candidate ``c`` fitted on ``head`` at ``steps`` (NaN where its fit failed or
    its curve is not finite). One start per guess, no interval: a backtest needs the point."""
    nan = np.full(steps.shape, np.nan)
    try:
        model = c.build(schedule)
        opts = {"starts": 0, **dict(c.options)}
        f = fit(RunData(head, schedule), model, intervals=False, seed=seed, **opts)
        with np.errstate(all="ignore"):
            lm = np.log(np.asarray(f.model.curve(f.theta(), f.runs[0], steps), dtype=float))
    except LossrateError:
        return nan
    return np.where(np.isfinite(lm), lm, np.nan)
