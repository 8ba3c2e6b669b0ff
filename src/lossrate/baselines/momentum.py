"""The momentum law of Tissue et al. 2024, "Scaling law with learning rate annealing".

    L(s) = L0 + A S1(s)^-alpha - C S2(s),
    S1(s) = sum_{j<s} eta_j                                 (forward area),
    S2(s) = sum_{i<s} m_i,  m_i = lam m_{i-1} + (eta_{i-1} - eta_i)   (annealing area),

with the momentum decay lam = 0.999 as in the paper, computed in O(steps) by a
first-order recursive filter (:func:`lossrate.baselines._terms.annealing_area`).

Warmup: by default the warmup's lr rise enters S2 with d_i < 0 (``include_warmup=True``),
as the multi-power law's reference code does for its loss drop. After warmup that part of
S2 relaxes to about -peak / (1 - lam) over ~1 / (1 - lam) steps, which lets the early
curve pin C. On the mpl data's prefix cases (README table, 400M, fitted with Huber on
ln L) it gave final-loss errors of 1.1 / 0.8 / 1.7 %, against 2.5 / 1.1 / 15 % with the
warmup left out (``include_warmup=False``: every lr change before the first decrease is
dropped, so a warmup-then-constant schedule has S2 = 0). S1 always counts the warmup.
A constant schedule without warmup has S2 = 0 either way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from .._errors import InvalidArgumentError
from .._model import CurveModel, Param, RunData
from ._guess import loss_range, power_fit
from ._terms import annealing_area, whole_steps

__all__ = ["MomentumLaw"]

_CACHE_SIZE = 512


@dataclass(frozen=True)
class MomentumLaw(CurveModel):
    """L = L0 + A S1^-alpha - C S2 (module docstring); ``decay`` is lambda."""

    name: ClassVar[str] = "momentum"
    positive_time: ClassVar[bool] = True
    decay: float = 0.999
    include_warmup: bool = True
    # (S1, S2) by (id(schedule), steps): a fit evaluates the same areas thousands of times.
    # Each entry holds its schedule, so the id cannot be reused while the entry lives.
    _cache: dict[Any, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.decay < 1.0:
            raise InvalidArgumentError(
                f"decay must lie in [0, 1), got {self.decay!r}; the paper uses 0.999."
            )

    def _s2_scale(self, run: RunData) -> float:
        """The largest annealing area a decay from the peak can build: peak / (1 - lambda)."""
        return max(float(np.max(run.schedule.lr)), 1e-300) / (1.0 - self.decay)

    def asymptote(self, theta: Mapping[str, float], run: RunData) -> float | None:
        """L0: the loss the law approaches as the lr sum (or step count) grows."""
        return float(theta["L0"])

    def params(self, run: RunData) -> Sequence[Param]:
        hi = loss_range(run)[1]
        return (
            Param("L0", 0.0, hi, doc="loss floor of the forward term"),
            Param("A", 1e-8, 1e6, "log", "amplitude"),
            Param("alpha", 1e-3, 5.0, doc="exponent in the lr sum"),
            Param("C", 0.0, 100.0 * hi / self._s2_scale(run), doc="loss drop per annealing area"),
        )

    def guesses(self, run: RunData) -> Sequence[Mapping[str, float]]:
        lo, hi = loss_range(run)
        S1 = run.schedule.S(run.traj.step)
        span = max(hi - lo, 1e-3 * lo)
        out = []
        for f in (0.1, 0.5):
            L0 = max(lo - f * span, 0.0)
            A, alpha = power_fit(S1, run.traj.loss, L0)
            for c in (0.1, 1.0):
                out.append({"L0": L0, "A": A, "alpha": alpha, "C": c * span / self._s2_scale(run)})
        return out

    def areas(self, run: RunData, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(S1, S2) at ``steps`` (cached per schedule object and steps)."""
        sched = run.schedule
        key = (id(sched), np.asarray(steps).tobytes())
        hit = self._cache.get(key)
        if hit is not None and hit[0] is sched:
            return hit[1], hit[2]
        n = whole_steps(sched, steps)
        S2 = annealing_area(sched, n, decay=self.decay, include_warmup=self.include_warmup)
        S1 = sched.S(n)
        S1.setflags(write=False)
        S2.setflags(write=False)
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.clear()
        self._cache[key] = (sched, S1, S2)
        return S1, S2

    def curve(self, theta: Mapping[str, float], run: RunData, steps: np.ndarray) -> np.ndarray:
        S1, S2 = self.areas(run, steps)
        with np.errstate(divide="ignore"):
            forward = theta["A"] * np.power(S1, -theta["alpha"])
        return theta["L0"] + forward - theta["C"] * S2

    def describe(self) -> str:
        warm = "" if self.include_warmup else ", warmup excluded from S2"
        return f"{self.name}(lambda={self.decay:g}{warm})"
