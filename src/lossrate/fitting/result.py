"""The engine's fit result: a :class:`~lossrate.FitResult` that keeps the runs and the
parameter map for :func:`~lossrate.fitting.predict.predict`."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .._errors import InvalidArgumentError
from .._model import RunData
from .._results import FitResult
from .params import ParamMap

__all__ = ["Fit"]


@dataclass(frozen=True, eq=False)
class Fit(FitResult):
    """A :class:`~lossrate.FitResult` that also keeps what :func:`predict` needs: the runs
    (observations and schedules) and the parameter map. Neither goes into ``to_dict``."""

    runs: tuple[RunData, ...] = field(default=(), repr=False)
    run_names: tuple[str, ...] = ()
    pmap: ParamMap | None = field(default=None, repr=False)
    z_hat: np.ndarray | None = field(default=None, repr=False)
    log: bool = True

    def theta(self, run: str | None = None) -> dict[str, float]:
        """All model parameters (fitted and fixed) of one fitted run, by plain name."""
        if self.pmap is None or self.z_hat is None:
            raise InvalidArgumentError("this FitResult carries no parameter map; refit it.")
        return self.pmap.thetas(self.z_hat)[self.run_index(run)]

    def run_index(self, run: str | None) -> int:
        if run is None:
            if len(self.run_names) != 1:
                raise InvalidArgumentError(
                    f"this fit covers {len(self.run_names)} runs; name one with run=..., "
                    f"one of {list(self.run_names)}."
                )
            return 0
        if run not in self.run_names:
            raise InvalidArgumentError(
                f"run={run!r} was not fitted; the fitted runs are {list(self.run_names)}."
            )
        return self.run_names.index(run)
