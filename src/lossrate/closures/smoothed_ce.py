"""Softmax cross-entropy with label smoothing epsilon (theory §2.5).

Targets are y^eps = (1 - eps) e_y + eps/C, so every sample has the same entropy floor

    L_inf = H(y^eps) = -q_y ln q_y - (C-1) (eps/C) ln(eps/C),   q_y = 1 - eps + eps/C,

and l - L_inf = KL(y^eps || p). Two rigorous facts shape the closure:

* upper: ||r||^2 <= 2 TV^2 <= min{KL, 2(1 - e^{-KL})} (Pinsker, Bretagnolle-Huber), a
  concave U, so R <= U(L - L_inf) for every batch (:meth:`SmoothedCE.upper`);
* lower: ||r||^2 >= p_min KL (KL <= chi^2), so g is *linear* near the floor and the
  approach to L_inf is exponential, not the 1/t tail of one-hot CE.

The mean-field model, with x = L - L_inf and b = kappa/alpha, is

    g(x) = alpha (1 - e^{-b x}):  slope kappa at the floor, saturating at alpha as for CE,
    G(L) = ln(e^{b x} - 1) / kappa,   G^{-1}(y) = L_inf + softplus(kappa y) / b,

(from int dx / (alpha (1 - e^{-bx})) = int e^{bx} dx / (alpha (e^{bx} - 1))), so with
constant phi, e^{b x} - 1 = (e^{b x0} - 1) e^{-kappa Phi}: x ~ x0' e^{-kappa Phi} in the tail.
With alpha <= 2 and kappa <= 1, g <= U everywhere (g <= kappa x <= x, and g <= alpha, resp.
1 - e^{-bx} <= 1 - e^{-x}), so the model never exceeds the rigorous bound.

Default kappa. Near the floor ||r||^2 / KL -> sum_k r_k^2 / (sum_k r_k^2 / (2 q_k)), a weighted
mean of 2 q_k, so the local slope lies in [2 eps/C, min{1, 2 q_y}]. With the wrong-class
probabilities tied (the symmetric path p = t e_y + (1 - t)/(C-1) off y), the slope is exactly
2 q_y (1 - q_y) C/(C-1) = 2 eps q_y, which is the default; a single confused class gives
about 4 eps/C instead, the bound 2 eps/C is the worst case. kappa sets the time constant of
the exponential tail, so fit it (or pass it) where the data allow. In the middle range
(x ~ 0.3 to 2 nats) the exact R on the symmetric path is larger than this concave model
(R/x peaks near 0.5 for C = 10, eps = 0.1); phi absorbs that there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, cast

import numpy as np
from scipy.special import xlogy

from .._errors import InvalidArgumentError
from ._common import as_loss, check_finite, check_int, log_expm1, set_fields
from .base import ArrayLike, Closure, register_closure

__all__ = ["SmoothedCE", "smoothed_entropy"]


def smoothed_entropy(classes: int, epsilon: float) -> float:
    """H(y^eps) = -q_y ln q_y - (C-1) (eps/C) ln(eps/C), q_y = 1 - eps + eps/C (0 at eps = 0)."""
    C, e = classes, epsilon
    qy = 1.0 - e + e / C
    return float(-xlogy(qy, qy) - (C - 1) * xlogy(e / C, e / C))


@register_closure
@dataclass(frozen=True)
class SmoothedCE(Closure):
    """g(L) = alpha (1 - e^{-kappa (L - L_inf)/alpha}), L_inf = H(y^eps) (module docstring).

    Args:
        classes: number of classes C >= 2.
        epsilon: label smoothing in [0, 1) (PyTorch's ``label_smoothing``).
        alpha: saturation level of g far from the floor, in (0, 2] (||r||^2 <= 2).
        kappa: slope of g at the floor, in (0, 1]; None gives 2 eps q_y,
            q_y = 1 - eps + eps/C (the symmetric-path slope, see the module docstring).

    Raises:
        InvalidArgumentError: classes < 2, epsilon outside [0, 1), alpha outside (0, 2],
            kappa outside (0, 1], or epsilon = 0 without a kappa (that is plain 'ce').
    """

    name: ClassVar[str] = "smoothed_ce"

    classes: int = 10
    epsilon: float = 0.1
    alpha: float = 1.5
    kappa: float | None = None

    def __post_init__(self) -> None:
        C = check_int("classes", self.classes, minimum=2, fix="Pass the number of softmax outputs.")
        eps = check_finite(
            "epsilon",
            self.epsilon,
            lower=0.0,
            fix="Pass the label smoothing in [0, 1) (0.1 is common).",
        )
        if eps >= 1.0:
            raise InvalidArgumentError(
                f"epsilon must lie in [0, 1), got {self.epsilon!r}. Pass the label smoothing "
                "(0.1 is common)."
            )
        a = check_finite(
            "alpha",
            self.alpha,
            lower=0.0,
            strict=True,
            upper=2.0,
            fix="alpha is the level g saturates at far from the floor; ||r||^2 <= 2.",
        )
        if self.kappa is None:
            if eps == 0.0:
                raise InvalidArgumentError(
                    "epsilon=0 is plain one-hot cross-entropy, whose tail is not linear: use "
                    "closure 'ce', or pass kappa in (0, 1] to force a linear tail."
                )
            kappa = 2.0 * eps * (1.0 - eps + eps / C)
        else:
            kappa = check_finite(
                "kappa",
                self.kappa,
                lower=0.0,
                strict=True,
                upper=1.0,
                fix="kappa is the slope of g at the floor; ||r||^2 <= KL bounds it by 1.",
            )
        set_fields(self, classes=C, epsilon=eps, alpha=a, kappa=kappa)

    @property
    def floor(self) -> float:
        """L_inf = H(y^eps)."""
        return smoothed_entropy(self.classes, self.epsilon)

    @property
    def _kappa(self) -> float:
        return cast(float, self.kappa)  # never None after __post_init__

    @property
    def _b(self) -> float:
        return self._kappa / self.alpha

    def _x(self, L: ArrayLike) -> np.ndarray:
        return np.maximum(as_loss(L) - self.floor, 0.0)

    def g(self, L: ArrayLike) -> np.ndarray:
        return self.alpha * -np.expm1(-self._b * self._x(L))

    def dg(self, L: ArrayLike) -> np.ndarray:
        return self._kappa * np.exp(-self._b * self._x(L))

    def d2g(self, L: ArrayLike) -> np.ndarray:
        return -self._kappa * self._b * np.exp(-self._b * self._x(L))

    def G(self, L: ArrayLike) -> np.ndarray:
        """ln(e^{b x} - 1) / kappa (-inf at the floor)."""
        return log_expm1(self._b * self._x(L)) / self._kappa

    def G_inv(self, y: ArrayLike) -> np.ndarray:
        """L_inf + softplus(kappa y) / b."""
        return self.floor + np.logaddexp(0.0, self._kappa * as_loss(y)) / self._b

    def upper(self, L: ArrayLike) -> np.ndarray:
        """U(x) = min{x, 2 (1 - e^{-x})}, x = L - L_inf: concave, so R <= U(L - L_inf)."""
        x = self._x(L)
        return np.minimum(x, -2.0 * np.expm1(-x))
