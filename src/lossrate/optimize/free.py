"""A free-form monotone schedule in a small basis: after the warmup, the lr is piecewise
linear in the step between knots at fixed fractions u_j of the budget (denser towards the
end, where decays pay), with eta(u_0) = peak and eta(u_j) = eta(u_{j-1}) r_j, r_j in
[0, 1], so it never rises. Luo et al. 2025 (arXiv 2503.12811) optimise every step's lr
through their fitted multi-power law under the same monotone constraint; a dozen knots keep
the search to a dozen bounded coordinates, x = (r_1, ..., r_m).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from ..schedule import Schedule
from ._family import Budget, Family

__all__ = ["KNOTS", "FreeForm"]

#: knot positions, as fractions of the steps after the warmup
KNOTS = (0.0, 0.3, 0.5, 0.62, 0.72, 0.8, 0.86, 0.91, 0.95, 0.98, 1.0)


class FreeForm(Family):
    """Monotone piecewise-linear schedule through fixed knots (module docstring)."""

    name: ClassVar[str] = "free"

    def __init__(self, knots: tuple[float, ...] = KNOTS) -> None:
        self.knots = np.asarray(knots, dtype=float)

    def bounds(self, budget: Budget, variant: Mapping[str, Any]) -> list[tuple[float, float]]:
        return [(0.0, 1.0)] * (self.knots.size - 1)

    def starts(self, budget: Budget, variant: Mapping[str, Any]) -> np.ndarray:
        m = self.knots.size - 1
        rows = []
        for j in range(2, m + 1):  # hold the peak to knot j - 1, then halve per knot
            r = np.ones(m)
            r[j - 1 :] = 0.5
            rows.append(r)
        return np.array(rows)

    def _knot_lr(self, x: np.ndarray, budget: Budget) -> np.ndarray:
        r = np.clip(np.asarray(x, dtype=float), 0.0, 1.0)
        return budget.peak * np.concatenate([[1.0], np.cumprod(r)])

    def build(self, x: np.ndarray, budget: Budget, variant: Mapping[str, Any]) -> Schedule:
        n, w = budget.n_steps, budget.warmup
        u = (np.arange(n, dtype=float) - w + 1) / max(n - w, 1)
        lr = np.interp(np.clip(u, 0.0, 1.0), self.knots, self._knot_lr(x, budget))
        return budget.finish(lr, "free")

    def settings(
        self, x: np.ndarray, budget: Budget, variant: Mapping[str, Any]
    ) -> dict[str, float | int | str]:
        n, w = budget.n_steps, budget.warmup
        lr = np.maximum(self._knot_lr(x, budget), budget.min_lr)
        steps = np.round(w + self.knots * (n - w)).astype(int)
        out: dict[str, float | int | str] = {"peak_lr": budget.peak, "warmup": w}
        out.update({f"lr@{int(s)}": float(v) for s, v in zip(steps, lr, strict=True)})
        return out

    def project(
        self, schedule: Schedule, budget: Budget, variant: Mapping[str, Any]
    ) -> np.ndarray | None:
        n, w = budget.n_steps, budget.warmup
        at = np.clip(np.round(w + self.knots * (n - w)).astype(int) - 1, 0, n - 1)
        v = np.maximum(schedule.lr[at], 1e-12 * budget.peak)
        v[0] = budget.peak
        return np.clip(v[1:] / v[:-1], 0.0, 1.0)
