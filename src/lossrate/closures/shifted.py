"""A floor-less closure moved onto a floor: g(L) = g_base(L - L_inf).

Used by the fitted ODE models, whose CE closure gets a fitted floor L_inf:
G(L) = G_base(L - L_inf), G^{-1}(y) = L_inf + G_base^{-1}(y), so the solution of
dL/dt = -phi g(L) is the base solution in x = L - L_inf.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .._errors import InvalidArgumentError
from .base import Closure

__all__ = ["Shifted"]


@dataclass(frozen=True)
class Shifted(Closure):
    """``base`` applied to x = L - ``shift`` (``base`` must have floor 0)."""

    base: Closure
    shift: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.base, Closure) or self.base.floor != 0.0:
            raise InvalidArgumentError(
                f"base must be a Closure with floor 0, got {self.base!r}; give the floor as shift."
            )
        if not (np.isfinite(self.shift) and self.shift >= 0):
            raise InvalidArgumentError(f"shift must be finite and >= 0, got {self.shift!r}.")

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"{self.base.name}+floor"

    @property
    def floor(self) -> float:
        return float(self.shift)

    def _x(self, L: Any) -> np.ndarray:
        return np.asarray(L, dtype=float) - self.shift

    def g(self, L: Any) -> np.ndarray:
        return self.base.g(self._x(L))

    def dg(self, L: Any) -> np.ndarray:
        return self.base.dg(self._x(L))

    def d2g(self, L: Any) -> np.ndarray:
        return self.base.d2g(self._x(L))

    def G(self, L: Any) -> np.ndarray:
        return self.base.G(self._x(L))

    def G_inv(self, y: Any) -> np.ndarray:
        return self.shift + self.base.G_inv(y)

    @property
    def G_at_floor(self) -> float:
        return self.base.G_at_floor
