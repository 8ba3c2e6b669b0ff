"""Checks and numerically smooth helpers shared by the rate families (private)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .._errors import InvalidArgumentError, check_finite_array

__all__ = ["expm1_over", "log1p_over", "param"]


def param(
    owner: str, name: str, value: Any, *, positive: bool = False, nonnegative: bool = False
) -> float | np.ndarray:
    """``value`` as a float (scalar) or a read-only float array, after checking it.

    Raises InvalidArgumentError naming ``owner: name`` for non-numeric, non-finite or
    out-of-range values.
    """
    arr = check_finite_array(f"{owner}: {name}", value)
    if positive and (arr <= 0).any():
        raise InvalidArgumentError(f"{owner}: {name} must be > 0, got {value!r}.")
    if nonnegative and (arr < 0).any():
        raise InvalidArgumentError(f"{owner}: {name} must be >= 0, got {value!r}.")
    if arr.ndim == 0:
        return float(arr)
    arr = arr.copy()
    arr.setflags(write=False)
    return arr


def _over(f: Callable[..., np.ndarray], x: Any) -> np.ndarray:
    """f(x) / x with the limit 1 at x = 0 (for f = expm1, log1p: accurate near 0)."""
    x = np.asarray(x, dtype=float)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        out = f(x, out=np.empty_like(x))
        np.divide(out, x, out=out, where=x != 0.0)
    out[x == 0.0] = 1.0
    return out


def expm1_over(x: Any) -> np.ndarray:
    """(exp(x) - 1) / x, equal to 1 at x = 0 and accurate near it."""
    return _over(np.expm1, x)


def log1p_over(x: Any) -> np.ndarray:
    """log(1 + x) / x, equal to 1 at x = 0 and accurate near it (x > -1)."""
    return _over(np.log1p, x)
