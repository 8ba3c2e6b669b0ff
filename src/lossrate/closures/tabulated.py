"""A closure from any callable g(L), with G and G^{-1} tabulated (for user closures without
closed forms).

With x = L - floor and u = ln x, G(L) = int x / g(floor + x) du. The table holds u on an
even grid from ln x_min to ln x_max (log-spaced in x, dense towards the floor); each panel
is integrated with 10-point Gauss-Legendre quadrature and the panels are summed
cumulatively, so G is exact to rounding at the nodes. Between nodes G(u) and its inverse
u(G) are cubic Hermite interpolants that use the exact node derivatives dG/du = x/g and
du/dG = g/x (fourth-order, monotone for a positive g at this grid spacing: the same
shape-preserving role as PCHIP with a smaller error). Outside the table every method raises.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from scipy.interpolate import CubicHermiteSpline

from .._errors import InvalidArgumentError
from ._common import as_loss, check_finite, check_int, set_fields
from .base import ArrayLike, Closure, register_closure

__all__ = ["Tabulated"]

_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(10)


@register_closure
@dataclass(frozen=True)
class Tabulated(Closure):
    """g(L) = func(L), with G and G^{-1} from a quadrature table (module docstring).

    Args:
        func: g as a vectorised callable, positive and finite on (floor, floor + x_max].
        floor: L_inf >= 0, where g is taken to vanish.
        x_min, x_max: the table covers L - floor in [x_min, x_max]; G, G_inv and the
            derivatives raise outside it. G_at_floor is -inf (the floor is not reached
            inside the table).
        points: grid points in u = ln(L - floor), >= 16 (2048: relative error ~1e-10 in
            G differences for g as curved as CE's).
        dfunc, d2func: g' and g'' if known; otherwise central finite differences.

    Raises:
        InvalidArgumentError: func not callable or not positive and finite on the table,
            a bad range or point count.
    """

    name: ClassVar[str] = "tabulated"

    func: Callable[[np.ndarray], Any]
    floor: float = 0.0  # type: ignore[assignment]
    x_min: float = 1e-8
    x_max: float = 100.0
    points: int = 2048
    dfunc: Callable[[np.ndarray], Any] | None = None
    d2func: Callable[[np.ndarray], Any] | None = None
    _G_of_u: CubicHermiteSpline = field(init=False, repr=False, compare=False)
    _u_of_G: CubicHermiteSpline = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("func", "dfunc", "d2func"):
            f = getattr(self, name)
            if not (callable(f) or (f is None and name != "func")):
                raise InvalidArgumentError(
                    f"{name} must be a callable taking an array of losses, got {f!r}."
                )
        floor = check_finite("floor", self.floor, lower=0.0, fix="Pass L_inf >= 0.")
        x_min = check_finite(
            "x_min",
            self.x_min,
            lower=0.0,
            strict=True,
            fix="Pass the smallest L - floor to tabulate, e.g. 1e-8.",
        )
        x_max = check_finite(
            "x_max",
            self.x_max,
            lower=x_min,
            strict=True,
            fix="Pass the largest L - floor to tabulate, above x_min.",
        )
        n = check_int("points", self.points, minimum=16, fix="2048 is a good default.")
        set_fields(self, floor=floor, x_min=x_min, x_max=x_max, points=n)

        u = np.linspace(np.log(x_min), np.log(x_max), n)
        h = np.diff(u)
        mid = 0.5 * (u[:-1] + u[1:])
        uq = mid[:, None] + 0.5 * h[:, None] * _GL_NODES[None, :]
        panels = 0.5 * h * (self._integrand(uq) * _GL_WEIGHTS).sum(axis=1)
        dGdu = self._integrand(u)
        # G = 0 where dG/du is smallest, summed outwards, so no increment is lost against a
        # much larger |G| (x/g may be huge at both ends, as for CE)
        i0 = int(np.argmin(dGdu))
        G = np.concatenate([-np.cumsum(panels[:i0][::-1])[::-1], [0.0], np.cumsum(panels[i0:])])
        set_fields(
            self,
            _G_of_u=CubicHermiteSpline(u, G, dGdu),
            _u_of_G=CubicHermiteSpline(G, u, 1.0 / dGdu),
        )

    @classmethod
    def of(cls, closure: Closure, **table: Any) -> Tabulated:
        """Tabulate an existing closure's g (with its g', g'' and floor); ``table`` sets
        x_min, x_max, points. Used to check the table against closed forms."""
        return cls(
            func=closure.g, floor=closure.floor, dfunc=closure.dg, d2func=closure.d2g, **table
        )

    def _integrand(self, u: np.ndarray) -> np.ndarray:
        """dG/du = x / g(floor + x), x = e^u, after checking g is positive and finite."""
        x = np.exp(u)
        gv = np.asarray(self.func(self.floor + x), dtype=float)
        if gv.shape != x.shape:
            raise InvalidArgumentError(
                f"func must be vectorised (array in, same-shape array out); for an input of "
                f"shape {x.shape} it returned shape {gv.shape}. Wrap it with np.vectorize."
            )
        bad = ~(np.isfinite(gv) & (gv > 0))
        if bad.any():
            i = np.flatnonzero(bad.ravel())[0]
            raise InvalidArgumentError(
                f"func must be positive and finite above the floor, got g({self.floor + x.ravel()[i]!r})"
                f" = {gv.ravel()[i]!r}. Fix func, or narrow x_min/x_max to where it is."
            )
        return x / gv

    def _u(self, L: ArrayLike) -> np.ndarray:
        """ln(L - floor), after checking L lies inside the table."""
        L = as_loss(L)
        lo, hi = self.floor + self.x_min, self.floor + self.x_max
        tol = 1e-12 * max(abs(hi), 1.0)
        if np.any(~((L >= lo - tol) & (L <= hi + tol))):
            raise InvalidArgumentError(
                f"L outside the tabulated range [{lo!r}, {hi!r}] (got values from {np.min(L)!r} "
                f"to {np.max(L)!r}); widen x_min/x_max of the Tabulated closure."
            )
        return np.log(np.clip(L - self.floor, self.x_min, self.x_max))

    def g(self, L: ArrayLike) -> np.ndarray:
        return np.asarray(self.func(as_loss(L)), dtype=float)

    def _fd(self, f: Callable[[np.ndarray], np.ndarray], L: ArrayLike) -> np.ndarray:
        """Central difference of f, with a step that keeps both points above the floor."""
        L = as_loss(L)
        x = np.maximum(L - self.floor, self.x_min)
        step = np.minimum(1e-5 * np.maximum(x, 1.0), 0.5 * x)
        return (f(L + step) - f(L - step)) / (2.0 * step)

    def dg(self, L: ArrayLike) -> np.ndarray:
        if self.dfunc is not None:
            return np.asarray(self.dfunc(as_loss(L)), dtype=float)
        return self._fd(self.g, L)

    def d2g(self, L: ArrayLike) -> np.ndarray:
        if self.d2func is not None:
            return np.asarray(self.d2func(as_loss(L)), dtype=float)
        return self._fd(self.dg, L)

    def G(self, L: ArrayLike) -> np.ndarray:
        """The tabulated antiderivative of 1/g (0 where (L - floor)/g(L) is smallest)."""
        return np.asarray(self._G_of_u(self._u(L)))

    def G_inv(self, y: ArrayLike) -> np.ndarray:
        y = as_loss(y)
        lo, hi = self._u_of_G.x[0], self._u_of_G.x[-1]
        # slack of 1e-9 in ln x at either end (rounding of L - floor next to the floor)
        tol_lo, tol_hi = 1e-9 * self._G_of_u(self._G_of_u.x[[0, -1]], 1)
        if np.any(~((y >= lo - tol_lo) & (y <= hi + tol_hi))):
            raise InvalidArgumentError(
                f"y outside the tabulated range of G, [{lo!r}, {hi!r}] (got {np.min(y)!r} to "
                f"{np.max(y)!r}): the loss there lies outside [floor + x_min, floor + x_max]. "
                "Lower x_min (more budget Phi) or raise x_max (higher L0)."
            )
        return self.floor + np.exp(self._u_of_G(np.clip(y, lo, hi)))
