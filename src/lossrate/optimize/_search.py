"""Search one family: scan its starting grid, then polish the best points with a bounded
derivative-free local search (Powell, scipy.optimize.minimize) per variant."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize

from ..schedule import Schedule
from ._family import Budget, Family

__all__ = ["Candidate", "search"]


@dataclass(frozen=True)
class Candidate:
    """A point of a family with its objective value (ln of the predicted final loss)."""

    value: float
    variant: Mapping[str, Any]
    x: np.ndarray


def search(
    family: Family,
    budget: Budget,
    objective: Callable[[Schedule], float],
    *,
    seeds: Sequence[Schedule] = (),
    polish: int = 2,
    max_evals: int = 150,
) -> list[Candidate]:
    """The family's candidates, best first: every variant's grid points and the local
    optima reached from its ``polish`` best starts (at most ``max_evals`` objective calls
    each). ``seeds`` are schedules (other families' best) projected into the family as
    extra starts."""
    found: list[Candidate] = []
    for variant in family.variants(budget):
        bounds = family.bounds(budget, variant)
        lo = np.array([b[0] for b in bounds])
        hi = np.array([b[1] for b in bounds])
        starts = [np.clip(x, lo, hi) for x in family.starts(budget, variant)]
        for s in seeds:
            p = family.project(s, budget, variant)
            if p is not None:
                starts.append(np.clip(p, lo, hi))

        def f(x: np.ndarray, v: Mapping[str, Any] = variant, lo: Any = lo, hi: Any = hi) -> float:
            val = objective(family.build(np.clip(x, lo, hi), budget, v))
            return val if np.isfinite(val) else 1e6

        scanned = [Candidate(f(x), variant, x) for x in starts]
        scanned.sort(key=lambda c: c.value)
        found.extend(scanned)
        for c in scanned[:polish]:
            res = minimize(
                f,
                c.x,
                method="Powell",
                bounds=bounds,
                options={"maxfev": max_evals, "xtol": 1e-3, "ftol": 1e-7},
            )
            found.append(Candidate(float(res.fun), variant, np.clip(res.x, lo, hi)))
    found.sort(key=lambda c: c.value)
    return found
