"""The rate-model interface: phi(t) and its integral Phi(t) = int_0^t phi, and a registry.

Time is intrinsic time t = sum of learning rates unless a model says otherwise. Every
parameter is a dataclass field and may be a numpy array: methods broadcast parameters
against ``t`` with numpy rules, so parameters of shape (m, 1) and t of shape (T,) give
(m, T) curves (the vectorised solver relies on this).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, TypeVar

import numpy as np

from .._errors import InvalidArgumentError

__all__ = ["RateModel", "available_rates", "get_rate", "register_rate"]

ArrayLike = Any


class RateModel(ABC):
    """Abstract effective rate phi(t) >= 0."""

    name: ClassVar[str] = ""
    #: (lower, upper) bounds of each fitted parameter, by field name
    bounds: ClassVar[dict[str, tuple[float, float]]] = {}

    @abstractmethod
    def phi(self, t: ArrayLike) -> np.ndarray:
        """phi(t) >= 0."""

    @abstractmethod
    def Phi(self, t: ArrayLike) -> np.ndarray:
        """Phi(t) = int_0^t phi(s) ds, non-decreasing, Phi(0) = 0."""

    def Phi_inv(self, P: ArrayLike) -> np.ndarray:
        """The smallest t with Phi(t) = P; +inf where P >= Phi_inf."""
        raise InvalidArgumentError(f"rate {self.name!r} has no inverse of Phi.")

    @property
    def Phi_inf(self) -> float | np.ndarray:
        """lim_{t -> inf} Phi(t) (+inf for most families)."""
        return np.inf


_REGISTRY: dict[str, type[RateModel]] = {}
R = TypeVar("R", bound=type[RateModel])


def register_rate(cls: R) -> R:
    """Class decorator: make ``cls`` available by ``cls.name`` in :func:`get_rate`."""
    if not cls.name:
        raise TypeError(f"{cls.__name__} needs a non-empty class attribute 'name'.")
    _REGISTRY[cls.name] = cls
    return cls


def available_rates() -> list[str]:
    """Registered rate-model names."""
    return sorted(_REGISTRY)


def get_rate(rate: str | RateModel, **params: Any) -> RateModel:
    """A rate-model instance from a registered name and parameters (or the instance itself)."""
    if isinstance(rate, RateModel):
        if params:
            raise InvalidArgumentError(
                f"parameters {sorted(params)} given with a rate instance; set them on the instance."
            )
        return rate
    if rate not in _REGISTRY:
        raise InvalidArgumentError(
            f"rate={rate!r} is not known; choose one of {', '.join(available_rates())} "
            "or pass a RateModel instance."
        )
    try:
        return _REGISTRY[rate](**params)
    except TypeError as exc:
        raise InvalidArgumentError(f"rate {rate!r}: bad parameters {params}: {exc}") from None
