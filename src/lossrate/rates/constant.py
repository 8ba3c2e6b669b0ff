"""F0: a constant rate phi(t) = phi0 (theory §4.3).

Time axis: whatever axis the caller uses (intrinsic time t = sum of learning rates by
default); phi0 is "loss-rate per unit of that time".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ._params import param
from .base import RateModel, register_rate

__all__ = ["Constant"]


@register_rate
@dataclass(frozen=True, eq=False)
class Constant(RateModel):
    """phi(t) = phi0,  Phi(t) = phi0 t,  Phi^{-1}(P) = P / phi0 (inf when phi0 = 0).

    Attributes:
        phi0: the rate, >= 0 (a float, or an array that broadcasts against t).
    """

    name: ClassVar[str] = "constant"
    time_axis: ClassVar[str] = "intrinsic"
    bounds: ClassVar[dict[str, tuple[float, float]]] = {"phi0": (0.0, np.inf)}

    phi0: Any

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "phi0", param("constant rate", "phi0", self.phi0, nonnegative=True)
        )

    def phi(self, t: Any) -> np.ndarray:
        t = np.asarray(t, dtype=float)
        return np.broadcast_to(self.phi0, np.broadcast_shapes(np.shape(self.phi0), t.shape)) * 1.0

    def Phi(self, t: Any) -> np.ndarray:
        return self.phi0 * np.asarray(t, dtype=float)

    def Phi_inv(self, P: Any) -> np.ndarray:
        P = np.asarray(P, dtype=float)
        phi0 = np.asarray(self.phi0)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = P / phi0
        return np.where(P <= 0, 0.0, np.where(phi0 > 0, out, np.inf))

    @property
    def Phi_inf(self) -> float | np.ndarray:
        return np.where(np.asarray(self.phi0) > 0, np.inf, 0.0)[()]
