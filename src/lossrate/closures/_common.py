"""Shared numerics of the closures: D(l) = (1 - e^{-l})^2, its derivatives, its least
concave majorant D_hat, and small argument checks.

D is the squared output-gradient norm of a hard-label logit loss as a function of its
loss (theory §2): BCE has ||r||^2 = D(l) exactly, softmax CE has
C/(C-1) D(l) <= ||r||^2 <= 2 D(l). Facts used below:

* D'(l) = 2 e^{-l} (1 - e^{-l}),  D''(l) = 2 e^{-l} (2 e^{-l} - 1) in [-1/4, 2],
  with its sign change at l = ln 2;
* D_hat(l) = MU * l for l <= X_STAR and D(l) beyond, where X_STAR solves
  e^x - 1 = 2x (the tangent from the origin touches D there) and
  MU = D(X_STAR) / X_STAR = sup_l D(l)/l = 0.4072644...

X_STAR and MU are solved to full double precision with :func:`scipy.optimize.brentq`
when this module is imported.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import brentq

from .._errors import InvalidArgumentError

__all__ = [
    "MU",
    "X_STAR",
    "D",
    "Dhat",
    "as_loss",
    "batch_stats",
    "check_finite",
    "check_int",
    "d2D",
    "dD",
    "log_expm1",
    "one_minus_exp",
    "set_fields",
]


def as_loss(L: Any) -> np.ndarray:
    """``L`` as a float array (no copy when it already is one)."""
    return np.asarray(L, dtype=float)


def one_minus_exp(L: Any) -> np.ndarray:
    """q = 1 - e^{-L}, computed as -expm1(-L) (exact for tiny L)."""
    return -np.expm1(-as_loss(L))


def D(L: Any) -> np.ndarray:
    """D(l) = (1 - e^{-l})^2, computed stably as expm1(-l)^2."""
    return np.expm1(-as_loss(L)) ** 2


def dD(L: Any) -> np.ndarray:
    """D'(l) = 2 e^{-l} (1 - e^{-l})."""
    L = as_loss(L)
    return 2.0 * np.exp(-L) * -np.expm1(-L)


def d2D(L: Any) -> np.ndarray:
    """D''(l) = 2 e^{-l} (2 e^{-l} - 1), in [-1/4, 2]; negative for l > ln 2."""
    L = as_loss(L)
    e = np.exp(-L)
    return 2.0 * e * (2.0 * e - 1.0)


X_STAR: float = float(
    brentq(lambda x: np.expm1(x) - 2.0 * x, 0.5, 3.0, xtol=1e-16, rtol=4 * np.finfo(float).eps)
)
MU: float = float(np.expm1(-X_STAR) ** 2 / X_STAR)


def Dhat(L: Any) -> np.ndarray:
    """Least concave majorant of D on [0, inf): MU * l for l <= X_STAR, D(l) beyond.

    Concave and >= D everywhere, and <= tanh(l/2); MU * l is its sigma-free linear bound.
    """
    L = as_loss(L)
    return np.where(L <= X_STAR, MU * L, D(L))


def log_expm1(L: np.ndarray) -> np.ndarray:
    """ln(e^L - 1) for L > 0, without overflow for large L or cancellation for small L."""
    big = L > 1.0
    Ls = np.where(big, 1.0, L)
    Lb = np.where(big, L, 1.0)
    with np.errstate(divide="ignore"):
        return np.where(big, Lb + np.log(-np.expm1(-Lb)), np.log(np.expm1(Ls)))


def check_finite(
    name: str,
    value: Any,
    *,
    lower: float | None = None,
    strict: bool = False,
    upper: float | None = None,
    fix: str = "",
) -> float:
    """``float(value)`` after checking it is a finite number within [lower, upper]
    (``lower`` excluded when ``strict``); the error names the field, the value and the fix."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise InvalidArgumentError(
            f"{name} must be a number, got {value!r}. {fix}".strip()
        ) from None
    bad = not np.isfinite(x)
    if lower is not None:
        bad = bad or (x <= lower if strict else x < lower)
    if upper is not None:
        bad = bad or x > upper
    if bad:
        conds = ["finite"]
        if lower is not None:
            conds.append(f"{'>' if strict else '>='} {lower:g}")
        if upper is not None:
            conds.append(f"<= {upper:g}")
        raise InvalidArgumentError(
            f"{name} must be {' and '.join(conds)}, got {value!r}. {fix}".strip()
        )
    return x


def set_fields(obj: Any, **values: Any) -> None:
    """Set validated fields on a frozen dataclass from its ``__post_init__``."""
    for name, value in values.items():
        object.__setattr__(obj, name, value)


def check_int(name: str, value: Any, *, minimum: int, fix: str = "") -> int:
    """``int(value)`` after checking it is an integer >= ``minimum`` (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InvalidArgumentError(
            f"{name} must be an integer >= {minimum}, got {value!r}. {fix}".strip()
        )
    return int(value)


def batch_stats(
    L: Any, sigma: Any, loss_max: Any | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(L, sigma, loss_max) of a bracket call as broadcast float arrays, checked:
    L >= 0, sigma >= 0 (a population standard deviation), loss_max >= L where given."""
    L, sig = np.broadcast_arrays(as_loss(L), as_loss(sigma))
    if np.any(~(L >= 0)) or np.any(~(sig >= 0)):
        raise InvalidArgumentError(
            "bracket needs L >= 0 and sigma >= 0 (sigma is the population standard deviation "
            f"of the per-sample losses); got min L = {np.min(L)!r}, min sigma = {np.min(sig)!r}."
        )
    if loss_max is None:
        return L, sig, None
    lmax = as_loss(loss_max)
    if np.any(~(lmax >= L * (1.0 - 1e-12))):
        raise InvalidArgumentError(
            "loss_max must be >= L (it is the largest per-sample loss of the batch); got "
            f"loss_max = {np.min(lmax)!r} with L up to {np.max(L)!r}. Pass the batch maximum or None."
        )
    return L, sig, lmax
