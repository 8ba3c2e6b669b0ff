"""The shared mean-field closure of hard-label logit losses, g = alpha D(L), D = (1 - e^{-L})^2.

Substituting v = e^L - 1 (theory §3),

    G(L) = [ln(e^L - 1) - 1/(e^L - 1)] / alpha,
    G^{-1}(y) = ln(1 + 1/w),  w = omega(-alpha y),

where omega is the Wright omega function (omega + ln omega = z, ``scipy.special.wrightomega``;
never ``lambertw(exp(.))``, which overflows). Both are evaluated in forms that neither
overflow nor cancel: ln(e^L - 1) = L + ln(1 - e^{-L}) for L > 1, and for z = -alpha y < 0
(where w < 0.57) G^{-1} = w - z + ln(1 + w), exact because ln w = z - w.

With constant phi this is L(Phi) = ln(1 + 1/omega(alpha Phi + 1/v0 - ln v0)),
v0 = e^{L0} - 1: linear, L ~ L0 - alpha Phi, while L >> 1 and the 1/(alpha Phi) tail.

The batch bracket (theory §2.4, item 3) with population variance sigma^2, kappa = L^2/(L^2 +
sigma^2) and l_max the largest per-sample loss:

    c_lo {[kappa (1 - e^{-L/kappa})]^2 + e^{-2 l_max} sigma^2}  <=  R  <=
        c_hi min{D(L) + sigma^2, D_hat(L)},

with (c_lo, c_hi) = (C/(C-1), 2) for softmax CE and (1, 1) for BCE on logits.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from scipy.special import wrightomega

from ._common import D, Dhat, as_loss, batch_stats, d2D, dD, log_expm1
from .base import ArrayLike, Closure

__all__ = ["LogitClosure"]


def _inv_expm1(L: np.ndarray) -> np.ndarray:
    """1/(e^L - 1) for L >= 0 (+inf at 0), without overflow."""
    with np.errstate(divide="ignore"):
        return np.exp(-L) / -np.expm1(-L)


class LogitClosure(Closure):
    """g = alpha D(L) and the D-based bracket; subclasses set ``alpha``, ``_c_lo``, ``_c_hi``."""

    alpha: float
    _c_hi: ClassVar[float] = 1.0

    @property
    def _c_lo(self) -> float:
        return 1.0

    def g(self, L: ArrayLike) -> np.ndarray:
        """alpha (1 - e^{-L})^2 (0 at and below 0)."""
        return self.alpha * D(np.maximum(as_loss(L), 0.0))

    def dg(self, L: ArrayLike) -> np.ndarray:
        """alpha D'(L) = 2 alpha e^{-L} (1 - e^{-L})."""
        return self.alpha * dD(np.maximum(as_loss(L), 0.0))

    def d2g(self, L: ArrayLike) -> np.ndarray:
        """alpha D''(L) = 2 alpha e^{-L} (2 e^{-L} - 1): the sign of the Jensen gap flips at ln 2."""
        return self.alpha * d2D(np.maximum(as_loss(L), 0.0))

    def G(self, L: ArrayLike) -> np.ndarray:
        """[ln(e^L - 1) - 1/(e^L - 1)] / alpha (-inf at L <= 0)."""
        L = as_loss(L)
        pos = L > 0.0
        Lp = np.where(pos, L, 1.0)
        return np.where(pos, (log_expm1(Lp) - _inv_expm1(Lp)) / self.alpha, -np.inf)

    def G_inv(self, y: ArrayLike) -> np.ndarray:
        """ln(1 + 1/w) with w = omega(-alpha y) (Wright omega); 0 at y = -inf."""
        z = -self.alpha * as_loss(y)
        w = wrightomega(z)
        with np.errstate(divide="ignore", invalid="ignore"):
            hi = np.log1p(1.0 / w)  # z >= 0: w >= 0.567, no overflow of 1/w
            lo = w - z + np.log1p(w)  # z < 0: all terms >= 0, exact even where w underflows
        return np.where(z >= 0.0, hi, lo)

    def bracket(
        self, L: ArrayLike, sigma: ArrayLike, loss_max: ArrayLike | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rigorous (g_lo, g_hi) with g_lo <= R = mean_i ||r_i||^2 <= g_hi (module docstring).

        Args:
            L: batch mean loss, >= 0.
            sigma: population standard deviation of the per-sample losses (``torch.std``
                times sqrt((n-1)/n)).
            loss_max: the largest per-sample loss, >= L; None drops the e^{-2 l_max} sigma^2
                term of g_lo (as if l_max = inf).

        Raises:
            InvalidArgumentError: negative L or sigma, or loss_max < L.
        """
        L, sig, lmax = batch_stats(L, sigma, loss_max)
        s2 = sig**2
        with np.errstate(divide="ignore", invalid="ignore"):
            kappa = L**2 / (L**2 + s2)
            first = np.where(L > 0.0, kappa * -np.expm1(-L / kappa), 0.0) ** 2
        second = 0.0 if lmax is None else np.exp(-2.0 * lmax) * s2
        lo = self._c_lo * (first + second)
        hi = self._c_hi * np.minimum(D(L) + s2, Dhat(L))
        return lo, hi

    def upper(self, L: ArrayLike) -> np.ndarray:
        """c_hi D_hat(L): concave, so it bounds R for any batch of mean loss L."""
        return self._c_hi * Dhat(np.maximum(as_loss(L), 0.0))
