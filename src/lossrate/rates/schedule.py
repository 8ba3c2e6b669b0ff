"""F2: a schedule-driven rate in *step time* (theory §4.3).

Time axis: **optimizer steps** s (continuous, s in [0, n_steps]), not intrinsic time.
Step k covers s in [k, k+1) and uses the learning rate eta_k of the
:class:`~lossrate.schedule.Schedule`; intrinsic time is S(s) = int_0^s eta, piecewise
linear in s (``Schedule.S``). The rate is

    phi(s) = eta(s) rho(S(s)),    rho(S) = rho0 (1 + S/S0)^(-beta)   (a power law in S),

so Phi(s) = P(S(s)) with P the F1 integral in S (:class:`~lossrate.rates.power_law.PowerLaw`):
under gradient flow the loss depends on the schedule only through the lr sum.

The schedule *is* the training run: the rate is defined on [0, n_steps] only, and
``Phi_inf`` is the budget of the whole run, Phi(n_steps) (so a "floor" under this rate is
the loss at the end of training). Extend the schedule (``Schedule.extend``) to look further.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .._errors import InvalidArgumentError
from ..schedule import Schedule
from .base import RateModel, register_rate
from .power_law import PowerLaw

__all__ = ["ScheduleRate"]


@register_rate
@dataclass(frozen=True, eq=False)
class ScheduleRate(RateModel):
    """phi(s) = eta(s) rho0 (1 + S(s)/S0)^(-beta), s in optimizer steps.

    Attributes:
        schedule: the per-step learning rates eta_k.
        rho0, S0, beta: the power law rho(S) in intrinsic time (see :class:`PowerLaw`);
            arrays broadcast against s as for every rate.
    """

    name: ClassVar[str] = "schedule"
    time_axis: ClassVar[str] = "step"
    bounds: ClassVar[dict[str, tuple[float, float]]] = dict(PowerLaw.bounds)

    schedule: Schedule
    rho0: Any
    S0: Any
    beta: Any

    def __post_init__(self) -> None:
        if not isinstance(self.schedule, Schedule):
            raise InvalidArgumentError(
                f"schedule rate: schedule must be a lossrate.Schedule, got {type(self.schedule).__name__}; "
                "build one with Schedule.constant/cosine/wsd or Schedule(lr_array)."
            )
        rho = PowerLaw(self.rho0, self.S0, self.beta)  # validates the parameters
        object.__setattr__(self, "rho0", rho.phi0)
        object.__setattr__(self, "S0", rho.t0)
        object.__setattr__(self, "beta", rho.beta)
        object.__setattr__(self, "_rho", rho)

    @property
    def rho(self) -> PowerLaw:
        """rho(S) as a rate in intrinsic time S (its Phi is P(S) = int_0^S rho)."""
        return self._rho  # type: ignore[attr-defined, no-any-return]

    def S(self, s: Any) -> np.ndarray:
        """Intrinsic time S(s) = int_0^s eta (raises beyond the schedule)."""
        return self.schedule.S(np.asarray(s, dtype=float))

    def eta(self, s: Any) -> np.ndarray:
        """The learning rate in force at step time s (eta_k on [k, k+1); the last at s = n)."""
        s = np.asarray(s, dtype=float)
        self.schedule.S(s)  # range check
        k = np.clip(np.floor(s).astype(np.int64), 0, self.schedule.n_steps - 1)
        return self.schedule.lr[k]

    def phi(self, s: Any) -> np.ndarray:
        return self.eta(s) * self.rho.phi(self.S(s))

    def Phi(self, s: Any) -> np.ndarray:
        return self.rho.Phi(self.S(s))

    def step_of(self, S: Any) -> np.ndarray:
        """The smallest step time s with S(s) = S (inf beyond the schedule's total lr)."""
        S = np.asarray(S, dtype=float)
        cum = self.schedule.cumulative
        k = np.clip(np.searchsorted(cum, S, side="left"), 1, len(cum) - 1)
        lr = self.schedule.lr[k - 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            s = (k - 1) + np.where(lr > 0, (S - cum[k - 1]) / lr, 1.0)
        s = np.where(S <= 0, 0.0, np.minimum(s, self.schedule.n_steps))
        # a relative slack of 1e-12 absorbs the round-off of S = P^{-1}(P(S_total))
        return np.where(S > cum[-1] * (1.0 + 1e-12), np.inf, s)

    def Phi_inv(self, P: Any) -> np.ndarray:
        return self.step_of(self.rho.Phi_inv(P))

    @property
    def Phi_inf(self) -> float | np.ndarray:
        """The budget of the whole schedule, Phi(n_steps)."""
        return self.rho.Phi(self.schedule.cumulative[-1])[()]
