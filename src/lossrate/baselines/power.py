"""Power laws in steps and in intrinsic time, and the exponential law in intrinsic time.

* ``power_steps``:  L(s) = L0 + A (s + s0)^-alpha, with a fixed offset s0 (default 1):
  the common Kaplan-style form in optimizer steps. Fitting s0 too is ill-posed on logs
  that start after a long warmup (it trades against A and alpha), so it is a setting.
* ``power_S``:      L(s) = L0 + A S(s)^-alpha, S(s) = sum_{j<s} eta_j (Chinchilla-like
  in the lr sum; the same form as the gradient-flow term of the multi-power law).
  Infinite at S = 0 (step 0 of a schedule).
* ``exponential``:  L(s) = L0 + A exp(-S(s) / tau), in intrinsic time so that it too
  sees the schedule (a linear-convergence law; a weak peer on power-law curves).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .._errors import check_positive
from .._model import CurveModel, Param, RunData
from ._guess import loss_range, power_fit
from ._terms import whole_steps

__all__ = ["Exponential", "PowerS", "PowerSteps"]

_FLOOR_FRACTIONS = (0.05, 0.3, 1.0)  # L0 guesses: min loss minus this share of the range


def _floors(run: RunData) -> list[float]:
    lo, hi = loss_range(run)
    return [max(lo - f * max(hi - lo, 1e-3 * lo), 0.0) for f in _FLOOR_FRACTIONS]


def _floor_param(run: RunData) -> Param:
    lo = loss_range(run)[0]
    return Param("L0", 0.0, max(lo, 1e-12), doc="irreducible loss, below the lowest observed loss")


class _PowerLaw(CurveModel):
    """L = L0 + A x^-alpha for a clock x(step) that the subclass defines."""

    _clock: ClassVar[str] = ""

    @abstractmethod
    def _x(self, run: RunData, steps: np.ndarray) -> np.ndarray:
        """The clock at ``steps`` (checked whole steps of ``run.schedule``)."""

    def asymptote(self, theta: Mapping[str, float], run: RunData) -> float | None:
        """L0: the loss the law approaches as the lr sum (or step count) grows."""
        return float(theta["L0"])

    def params(self, run: RunData) -> Sequence[Param]:
        return (
            _floor_param(run),
            Param("A", 1e-8, 1e9, "log", "amplitude"),
            Param("alpha", 1e-3, 5.0, doc=f"exponent in {self._clock}"),
        )

    def guesses(self, run: RunData) -> Sequence[Mapping[str, float]]:
        x = self._x(run, run.traj.step)
        out = []
        for L0 in _floors(run):
            A, alpha = power_fit(x, run.traj.loss, L0)
            out.append({"L0": L0, "A": A, "alpha": alpha})
        return out

    def curve(self, theta: Mapping[str, float], run: RunData, steps: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return theta["L0"] + theta["A"] * np.power(self._x(run, steps), -theta["alpha"])


@dataclass(frozen=True)
class PowerSteps(_PowerLaw):
    """L(s) = L0 + A (s + s0)^-alpha in optimizer steps s (module docstring)."""

    name: ClassVar[str] = "power_steps"
    _clock: ClassVar[str] = "steps"
    s0: float = 1.0

    def __post_init__(self) -> None:
        check_positive("s0", self.s0, allow_zero=True)

    def _x(self, run: RunData, steps: np.ndarray) -> np.ndarray:
        return whole_steps(run.schedule, steps) + self.s0

    def describe(self) -> str:
        return f"{self.name}(s0={self.s0:g})"


@dataclass(frozen=True)
class PowerS(_PowerLaw):
    """L(s) = L0 + A S(s)^-alpha in intrinsic time S (module docstring)."""

    name: ClassVar[str] = "power_S"
    positive_time: ClassVar[bool] = True
    _clock: ClassVar[str] = "the lr sum"

    def _x(self, run: RunData, steps: np.ndarray) -> np.ndarray:
        return run.schedule.S(whole_steps(run.schedule, steps))


@dataclass(frozen=True)
class Exponential(CurveModel):
    """L(s) = L0 + A exp(-S(s) / tau) in intrinsic time S (module docstring)."""

    name: ClassVar[str] = "exponential"

    def asymptote(self, theta: Mapping[str, float], run: RunData) -> float | None:
        """L0: the loss the law approaches as the lr sum (or step count) grows."""
        return float(theta["L0"])

    def params(self, run: RunData) -> Sequence[Param]:
        span = max(float(run.schedule.S(int(run.traj.step[-1]))), 1e-12)
        return (
            _floor_param(run),
            Param("A", 1e-8, 1e6, "log", "amplitude"),
            Param("tau", 1e-3 * span, 1e3 * span, "log", "decay time in the lr sum"),
        )

    def guesses(self, run: RunData) -> Sequence[Mapping[str, float]]:
        S = run.schedule.S(run.traj.step)
        loss = run.traj.loss
        span = max(float(S[-1]), 1e-12)  # as in params()
        out = []
        for L0 in _floors(run):
            ok = loss > L0
            if ok.sum() >= 2 and np.ptp(S[ok]) > 0:
                slope = np.polyfit(S[ok], np.log(loss[ok] - L0), 1)[0]
                tau = -1.0 / slope if slope < 0 else span
                tau = float(np.clip(tau, 2e-3 * span, 5e2 * span))
                A = float(np.exp(np.mean(np.log(loss[ok] - L0) + S[ok] / tau)))
            else:
                tau, A = span, float(max(loss[0] - L0, 1e-3))
            out.append({"L0": L0, "A": float(np.clip(A, 1e-7, 1e5)), "tau": tau})
        return out

    def curve(self, theta: Mapping[str, float], run: RunData, steps: np.ndarray) -> np.ndarray:
        S = run.schedule.S(whole_steps(run.schedule, steps))
        return theta["L0"] + theta["A"] * np.exp(-S / theta["tau"])
