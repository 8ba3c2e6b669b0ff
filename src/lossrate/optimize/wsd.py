"""Warmup-stable-decay: the peak until ``decay_start``, then a decay of ``decay_steps`` to
``final`` (held after it), shaped by u in [0, 1] across the decay:

* linear:    eta = final + (peak - final) (1 - u)
* cosine:    eta = final + (peak - final) (1 + cos(pi u)) / 2
* 1-sqrt:    eta = final + (peak - final) (1 - sqrt(u))   (Hägele et al. 2024)
* geometric: eta = peak^(1 - u) final^u                    (needs final > 0)

Coordinates: x = (a, l, f), decay_start = warmup + a (n - warmup), decay_steps =
l (n - decay_start), final = f peak; ``WSD(final=0.0, to_end=True)`` holds f and l = 1 and
searches the decay start alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from .._errors import InvalidArgumentError
from ..schedule import Schedule
from ._family import Budget, Family

__all__ = ["SHAPES", "WSD", "decay_shape"]

SHAPES = ("linear", "cosine", "1-sqrt", "geometric")
_GEOMETRIC_FLOOR = 1e-3  # geometric decays need final > 0: f >= this


def decay_shape(shape: str, u: np.ndarray, peak: float, final: float) -> np.ndarray:
    """The lr across a decay at fractions ``u`` of it (module docstring)."""
    if shape == "linear":
        w = 1.0 - u
    elif shape == "cosine":
        w = 0.5 * (1.0 + np.cos(np.pi * u))
    elif shape == "1-sqrt":
        w = 1.0 - np.sqrt(u)
    elif shape == "geometric":
        return peak ** (1.0 - u) * max(final, _GEOMETRIC_FLOOR * peak) ** u
    else:
        raise ValueError(shape)
    return final + (peak - final) * w


class WSD(Family):
    """Warmup-stable-decay (module docstring); ``shapes`` are the decay shapes searched."""

    name: ClassVar[str] = "wsd"

    def __init__(
        self, shapes: Sequence[str] = SHAPES, *, final: float | None = None, to_end: bool = False
    ) -> None:
        bad = sorted(set(shapes) - set(SHAPES))
        if bad or not shapes:
            raise InvalidArgumentError(
                f"unknown WSD decay shape(s) {bad or list(shapes)}; choose from {', '.join(SHAPES)}."
            )
        if final is not None and not 0 <= final < 1:
            raise InvalidArgumentError(
                f"final is the final lr as a fraction of the peak, in [0, 1); got {final!r}."
            )
        self.shapes = tuple(shapes)
        self.final = final
        self.to_end = bool(to_end)

    def _full(self, x: np.ndarray) -> tuple[float, float, float]:
        """(a, l, f) from the searched coordinates (the held ones filled in)."""
        it = iter(float(v) for v in x)
        a = next(it)
        ln = 1.0 if self.to_end else next(it)
        f = self.final if self.final is not None else next(it)
        return a, ln, f

    def variants(self, budget: Budget) -> Sequence[Mapping[str, Any]]:
        return tuple({"shape": s} for s in self.shapes)

    def bounds(self, budget: Budget, variant: Mapping[str, Any]) -> list[tuple[float, float]]:
        out = [(0.0, 0.995)]
        if not self.to_end:
            out.append((0.02, 1.0))
        if self.final is None:
            out.append((self._low_final(budget, variant), 0.9))
        return out

    @staticmethod
    def _low_final(budget: Budget, variant: Mapping[str, Any]) -> float:
        lo_f = budget.min_lr / budget.peak
        return max(lo_f, _GEOMETRIC_FLOOR) if variant["shape"] == "geometric" else lo_f

    def _pack(self, a: float, ln: float, f: float) -> np.ndarray:
        return np.array(
            [a, *([] if self.to_end else [ln]), *([] if self.final is not None else [f])]
        )

    def starts(self, budget: Budget, variant: Mapping[str, Any]) -> np.ndarray:
        lo_f = self._low_final(budget, variant)
        return np.array([self._pack(a, 1.0, lo_f) for a in np.linspace(0.0, 0.95, 20)])

    def _parts(self, x: np.ndarray, budget: Budget) -> tuple[int, int, float]:
        n, w = budget.n_steps, budget.warmup
        a, ln, f = self._full(x)
        start = round(w + float(np.clip(a, 0.0, 1.0)) * (n - w))
        start = min(start, n - 1)
        length = max(1, round(float(np.clip(ln, 0.0, 1.0)) * (n - start)))
        return start, length, float(f) * budget.peak

    def build(self, x: np.ndarray, budget: Budget, variant: Mapping[str, Any]) -> Schedule:
        start, length, final = self._parts(x, budget)
        k = np.arange(budget.n_steps, dtype=float)
        u = np.clip((k - start + 1) / length, 0.0, 1.0)
        lr = decay_shape(variant["shape"], u, budget.peak, final)
        return budget.finish(lr, f"wsd-{variant['shape']}")

    def settings(
        self, x: np.ndarray, budget: Budget, variant: Mapping[str, Any]
    ) -> dict[str, float | int | str]:
        start, length, final = self._parts(x, budget)
        return {
            "shape": str(variant["shape"]),
            "decay_start": start,
            "decay_steps": length,
            "final_lr": final,
            "peak_lr": budget.peak,
            "warmup": budget.warmup,
        }

    def project(
        self, schedule: Schedule, budget: Budget, variant: Mapping[str, Any]
    ) -> np.ndarray | None:
        lr = schedule.lr
        below = np.flatnonzero(lr[budget.warmup :] < 0.999 * budget.peak)
        if below.size == 0:
            return None
        start = budget.warmup + int(below[0])
        a = (start - budget.warmup) / max(budget.n_steps - budget.warmup, 1)
        lo_f = self._low_final(budget, variant)
        return self._pack(a, 1.0, min(max(float(lr[-1]) / budget.peak, lo_f), 0.9))
