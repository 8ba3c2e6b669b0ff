"""Checks and numerically smooth helpers shared by the rate families (private)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._errors import InvalidArgumentError

__all__ = ["expm1_over", "log1p_over", "param"]


def param(
    owner: str, name: str, value: Any, *, positive: bool = False, nonnegative: bool = False
) -> float | np.ndarray:
    """``value`` as a float (scalar) or a read-only float array, after checking it.

    Raises InvalidArgumentError naming ``owner.name`` for non-numeric, non-finite or
    out-of-range values.
    """
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise InvalidArgumentError(
            f"{owner}: {name} must be a number or an array of numbers, got {value!r}."
        ) from None
    if not np.isfinite(arr).all():
        raise InvalidArgumentError(f"{owner}: {name} must be finite, got {value!r}.")
    if positive and (arr <= 0).any():
        raise InvalidArgumentError(f"{owner}: {name} must be > 0, got {value!r}.")
    if nonnegative and (arr < 0).any():
        raise InvalidArgumentError(f"{owner}: {name} must be >= 0, got {value!r}.")
    if arr.ndim == 0:
        return float(arr)
    arr = arr.copy()
    arr.setflags(write=False)
    return arr


def expm1_over(x: Any) -> np.ndarray:
    """(exp(x) - 1) / x, equal to 1 at x = 0 and accurate near it."""
    x = np.asarray(x, dtype=float)
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.expm1(x, out=np.empty_like(x))
        np.divide(out, x, out=out, where=x != 0.0)
    out[x == 0.0] = 1.0
    return out


def log1p_over(x: Any) -> np.ndarray:
    """log(1 + x) / x, equal to 1 at x = 0 and accurate near it (x > -1)."""
    x = np.asarray(x, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log1p(x, out=np.empty_like(x))
        np.divide(out, x, out=out, where=x != 0.0)
    out[x == 0.0] = 1.0
    return out
