"""Mean squared error: per-sample l = a ||z - y||^2, so ||r||^2 = 4 a l exactly (theory §2.1).

    g(L) = 4 a (L - floor),   G(L) = ln(L - floor) / (4 a),   G^{-1}(y) = floor + e^{4 a y}.

With constant phi: L = floor + (L0 - floor) e^{-4 a Phi}. ``floor > 0`` is the re-factored
closure of theory §2.6 (the floor moves from rho into g).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ._common import as_loss, batch_stats, check_finite, check_int, set_fields
from .base import ArrayLike, Closure, register_closure

__all__ = ["MSE"]


@register_closure
@dataclass(frozen=True)
class MSE(Closure):
    """g(L) = 4 a (L - floor): exact for per-sample losses l = a ||z - y||^2 (c = R/g = 1).

    Args:
        a: scale of the per-sample loss, l = a ||z - y||^2 (a = 1/2 gives g = 2L;
            ``nn.MSELoss`` over C outputs has a = 1/C, see :meth:`from_torch_mse`).
        floor: irreducible loss L_inf >= 0 at which g vanishes (0 for an exact fit).

    Raises:
        InvalidArgumentError: a <= 0, floor < 0, or either not finite.
    """

    name: ClassVar[str] = "mse"

    a: float = 1.0
    floor: float = 0.0  # type: ignore[assignment]

    def __post_init__(self) -> None:
        set_fields(
            self,
            a=check_finite(
                "a",
                self.a,
                lower=0.0,
                strict=True,
                fix="a is the per-sample scale l = a||z-y||^2; nn.MSELoss over C outputs has a = 1/C.",
            ),
            floor=check_finite(
                "floor",
                self.floor,
                lower=0.0,
                fix="Pass the irreducible loss L_inf >= 0 (0 if none).",
            ),
        )

    @classmethod
    def from_torch_mse(cls, outputs: int, floor: float = 0.0) -> MSE:
        """The closure of ``torch.nn.MSELoss()`` (mean reduction) over ``outputs`` = C outputs
        per sample: per-sample l = ||z - y||^2 / C, so a = 1/C and g = 4 L / C."""
        C = check_int("outputs", outputs, minimum=1, fix="Pass the outputs per sample.")
        return cls(a=1.0 / C, floor=floor)

    def g(self, L: ArrayLike) -> np.ndarray:
        return 4.0 * self.a * np.maximum(as_loss(L) - self.floor, 0.0)

    def dg(self, L: ArrayLike) -> np.ndarray:
        return np.full_like(as_loss(L), 4.0 * self.a)

    def d2g(self, L: ArrayLike) -> np.ndarray:
        return np.zeros_like(as_loss(L))

    def G(self, L: ArrayLike) -> np.ndarray:
        x = np.maximum(as_loss(L) - self.floor, 0.0)
        with np.errstate(divide="ignore"):
            return np.log(x) / (4.0 * self.a)

    def G_inv(self, y: ArrayLike) -> np.ndarray:
        return self.floor + np.exp(4.0 * self.a * as_loss(y))

    def bracket(
        self, L: ArrayLike, sigma: ArrayLike, loss_max: ArrayLike | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """R = 4 a L exactly, whatever sigma: returns (4 a L, 4 a L).

        This is the true R of the batch, so with ``floor > 0`` it is 4 a L, not g(L): the
        re-factored g vanishes at the floor while R does not (theory §2.6)."""
        L, _, _ = batch_stats(L, sigma, loss_max)
        R = 4.0 * self.a * L
        return R, R.copy()

    def upper(self, L: ArrayLike) -> np.ndarray:
        """R = 4 a L exactly (linear, hence concave): the tightest sigma-free upper bound."""
        return 4.0 * self.a * np.maximum(as_loss(L), 0.0)
