"""What a schedule family is: a few bounded coordinates that build a :class:`Schedule`.

A family maps a point x of a box (``bounds``) to the lr of every step of the budget, never
above the peak nor below the lowest lr allowed, and offers a few starting points for the
search (``starts``). A family may have variants (discrete choices such as the WSD decay
shape); the search runs once per variant.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .._errors import InvalidArgumentError
from ..schedule import Schedule

__all__ = ["Budget", "Family"]


@dataclass(frozen=True)
class Budget:
    """What every schedule of the search shares: ``n_steps`` optimizer steps, the ``peak``
    lr, at least ``warmup`` steps of linear warmup (the run's own; the laws see the lr sum
    only, not the stability a warmup buys, so the search never shortens it) and no lr below
    ``min_lr``."""

    n_steps: int
    peak: float
    warmup: int = 0
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        if int(self.n_steps) != self.n_steps or self.n_steps < 10:
            raise InvalidArgumentError(
                f"budget_steps must be a whole number >= 10, got {self.n_steps!r}."
            )
        if not (np.isfinite(self.peak) and self.peak > 0):
            raise InvalidArgumentError(f"peak must be a finite lr > 0, got {self.peak!r}.")
        if not 0 <= self.min_lr < self.peak:
            raise InvalidArgumentError(
                f"min_lr must lie in [0, peak={self.peak:.4g}), got {self.min_lr!r}."
            )
        if not 0 <= self.warmup < self.n_steps // 2:
            raise InvalidArgumentError(
                f"warmup={self.warmup!r} must lie in [0, budget_steps / 2 = {self.n_steps // 2})."
            )

    def finish(self, lr: np.ndarray, name: str) -> Schedule:
        """The schedule with the warmup put in front, clipped to [min_lr, peak]."""
        lr = np.clip(np.asarray(lr, dtype=float), self.min_lr, self.peak)
        if self.warmup:
            k = np.arange(self.warmup)
            lr[: self.warmup] = np.minimum(lr[: self.warmup], self.peak * (k + 1) / self.warmup)
        return Schedule(lr, name)


class Family(ABC):
    """A schedule family (module docstring)."""

    name: ClassVar[str]

    def variants(self, budget: Budget) -> Sequence[Mapping[str, Any]]:
        """The discrete choices searched one by one (default: none)."""
        return ({},)

    @abstractmethod
    def bounds(self, budget: Budget, variant: Mapping[str, Any]) -> list[tuple[float, float]]:
        """The box of the search coordinates."""

    @abstractmethod
    def starts(self, budget: Budget, variant: Mapping[str, Any]) -> np.ndarray:
        """Starting points, shape (k, d): the coarse grid the search scans first."""

    @abstractmethod
    def build(self, x: np.ndarray, budget: Budget, variant: Mapping[str, Any]) -> Schedule:
        """The schedule at coordinates ``x``."""

    @abstractmethod
    def settings(
        self, x: np.ndarray, budget: Budget, variant: Mapping[str, Any]
    ) -> dict[str, float | int | str]:
        """The schedule's settings in the user's units (steps, lrs, shape names)."""

    def project(
        self, schedule: Schedule, budget: Budget, variant: Mapping[str, Any]
    ) -> np.ndarray | None:
        """Coordinates of this family closest to ``schedule`` (a start from another family's
        best), or None when the family cannot say."""
        return None
