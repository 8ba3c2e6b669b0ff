"""Power family g = c (L - floor)^k (theory §2.6, §3): a model closure, not a derived one.

With x = L - floor and constant phi:

* k = 1: x = x0 e^{-c Phi} (exponential approach);
* k > 1: x = [x0^{1-k} + (k-1) c Phi]^{-1/(k-1)} (power-law tail; a Kaplan-style exponent
  a_sc corresponds to k = 1 + 1/a_sc);
* k < 1: the floor is hit at the finite Phi* = x0^{1-k} / ((1-k) c) (k = 0 is MAE-like).

With e = 1 - k the antiderivative is G(L) = x^e / (e c), except for |e| < 1/4, where it is
shifted by a constant to G(L) = expm1(e ln x) / (e c): that form tends to ln(x)/c as k -> 1,
so no precision is lost for k near 1 (x^e - x0^e would cancel), while away from k = 1 the
unshifted form keeps full relative precision near the floor (k < 1) and in the tail
(k > 1), where expm1 would saturate at -1. Inverses: x = (e c y)^{1/e}, resp.
x = exp(log1p(e c y) / e).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ._common import as_loss, check_finite, set_fields
from .base import ArrayLike, Closure, register_closure

__all__ = ["PowerFloor"]


@register_closure
@dataclass(frozen=True)
class PowerFloor(Closure):
    """g(L) = c (L - floor)^k for L > floor, 0 at and below the floor.

    Args:
        c: scale, > 0.
        k: order, >= 0. k >= 1: the floor is never reached with finite Phi;
            k < 1: it is reached at Phi* = (L0 - floor)^{1-k} / ((1-k) c).
        floor: L_inf >= 0.

    Raises:
        InvalidArgumentError: c <= 0, k < 0, floor < 0, or a value not finite.
    """

    name: ClassVar[str] = "power"

    c: float = 1.0
    k: float = 2.0
    floor: float = 0.0  # type: ignore[assignment]

    def __post_init__(self) -> None:
        set_fields(
            self,
            c=check_finite("c", self.c, lower=0.0, strict=True, fix="Pass a positive scale c."),
            k=check_finite(
                "k",
                self.k,
                lower=0.0,
                fix="Pass an order k >= 0 (1: exponential tail, 2: 1/t tail).",
            ),
            floor=check_finite(
                "floor",
                self.floor,
                lower=0.0,
                fix="Pass the irreducible loss L_inf >= 0 (0 if none).",
            ),
        )

    def _x(self, L: ArrayLike) -> np.ndarray:
        return np.maximum(as_loss(L) - self.floor, 0.0)

    def g(self, L: ArrayLike) -> np.ndarray:
        x = self._x(L)
        return np.where(x > 0, self.c * x**self.k, 0.0)

    def dg(self, L: ArrayLike) -> np.ndarray:
        """c k x^{k-1} (its right limit at the floor: 0, c or +inf for k >, =, < 1)."""
        x = self._x(L)
        if self.k == 0.0:
            return np.zeros_like(x)
        with np.errstate(divide="ignore"):
            return self.c * self.k * x ** (self.k - 1.0)

    def d2g(self, L: ArrayLike) -> np.ndarray:
        """c k (k-1) x^{k-2} (its right limit at the floor)."""
        x = self._x(L)
        if self.k in (0.0, 1.0):
            return np.zeros_like(x)
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.c * self.k * (self.k - 1.0) * x ** (self.k - 2.0)

    @property
    def _shifted(self) -> bool:
        """Whether G uses the expm1 form (|1 - k| < 1/4, see the module docstring)."""
        return abs(1.0 - self.k) < 0.25

    def G(self, L: ArrayLike) -> np.ndarray:
        with np.errstate(divide="ignore"):
            u = np.log(self._x(L))
        e = 1.0 - self.k
        if e == 0.0:
            return u / self.c
        with np.errstate(over="ignore"):
            return (np.expm1(e * u) if self._shifted else np.exp(e * u)) / (e * self.c)

    def G_inv(self, y: ArrayLike) -> np.ndarray:
        """The inverse of :meth:`G`: the floor where y <= G_at_floor, +inf for k > 1 where y
        reaches sup G (the loss there is unbounded)."""
        y = as_loss(y)
        e = 1.0 - self.k
        if e == 0.0:
            u = self.c * y
        else:
            # x^e = 1 + e c y (shifted) or e c y (unshifted); outside its range x is 0 or inf
            arg, low = e * self.c * y, (-1.0 if self._shifted else 0.0)
            ok = arg > low
            safe = np.where(ok, arg, 1.0)
            with np.errstate(divide="ignore"):
                u = np.where(
                    ok,
                    (np.log1p(safe) if self._shifted else np.log(safe)) / e,
                    -np.inf if e > 0 else np.inf,
                )
        with np.errstate(over="ignore"):
            return self.floor + np.exp(u)

    @property
    def G_at_floor(self) -> float:
        """G at the floor: finite for k < 1 (the floor is hit at finite Phi), -inf for k >= 1."""
        if self.k >= 1.0:
            return -np.inf
        return -1.0 / ((1.0 - self.k) * self.c) if self._shifted else 0.0
