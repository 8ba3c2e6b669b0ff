"""Exception types of lossrate and the argument checks that raise them.

Every error names the argument (or file), shows the value received and says the
fix. The CLI maps the types to distinct exit codes:

* :class:`InvalidArgumentError` — bad value given to a function or option (exit 2);
* :class:`DataError` — a file or a data array is malformed (exit 3);
* anything else escaping is an internal failure (exit 4).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = [
    "DataError",
    "InvalidArgumentError",
    "LossrateError",
    "check_choice",
    "check_finite_array",
    "check_positive",
    "check_probability",
]


class LossrateError(Exception):
    """Base class of every error lossrate raises on purpose.

    ``cli``: the same message in the words of the ``lossrate`` command (its flags instead of
    Python arguments), shown when the error is raised under the command line; the message
    itself names the Python arguments.
    """

    def __init__(self, *args: object, cli: str | None = None) -> None:
        super().__init__(*args)
        self.cli = cli


class InvalidArgumentError(LossrateError, ValueError):
    """An argument has a value lossrate cannot use (message: argument, value, fix)."""


class DataError(LossrateError, ValueError):
    """Data (a file, a column, a curve) is malformed (message: where, what, fix)."""


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_positive(name: str, value: Any, *, allow_zero: bool = False, fix: str = "") -> float:
    """Return ``float(value)`` if it is finite and > 0 (>= 0 with ``allow_zero``)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise InvalidArgumentError(
            f"{name} must be a number, got {_show(value)}. {fix}".strip()
        ) from None
    ok = np.isfinite(x) and (x >= 0 if allow_zero else x > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise InvalidArgumentError(
            f"{name} must be finite and {bound}, got {_show(value)}. {fix}".strip()
        )
    return x


def check_probability(name: str, value: Any, *, fix: str = "") -> float:
    """Return ``float(value)`` if it lies in [0, 1)."""
    x = check_positive(name, value, allow_zero=True, fix=fix)
    if x >= 1:
        raise InvalidArgumentError(f"{name} must lie in [0, 1), got {_show(value)}. {fix}".strip())
    return x


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``; otherwise list them."""
    options = sorted(choices)
    if value not in options:
        raise InvalidArgumentError(
            f"{name}={_show(value)} is not known; choose one of {', '.join(options)}."
        )
    return str(value)


def check_finite_array(name: str, value: Any, *, ndim: int | None = None) -> np.ndarray:
    """Return ``value`` as a float array after checking it is numeric and finite."""
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise InvalidArgumentError(
            f"{name} must be an array of numbers, got {_show(value)}."
        ) from None
    if ndim is not None and arr.ndim != ndim:
        raise InvalidArgumentError(
            f"{name} must be {ndim}-dimensional, got shape {arr.shape}. "
            "Pass a flat sequence of numbers."
        )
    bad = ~np.isfinite(arr)
    if bad.any():
        idx = int(np.flatnonzero(bad.ravel())[0])
        raise InvalidArgumentError(
            f"{name} holds a non-finite value ({arr.ravel()[idx]!r} at flat index {idx}); "
            "remove or fill NaN/inf entries first."
        )
    return arr
