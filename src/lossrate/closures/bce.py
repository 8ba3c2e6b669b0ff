"""Binary cross-entropy on logits, hard labels, per logit (theory §2.3).

For l = softplus(z) - y z and r = sigmoid(z) - y, |r| = 1 - e^{-l} exactly, so
R = mean_j D(l_j) over all N = n C logits (PyTorch's mean reduction), D = (1 - e^{-l})^2.
The mean-field closure is g = D(L) (alpha = 1); the bracket is the CE one with c_C = 1:

    [kappa (1 - e^{-L/kappa})]^2 + e^{-2 l_max} sigma^2 <= R <= min{D(L) + sigma^2, D_hat(L)},

and D_hat(L) <= MU L (MU = 0.4072644...) is the sigma-free linear bound of the original code.
The output must be the logit: ``nn.BCELoss`` on probabilities has a different chain rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ._logit import LogitClosure
from .base import register_closure

__all__ = ["BCE"]


@register_closure
@dataclass(frozen=True)
class BCE(LogitClosure):
    """g(L) = (1 - e^{-L})^2: exact per logit for BCE-with-logits (no parameters)."""

    name: ClassVar[str] = "bce"
    alpha: ClassVar[float] = 1.0  # type: ignore[misc]
