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
from .._registry import Registry

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


_REGISTRY: Registry[RateModel] = Registry("rate", RateModel)
R = TypeVar("R", bound=type[RateModel])


def register_rate(cls: R) -> R:
    """Class decorator: make ``cls`` available by ``cls.name`` in :func:`get_rate`."""
    return _REGISTRY.register(cls)  # type: ignore[no-any-return]


def available_rates() -> list[str]:
    """Registered rate-model names."""
    return _REGISTRY.names()


def get_rate(rate: str | RateModel, **params: Any) -> RateModel:
    """A rate-model instance from a registered name and parameters (or the instance itself)."""
    return _REGISTRY.get(rate, **params)
