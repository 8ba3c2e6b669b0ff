"""The curve-model interface shared by the ODE models and the peer laws.

A :class:`CurveModel` maps a parameter vector theta and a run's learning-rate
schedule to the loss at any optimizer step. Fitting (:func:`lossrate.fit`,
:func:`lossrate.fit_many`), prediction, evaluation and priors only ever talk to
this interface, so a peer law and the ODE are fitted, predicted and compared by
the same code path.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from ._errors import InvalidArgumentError
from .schedule import Schedule
from .trajectory import Trajectory

__all__ = ["CurveModel", "JacobianModel", "Param", "RunData"]


@dataclass(frozen=True)
class Param:
    """One fitted parameter: name, bounds, and whether it is searched on a log scale."""

    name: str
    lower: float
    upper: float
    scale: Literal["linear", "log"] = "linear"
    doc: str = ""

    def __post_init__(self) -> None:
        if not self.lower < self.upper:
            raise InvalidArgumentError(
                f"parameter {self.name!r}: lower={self.lower!r} must be < upper={self.upper!r}."
            )
        if self.scale == "log" and self.lower <= 0:
            raise InvalidArgumentError(
                f"parameter {self.name!r} is searched on a log scale, so lower must be > 0."
            )


@dataclass(frozen=True, eq=False)
class RunData:
    """What a curve model sees of one run: the observed trajectory and the lr of every step.

    ``schedule`` covers every optimizer step from 0 to at least the last step that will be
    predicted. ``S(step)`` (intrinsic time) comes from the schedule, so it is exact even
    when the trajectory was logged sparsely.
    """

    traj: Trajectory
    schedule: Schedule

    @classmethod
    def from_trajectory(
        cls, traj: Trajectory, schedule: Schedule | None = None, *, n_steps: int | None = None
    ) -> RunData:
        """Pair a trajectory with its schedule (rebuilt from the logged lr when not given)."""
        if schedule is None:
            if traj.lr is None:
                raise InvalidArgumentError(
                    "this model needs the learning rate: the trajectory has no 'lr' column and no "
                    "schedule was given. Pass schedule=Schedule.constant(...) or log lr."
                )
            schedule = Schedule.from_logged(traj.step, traj.lr, n_steps=n_steps)
        if int(traj.step[-1]) > schedule.n_steps:
            raise InvalidArgumentError(
                f"schedule covers {schedule.n_steps} steps but the trajectory reaches step "
                f"{int(traj.step[-1])}; pass a schedule covering the whole run."
            )
        return cls(traj, schedule)

    def with_schedule(self, schedule: Schedule) -> RunData:
        """The same observations under another schedule (for what-if predictions)."""
        return RunData(self.traj, schedule)


class CurveModel(ABC):
    """A parametric loss curve L(step; theta, schedule)."""

    #: registry / table name
    name: ClassVar[str] = ""
    #: the law diverges at intrinsic time S = 0 (a power of S): logged steps there are left
    #: out of its fits (with a note) and its prediction there is not finite
    positive_time: ClassVar[bool] = False

    @abstractmethod
    def params(self, run: RunData) -> Sequence[Param]:
        """The fitted parameters (their bounds may depend on the data, e.g. L_inf < min loss)."""

    @abstractmethod
    def guesses(self, run: RunData) -> Sequence[Mapping[str, float]]:
        """Starting points for a multi-start fit, from the data (at least one)."""

    @abstractmethod
    def curve(self, theta: Mapping[str, float], run: RunData, steps: np.ndarray) -> np.ndarray:
        """The model loss at ``steps`` (optimizer steps, using ``run.schedule``)."""

    def describe(self) -> str:
        """One line naming the model and its fixed settings (for tables and reports)."""
        return self.name

    def asymptote(self, theta: Mapping[str, float], run: RunData) -> float | None:
        """The loss the law approaches as training goes on (its floor), None when the law
        has none that its parameters name. Used for the reported floor."""
        return None

    def eval_seconds(self, run: RunData, n: int) -> float:
        """A fixed estimate of the seconds one evaluation of the curve at ``n`` points of
        ``run`` takes (on one core of a 2020s CPU). The fitting engine budgets its refitted
        bootstrap with it; an estimate rather than a timing, so that the same data give the
        same intervals on a loaded machine. The default is a closed-form curve's cost;
        models that do more (sums over lr changes, per-step paths) say so."""
        return 5e-5 + 1e-7 * n


class JacobianModel(CurveModel):
    """A curve model that gives its own derivatives (the fitting engine then uses them
    instead of differences); :meth:`curve` is the first half of :meth:`curve_and_jacobian`."""

    @abstractmethod
    def curve_and_jacobian(
        self, theta: Mapping[str, float], run: RunData, steps: np.ndarray, *, jacobian: bool = True
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The curve at ``steps`` and, with ``jacobian``, its derivatives (n, params) in the
        order of :meth:`params` (None without)."""

    def curve(self, theta: Mapping[str, float], run: RunData, steps: np.ndarray) -> np.ndarray:
        return self.curve_and_jacobian(theta, run, steps, jacobian=False)[0]
