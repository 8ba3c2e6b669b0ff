"""The closure interface: g(L) in dL/dt = -phi(t) g(L, sigma_L), and its registry.

A closure of one loss family gives

* ``g(L)`` (mean-field), its derivatives ``dg`` and ``d2g``;
* ``G(L)``, an antiderivative of 1/g, and its inverse ``G_inv`` (closed form where one
  exists), so that with Phi(t) = int_0^t phi the solution is L = G_inv(G(L0) - Phi(t));
* ``g2(L, sigma) = g + g''/2 sigma^2``, the second-order ("Jensen gap") closure;
* where the theory gives one, the rigorous batch bracket ``g_lo <= R <= g_hi``.

All methods take numpy arrays and broadcast; parameters are dataclass fields.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, TypeVar

import numpy as np

from .._errors import InvalidArgumentError
from .._registry import Registry

__all__ = ["Closure", "available_closures", "get_closure", "register_closure"]

ArrayLike = Any


class Closure(ABC):
    """Abstract closure g(L). Subclasses are frozen dataclasses whose fields are parameters."""

    #: registry name, e.g. "ce"
    name: ClassVar[str] = ""

    @property
    def floor(self) -> float:
        """L_inf, the loss at which g vanishes (0 unless the family has a floor)."""
        return 0.0

    @abstractmethod
    def g(self, L: ArrayLike) -> np.ndarray:
        """Mean-field closure g(L) >= 0, the model of R = mean_i ||r_i||^2."""

    @abstractmethod
    def dg(self, L: ArrayLike) -> np.ndarray:
        """g'(L)."""

    @abstractmethod
    def d2g(self, L: ArrayLike) -> np.ndarray:
        """g''(L)."""

    @abstractmethod
    def G(self, L: ArrayLike) -> np.ndarray:
        """An antiderivative of 1/g (strictly increasing in L above the floor)."""

    @abstractmethod
    def G_inv(self, y: ArrayLike) -> np.ndarray:
        """Inverse of :meth:`G`: the L with G(L) = y (the floor where y <= G(floor+))."""

    @property
    def G_at_floor(self) -> float:
        """lim_{L -> floor+} G(L); -inf when the floor is never reached with finite Phi."""
        return -np.inf

    def g2(self, L: ArrayLike, sigma: ArrayLike) -> np.ndarray:
        """Second-order closure g2 = g(L) + g''(L) sigma^2 / 2 (the "Jensen gap")."""
        L = np.asarray(L, dtype=float)
        sigma = np.asarray(sigma, dtype=float)
        return self.g(L) + 0.5 * self.d2g(L) * sigma**2

    def bracket(
        self, L: ArrayLike, sigma: ArrayLike, loss_max: ArrayLike | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rigorous bounds (g_lo, g_hi) with g_lo <= R <= g_hi for a batch of mean L, std sigma."""
        raise InvalidArgumentError(
            f"closure {self.name!r} has no rigorous batch bracket; closures with one: "
            f"{', '.join(_overriding('bracket'))}."
        )

    def upper(self, L: ArrayLike) -> np.ndarray:
        """A sigma-free rigorous upper bound U(L) >= R for any batch of mean loss L
        (concave in L, so it also bounds batch means: used for certified floors)."""
        raise InvalidArgumentError(
            f"closure {self.name!r} has no sigma-free upper bound; closures with one: "
            f"{', '.join(_overriding('upper'))}."
        )


_REGISTRY: Registry[Closure] = Registry("closure", Closure)


C = TypeVar("C", bound=type[Closure])


def register_closure(cls: C) -> C:
    """Class decorator: make ``cls`` available by ``cls.name`` in :func:`get_closure`."""
    return _REGISTRY.register(cls)  # type: ignore[no-any-return]


def _overriding(method: str) -> list[str]:
    """Registered closure names whose class overrides ``Closure.<method>``."""
    base = getattr(Closure, method)
    return [name for name, cls in _REGISTRY.items() if getattr(cls, method) is not base]


def available_closures() -> list[str]:
    """Registered closure names."""
    return _REGISTRY.names()


def get_closure(closure: str | Closure, **params: Any) -> Closure:
    """A closure instance from a registered name and parameters (or the instance itself)."""
    return _REGISTRY.get(closure, **params)
