"""Mean absolute error, one output per sample (theory §2.2).

For l = |z - y|, r = sign(z - y), so ||r||^2 = 1[l > 0] and R is the fraction of samples
not yet fitted: g = 1 (0 at L = 0, where every sample is fitted). G(L) = L and
G^{-1}(y) = max(y, 0): with constant phi, L = L0 - Phi hits 0 at the finite Phi = L0
(the right-hand side is not Lipschitz there; solvers use the closed form or an event).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ._common import as_loss, batch_stats
from .base import ArrayLike, Closure, register_closure

__all__ = ["MAE"]


@register_closure
@dataclass(frozen=True)
class MAE(Closure):
    """g(L) = 1 for L > 0, 0 at L = 0 (no parameters)."""

    name: ClassVar[str] = "mae"

    def g(self, L: ArrayLike) -> np.ndarray:
        return (as_loss(L) > 0.0).astype(float)

    def dg(self, L: ArrayLike) -> np.ndarray:
        return np.zeros_like(as_loss(L))

    def d2g(self, L: ArrayLike) -> np.ndarray:
        return np.zeros_like(as_loss(L))

    def G(self, L: ArrayLike) -> np.ndarray:
        return np.maximum(as_loss(L), 0.0)

    def G_inv(self, y: ArrayLike) -> np.ndarray:
        return np.maximum(as_loss(y), 0.0)

    @property
    def G_at_floor(self) -> float:
        """0: the floor L = 0 is reached at Phi = L0."""
        return 0.0

    def bracket(
        self, L: ArrayLike, sigma: ArrayLike, loss_max: ArrayLike | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """R = fraction of samples with l > 0, bracketed by

            max{L^2 / (L^2 + sigma^2), L / l_max}  <=  R  <=  1[L > 0]

        (Cauchy-Schwarz: L = mean(l 1[l > 0]) <= sqrt((L^2 + sigma^2) R); and L <= R l_max).
        ``loss_max`` None drops the second term.
        """
        L, sig, lmax = batch_stats(L, sigma, loss_max)
        pos = L > 0.0
        with np.errstate(divide="ignore", invalid="ignore"):
            lo = np.where(pos, L**2 / (L**2 + sig**2), 0.0)
            if lmax is not None:
                lo = np.maximum(lo, np.where(pos, L / lmax, 0.0))
        return lo, pos.astype(float)

    def upper(self, L: ArrayLike) -> np.ndarray:
        """1[L > 0], concave on [0, inf): R <= 1 for any batch."""
        return (as_loss(L) > 0.0).astype(float)
