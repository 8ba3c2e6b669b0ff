"""F1: a power-law rate phi(t) = phi0 (1 + t/t0)^(-beta) (theory §4.3).

Time axis: the caller's (intrinsic time t = sum of learning rates by default).

With y = ln(1 + t/t0) and e = 1 - beta,

    Phi(t) = phi0 t0 [(1 + t/t0)^e - 1] / e = phi0 t0 y (exp(e y) - 1)/(e y),

which tends smoothly to phi0 t0 ln(1 + t/t0) as beta -> 1 (evaluated through
expm1(z)/z, so arrays of beta at or near 1 need no special case). Phi_inf =
phi0 t0 / (beta - 1) for beta > 1, else inf; the inverse is

    Phi^{-1}(P) = t0 expm1( p log1p(e p)/(e p) ),   p = P / (phi0 t0),

finite only for P < Phi_inf.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ._params import expm1_over, log1p_over, param
from .base import RateModel, register_rate

__all__ = ["PowerLaw", "power_law_Phi"]


def power_law_Phi(phi0: Any, t0: Any, beta: Any, t: Any) -> np.ndarray:
    """Phi(t) of the F1 law (module docstring), unchecked: the fitting engine's hot path."""
    y = np.log1p(np.asarray(t, dtype=float) / t0)
    return phi0 * t0 * y * expm1_over((1.0 - beta) * y)


@register_rate
@dataclass(frozen=True, eq=False)
class PowerLaw(RateModel):
    """phi(t) = phi0 (1 + t/t0)^(-beta).

    Attributes:
        phi0: initial rate phi(0) >= 0.
        t0: time scale > 0 (same unit as t).
        beta: decay exponent >= 0 (beta = 0 is a constant rate; beta > 1 gives a finite
            budget Phi_inf and hence a budget floor).
    """

    name: ClassVar[str] = "power_law"
    time_axis: ClassVar[str] = "intrinsic"
    bounds: ClassVar[dict[str, tuple[float, float]]] = {
        "phi0": (0.0, np.inf),
        "t0": (0.0, np.inf),
        "beta": (0.0, 3.0),
    }

    phi0: Any
    t0: Any
    beta: Any

    def __post_init__(self) -> None:
        owner = "power_law rate"
        object.__setattr__(self, "phi0", param(owner, "phi0", self.phi0, nonnegative=True))
        object.__setattr__(self, "t0", param(owner, "t0", self.t0, positive=True))
        object.__setattr__(self, "beta", param(owner, "beta", self.beta, nonnegative=True))

    def phi(self, t: Any) -> np.ndarray:
        t = np.asarray(t, dtype=float)
        return self.phi0 * np.exp(-self.beta * np.log1p(t / self.t0))

    def Phi(self, t: Any) -> np.ndarray:
        return power_law_Phi(self.phi0, self.t0, self.beta, t)

    def Phi_inv(self, P: Any) -> np.ndarray:
        P = np.asarray(P, dtype=float)
        scale = np.asarray(self.phi0 * self.t0)
        e = 1.0 - np.asarray(self.beta)
        with np.errstate(divide="ignore", invalid="ignore"):
            p = np.maximum(P, 0.0) / scale
            x = e * p
            reachable = (x > -1.0) & (scale > 0)
            t = self.t0 * np.expm1(p * log1p_over(np.where(reachable, x, 0.0)))
        t = np.where(reachable, t, np.inf)
        return np.where(P <= 0, 0.0, t)

    @property
    def Phi_inf(self) -> float | np.ndarray:
        beta = np.asarray(self.beta)
        with np.errstate(divide="ignore"):
            finite = self.phi0 * self.t0 / np.where(beta > 1, beta - 1.0, 1.0)
        return np.where(beta > 1, finite, np.where(np.asarray(self.phi0) > 0, np.inf, 0.0))[()]
