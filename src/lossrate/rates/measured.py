"""A rate given on a grid, phi(t_i) = phi_i (for instance estimated from a trajectory).

Time axis: the grid's (intrinsic time t = sum of learning rates when it comes from a
:class:`~lossrate.Trajectory`).

* **Clipping rule.** Negative phi_i (noise in an estimate) are set to 0 before anything
  else: a negative rate would make Phi decrease and the loss rise under gradient flow,
  which the model excludes. ``n_clipped`` says how many values were clipped.
* **Interpolation.** ``method="pchip"`` (default) integrates the shape-preserving PCHIP
  interpolant exactly (piecewise quartic Phi); ``method="trapezoid"`` integrates the
  piecewise-linear interpolant (the trapezoid rule; piecewise quadratic Phi). Both stay
  within [min, max] of neighbouring data, so phi >= 0 and Phi is non-decreasing.
  A cubic spline is deliberately not offered: it overshoots below 0 next to sharp
  changes.
* **Inverse.** ``Phi_inv`` finds the smallest t with Phi(t) >= P by bisection on the
  grid segment that contains P (Phi is monotone, so this is exact to round-off).
* **Beyond the grid.** Evaluating outside [t_0, t_last] is an error unless
  ``extrapolate`` is set: ``"constant"`` holds the end values (phi_0 before the grid,
  phi_last after it), ``"zero"`` takes phi = 0 outside (training stopped). The grid must
  start at t_0 = 0 unless ``extrapolate`` says what phi was on [0, t_0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from scipy.interpolate import PchipInterpolator, PPoly

from .._errors import InvalidArgumentError, check_choice
from .base import RateModel, register_rate

__all__ = ["MeasuredRate"]

_METHODS = ("pchip", "trapezoid")
_EXTRAPOLATE = ("constant", "zero")


@register_rate
@dataclass(frozen=True, eq=False)
class MeasuredRate(RateModel):
    """phi(t) interpolated from grid values; Phi(t) = int_0^t phi exactly for that interpolant.

    Attributes:
        t_grid: strictly increasing times >= 0 (at least 2).
        phi_grid: rate estimates at ``t_grid`` (negative values are clipped to 0).
        method: "pchip" (default) or "trapezoid".
        extrapolate: None (error outside the grid), "constant" or "zero".
        n_clipped: number of negative values that were set to 0.
    """

    name: ClassVar[str] = "measured"
    time_axis: ClassVar[str] = "intrinsic"

    t_grid: Any
    phi_grid: Any
    method: str = "pchip"
    extrapolate: str | None = None
    n_clipped: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        t = np.asarray(self.t_grid, dtype=float)
        y = np.asarray(self.phi_grid, dtype=float)
        if t.ndim != 1 or t.size < 2:
            raise InvalidArgumentError(
                f"measured rate: t_grid must be a 1-D array of at least 2 times, got shape {t.shape}."
            )
        if y.shape != t.shape:
            raise InvalidArgumentError(
                f"measured rate: phi_grid has shape {y.shape} but t_grid has {t.shape}; give one "
                "rate value per time."
            )
        for name, arr in (("t_grid", t), ("phi_grid", y)):
            if not np.isfinite(arr).all():
                raise InvalidArgumentError(
                    f"measured rate: {name} holds NaN or inf; drop those points or fill them first."
                )
        if (np.diff(t) <= 0).any() or t[0] < 0:
            raise InvalidArgumentError(
                "measured rate: t_grid must be >= 0 and strictly increasing; sort it and drop "
                "duplicated times."
            )
        check_choice("method", self.method, _METHODS)
        if self.extrapolate is not None:
            check_choice("extrapolate", self.extrapolate, _EXTRAPOLATE)
        elif t[0] > 0:
            raise InvalidArgumentError(
                f"measured rate: t_grid starts at {t[0]!r} > 0, so phi on [0, {t[0]!r}) is unknown; "
                "start the grid at 0 or set extrapolate='constant' (hold phi_0) or 'zero'."
            )
        n_clipped = int((y < 0).sum())
        y = np.maximum(y, 0.0)
        if self.method == "pchip":
            pp_phi = PchipInterpolator(t, y, extrapolate=False)
        else:
            slopes = np.diff(y) / np.diff(t)
            pp_phi = PPoly(np.vstack([slopes, y[:-1]]), t, extrapolate=False)
        pp_Phi = pp_phi.antiderivative()
        before = y[0] * t[0] if self.extrapolate == "constant" else 0.0
        nodes = before + pp_Phi(t)
        nodes[0] = before
        for name, value in (
            ("t_grid", t),
            ("phi_grid", y),
            ("n_clipped", n_clipped),
            ("_phi_pp", pp_phi),
            ("_Phi_pp", pp_Phi),
            ("_before", before),
            ("_nodes", np.maximum.accumulate(nodes)),
        ):
            object.__setattr__(self, name, value)

    # --------------------------------------------------------------- helpers
    def _check_range(self, t: np.ndarray, what: str) -> None:
        if self.extrapolate is None and t.size:
            lo, hi = self.t_grid[0], self.t_grid[-1]
            if (t < lo).any() or (t > hi).any():
                raise InvalidArgumentError(
                    f"measured rate: {what} spans [{t.min()!r}, {t.max()!r}] but phi is known only "
                    f"on [{lo!r}, {hi!r}]; set extrapolate='constant' or 'zero' to go beyond."
                )

    def _outside(self, inside: np.ndarray, t: np.ndarray, below: Any, above: Any) -> np.ndarray:
        lo, hi = self.t_grid[0], self.t_grid[-1]
        return np.where(t < lo, below, np.where(t > hi, above, inside))

    # ------------------------------------------------------------------- API
    def phi(self, t: Any) -> np.ndarray:
        t = np.asarray(t, dtype=float)
        self._check_range(t, "t")
        lo, hi = self.t_grid[0], self.t_grid[-1]
        inside = self._phi_pp(np.clip(t, lo, hi))  # type: ignore[attr-defined]
        hold = self.extrapolate == "constant"
        return self._outside(
            inside, t, self.phi_grid[0] if hold else 0.0, self.phi_grid[-1] if hold else 0.0
        )

    def Phi(self, t: Any) -> np.ndarray:
        t = np.asarray(t, dtype=float)
        self._check_range(t, "t")
        lo, hi = self.t_grid[0], self.t_grid[-1]
        inside = self._before + self._Phi_pp(np.clip(t, lo, hi))  # type: ignore[attr-defined]
        end = self._nodes[-1]  # type: ignore[attr-defined]
        if self.extrapolate == "constant":
            below, above = self.phi_grid[0] * t, end + self.phi_grid[-1] * (t - hi)
        else:
            below, above = 0.0, end
        return np.maximum(self._outside(inside, t, below, above), 0.0)

    def Phi_inv(self, P: Any) -> np.ndarray:
        P = np.asarray(P, dtype=float)
        nodes = self._nodes  # type: ignore[attr-defined]
        t = self.t_grid
        end = nodes[-1]
        if self.extrapolate is None and (P > end).any():
            raise InvalidArgumentError(
                f"measured rate: Phi reaches only {end!r} on the grid (t <= {t[-1]!r}) but P up to "
                f"{P.max()!r} was asked for; set extrapolate='constant' to continue at phi_last."
            )
        # bisection inside the grid segment [t_{k-1}, t_k] with nodes[k-1] < P <= nodes[k]
        Pc = np.clip(P, nodes[0], end)
        k = np.clip(np.searchsorted(nodes, Pc, side="left"), 1, t.size - 1)
        lo, hi = t[k - 1].astype(float), t[k].astype(float)
        for _ in range(64):
            mid = 0.5 * (lo + hi)
            ge = self._before + self._Phi_pp(mid) >= Pc  # type: ignore[attr-defined]
            hi = np.where(ge, mid, hi)
            lo = np.where(ge, lo, mid)
        out = hi
        if self.extrapolate == "constant":
            with np.errstate(divide="ignore", invalid="ignore"):
                below = np.where(self.phi_grid[0] > 0, P / self.phi_grid[0], 0.0)
                above = np.where(
                    self.phi_grid[-1] > 0, t[-1] + (P - end) / self.phi_grid[-1], np.inf
                )
            out = np.where(P < nodes[0], below, np.where(P > end, above, out))
        else:
            out = np.where(P > end, np.inf, out)
        return np.where(P <= 0, 0.0, out)

    @property
    def Phi_inf(self) -> float:
        """Phi at t -> inf: needs ``extrapolate`` (the rate beyond the grid is otherwise unknown)."""
        end = float(self._nodes[-1])  # type: ignore[attr-defined]
        if self.extrapolate is None:
            raise InvalidArgumentError(
                f"measured rate: phi is known only up to t={self.t_grid[-1]!r}, so Phi_inf is "
                "undefined; set extrapolate='zero' (training stops at the grid end) or 'constant'."
            )
        if self.extrapolate == "constant" and self.phi_grid[-1] > 0:
            return float("inf")
        return end
