"""Softmax cross-entropy with one-hot labels (theory §2.4, §3).

Per sample, r = p - e_y and q = 1 - p_y = 1 - e^{-l}; Cauchy-Schwarz gives

    C/(C-1) D(l) <= ||r||^2 <= 2 D(l),   D(l) = (1 - e^{-l})^2,

so the mean-field closure is g = alpha D(L) with alpha in [C/(C-1), 2]
(default 3/2, the original code's midpoint); measure it as
alpha_eff = sum_i ||r_i||^2 / sum_i q_i^2 (see :meth:`CrossEntropy.from_alpha_eff`).
G, G^{-1} (Wright omega) and the rigorous batch bracket are in :mod:`._logit`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import ClassVar

from .._errors import InvalidArgumentError
from ._common import check_finite, check_int, set_fields
from ._logit import LogitClosure
from .base import register_closure

__all__ = ["CrossEntropy"]


def check_classes(classes: object) -> int:
    """``classes`` as an int >= 2, or an InvalidArgumentError naming it."""
    return check_int("classes", classes, minimum=2, fix="Pass the number of softmax outputs.")


@register_closure
@dataclass(frozen=True)
class CrossEntropy(LogitClosure):
    """g(L) = alpha (1 - e^{-L})^2 for softmax cross-entropy over ``classes`` outputs.

    Args:
        classes: number of classes C >= 2.
        alpha: closure constant, in [C/(C-1), 2] (the per-sample bounds on ||r||^2 / D).

    Raises:
        InvalidArgumentError: classes not an integer >= 2, or alpha outside [C/(C-1), 2].
    """

    name: ClassVar[str] = "ce"

    classes: int = 10
    alpha: float = 1.5
    _c_hi: ClassVar[float] = 2.0

    def __post_init__(self) -> None:
        C = check_classes(self.classes)
        lo = C / (C - 1)
        a = check_finite(
            "alpha",
            self.alpha,
            lower=0.0,
            strict=True,
            fix=f"For classes={C}, pass alpha in [C/(C-1), 2] = [{lo:.6g}, 2].",
        )
        if not lo * (1.0 - 1e-12) <= a <= 2.0:
            raise InvalidArgumentError(
                f"alpha must lie in [C/(C-1), 2] = [{lo:.6g}, 2] for classes={C}, got {a!r}. "
                "Pass a value in that bracket, or use CrossEntropy.from_alpha_eff to clip a "
                "measured value into it."
            )
        set_fields(self, classes=C, alpha=max(a, lo))

    @property
    def _c_lo(self) -> float:
        return self.classes / (self.classes - 1)

    @classmethod
    def from_alpha_eff(cls, alpha_eff: float, classes: int) -> CrossEntropy:
        """The closure with a measured alpha_eff = sum ||r_i||^2 / sum (1 - p_{y_i})^2.

        A measured value outside [C/(C-1), 2] can only come from rounding or from data that
        is not one-hot softmax CE; it is clipped into the bracket with a ``UserWarning``
        naming both values, so the closure stays within the per-sample bounds.
        """
        C = check_classes(classes)
        a = check_finite(
            "alpha_eff",
            alpha_eff,
            lower=0.0,
            strict=True,
            fix="Pass sum ||r_i||^2 / sum (1 - p_y)^2 from a batch.",
        )
        lo = C / (C - 1)
        clipped = min(max(a, lo), 2.0)
        if clipped != a:
            warnings.warn(
                f"alpha_eff={a!r} lies outside [C/(C-1), 2] = [{lo:.6g}, 2] for classes={C}; "
                f"clipped to {clipped!r}.",
                UserWarning,
                stacklevel=2,
            )
        return cls(classes=C, alpha=clipped)
