"""Cosine: after a linear warmup of ``warmup`` steps,
eta = final + (peak - final) (1 + cos(pi u)) / 2, u = (k - warmup) / (n - warmup).

Coordinates: x = (f, v), final = f peak, warmup = the run's warmup + v (n / 10): the search
may lengthen the warmup (up to a tenth of the budget) but never shortens the run's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from ..schedule import Schedule
from ._family import Budget, Family

__all__ = ["Cosine", "standard_cosine"]


def standard_cosine(budget: Budget) -> Schedule:
    """The usual cosine to zero over the budget after the run's warmup (the reference)."""
    return Schedule.cosine(budget.peak, budget.n_steps, final=0.0, warmup=budget.warmup)


class Cosine(Family):
    """Cosine decay (module docstring)."""

    name: ClassVar[str] = "cosine"

    def bounds(self, budget: Budget, variant: Mapping[str, Any]) -> list[tuple[float, float]]:
        return [(budget.min_lr / budget.peak, 0.9), (0.0, 1.0)]

    def starts(self, budget: Budget, variant: Mapping[str, Any]) -> np.ndarray:
        f0 = budget.min_lr / budget.peak
        return np.array([[f, v] for f in (f0, 0.05, 0.1, 0.2, 0.4) for v in (0.0, 0.5)])

    def _parts(self, x: np.ndarray, budget: Budget) -> tuple[float, int]:
        f, v = (float(c) for c in x)
        extra = round(float(np.clip(v, 0.0, 1.0)) * budget.n_steps / 10)
        return f * budget.peak, min(budget.warmup + extra, budget.n_steps // 2)

    def build(self, x: np.ndarray, budget: Budget, variant: Mapping[str, Any]) -> Schedule:
        final, warmup = self._parts(x, budget)
        s = Schedule.cosine(budget.peak, budget.n_steps, final=final, warmup=warmup)
        return budget.finish(s.lr.copy(), "cosine")

    def settings(
        self, x: np.ndarray, budget: Budget, variant: Mapping[str, Any]
    ) -> dict[str, float | int | str]:
        final, warmup = self._parts(x, budget)
        return {"final_lr": final, "warmup": warmup, "peak_lr": budget.peak}
