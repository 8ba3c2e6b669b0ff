"""The multi-power law of Luo et al. 2025 (arXiv 2503.12811, ICLR 2025).

    L(t) = L0 + A (S1(t) + S_W)^-alpha - LD(t),
    LD(t) = B sum_{k=1}^{t} (eta_{k-1} - eta_k) G(eta_k^-gamma S_k(t)),
    S_k(t) = sum_{tau=k}^{t} eta_tau,   G(x) = 1 - (C x + 1)^-beta.

Here S1 + S_W is the whole lr sum, warmup included: ``schedule.S``. The sum in LD runs
over the lr changes only (:func:`lossrate.baselines._terms.multipower_drop`), vectorised
in memory-bounded blocks of (change points x query steps).

Two settings follow the authors' released code, with which their published parameters
reproduce their published test metrics on the mpl data to every printed digit:

* ``include_warmup=True``: the warmup's lr rise enters LD (with d_k < 0), as in the
  authors' code; with it excluded the published parameters miss by about B * peak.
* ``count_logged_step``: the authors take the loss logged at step s to be the loss after
  the update of step s, so eta_s is in S1 and in LD (sums up to and including s). The
  project's convention (default False) is the loss *before* the update of step s
  (t = S(s) = sum_{j<s} eta_j). The two differ by one step; True needs s < n_steps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .._errors import InvalidArgumentError
from .._model import JacobianModel, Param, RunData
from ._guess import loss_range, power_fit
from ._terms import drop_sum_seconds, multipower_drop, whole_steps

__all__ = ["PARAM_NAMES", "MultiPowerLaw"]

PARAM_NAMES = ("L0", "A", "alpha", "B", "C", "beta", "gamma")


@dataclass(frozen=True)
class MultiPowerLaw(JacobianModel):
    """The multi-power law (module docstring). Parameters L0, A, alpha, B, C, beta, gamma."""

    name: ClassVar[str] = "multipower"
    positive_time: ClassVar[bool] = True
    include_warmup: bool = True
    count_logged_step: bool = False
    #: lr changes within each run of this many steps are lumped into one
    #: (:func:`~lossrate.baselines._terms.multipower_drop`; 1, the default, is exact)
    block: int = 1

    def __post_init__(self) -> None:
        if int(self.block) != self.block or self.block < 1:
            raise InvalidArgumentError(f"block must be a whole number >= 1, got {self.block!r}.")

    def updates(self, run: RunData, steps: np.ndarray) -> np.ndarray:
        """The number of updates behind the loss at each step: s, or s + 1 (count_logged_step)."""
        n = whole_steps(run.schedule, steps) + int(self.count_logged_step)
        if n.size and n.max() > run.schedule.n_steps:
            raise InvalidArgumentError(
                f"count_logged_step=True uses the lr of the queried step itself, so steps must be "
                f"< {run.schedule.n_steps}; extend the schedule (Schedule.extend) first."
            )
        return n

    def asymptote(self, theta: Mapping[str, float], run: RunData) -> float | None:
        """L0: the loss the law approaches as the lr sum (or step count) grows."""
        return float(theta["L0"])

    def params(self, run: RunData) -> Sequence[Param]:
        hi = loss_range(run)[1]
        peak = max(float(np.max(run.schedule.lr)), 1e-300)
        return (
            Param("L0", 0.0, hi, doc="loss floor of the power term"),
            Param("A", 1e-8, 1e6, "log", "amplitude of the power term"),
            Param("alpha", 1e-3, 5.0, doc="exponent in the lr sum"),
            Param("B", 1e-6 / peak, 1e3 / peak, "log", "loss-drop amplitude"),
            Param("C", 1e-6, 1e6, "log", "loss-drop time scale"),
            Param("beta", 1e-3, 5.0, doc="loss-drop saturation exponent"),
            Param("gamma", 0.0, 3.0, doc="lr exponent of the loss-drop time"),
        )

    def guesses(self, run: RunData) -> Sequence[Mapping[str, float]]:
        lo, hi = loss_range(run)
        peak = float(np.max(run.schedule.lr))
        S = run.schedule.S(whole_steps(run.schedule, run.traj.step))
        span = max(hi - lo, 1e-3 * lo)
        out = []
        for f in (0.1, 0.5):
            L0 = max(lo - f * span, 0.0)
            A, alpha = power_fit(S, run.traj.loss, L0)
            for drop in (0.03, 0.3):  # B * peak: the loss drop of a full decay, in loss units
                out.append(
                    {
                        "L0": L0,
                        "A": A,
                        "alpha": alpha,
                        "B": drop * span / peak,
                        "C": 1.0,
                        "beta": 0.5,
                        "gamma": 0.5,
                    }
                )
        return out

    def curve_and_jacobian(
        self, theta: Mapping[str, float], run: RunData, steps: np.ndarray, *, jacobian: bool = True
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The curve and, with ``jacobian``, its derivatives by :data:`PARAM_NAMES` (n, 7)."""
        L0, A, alpha, B, C, beta, gamma = (float(theta[k]) for k in PARAM_NAMES)
        n = self.updates(run, steps)
        D, dD = multipower_drop(
            run.schedule,
            n,
            C,
            beta,
            gamma,
            include_warmup=self.include_warmup,
            jacobian=jacobian,
            block=int(self.block),
        )
        S = run.schedule.S(n)
        with np.errstate(divide="ignore"):
            power = np.power(S, -alpha)
        pred = L0 + A * power - B * D
        if not jacobian or dD is None:
            return pred, None
        with np.errstate(divide="ignore", invalid="ignore"):
            dalpha = -A * power * np.log(S)
        J = np.column_stack([np.ones_like(pred), power, dalpha, -D, -B * dD])
        return pred, J

    def eval_seconds(self, run: RunData, n: int) -> float:
        return drop_sum_seconds(run.schedule, n, self.include_warmup, int(self.block))

    def describe(self) -> str:
        opts = [] if self.include_warmup else ["warmup excluded from LD"]
        if self.count_logged_step:
            opts.append("loss after the logged step's update")
        if self.block > 1:
            opts.append(f"lr changes lumped {self.block} steps at a time")
        return f"{self.name}({', '.join(opts)})" if opts else self.name
