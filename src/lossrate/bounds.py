"""Floors, certified lower bounds, and time, steps and energy to a target loss (theory §5).

* :func:`floor` — the budget floor L_floor = G^{-1}(G(L0) - Phi_inf): the lowest loss the
  model reaches with the whole rate budget (the closure's L_inf when Phi_inf = inf).
* :func:`certified_lower_bound` — the comparison solution of dL/dt = -phi_hi g_hi(L) with
  an upper bound phi_hi on the rate (eta K^2, K^2 = trace of the normalised NTK) and the
  rigorous upper bound g_hi of R; for gradient flow L(t) >= Lambda(t). With ``gd_lr`` it
  is the discrete comparison sequence, a bound for full-batch GD on convex losses.
* :func:`time_to_target`, :func:`steps_to_target`, :func:`energy_to_target`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ._errors import InvalidArgumentError, check_finite_array, check_positive
from .closures.base import Closure, get_closure
from .rates.base import RateModel, get_rate
from .rates.constant import Constant
from .schedule import Schedule
from .solve import Solution, _hit_time, solve_ode
from .trajectory import Trajectory

__all__ = [
    "EnergyEstimate",
    "certified_lower_bound",
    "energy_to_target",
    "floor",
    "steps_to_target",
    "time_to_target",
]


def _L0(closure: Closure, L0: Any) -> np.ndarray:
    L0 = check_finite_array("L0", L0)
    if (L0 <= closure.floor).any():
        raise InvalidArgumentError(
            f"L0 must lie above the closure's floor {closure.floor!r}, got min L0 = {L0.min()!r}."
        )
    return L0


def floor(closure: Closure | str, rate: RateModel | str, L0: Any) -> np.ndarray:
    """L_floor = G^{-1}(G(L0) - Phi_inf), the closure's floor L_inf where Phi_inf = inf.

    Vectorised over L0 and array rate parameters. For the finite budget of a
    :class:`~lossrate.rates.ScheduleRate` this is the loss at the end of the schedule.
    """
    closure, rate = get_closure(closure), get_rate(rate)
    L0 = _L0(closure, L0)
    P = np.asarray(rate.Phi_inf, dtype=float)
    with np.errstate(invalid="ignore"):
        y = closure.G(L0) - np.where(np.isfinite(P), P, 0.0)
        out = closure.G_inv(y)
    return np.where(np.isfinite(P), out, closure.floor)[()]


def time_to_target(
    closure: Closure | str, rate: RateModel | str, L0: Any, target: Any
) -> np.ndarray:
    """T(L_tgt) = Phi^{-1}(G(L0) - G(L_tgt)) on the rate's time axis.

    0 where the target is at or above L0; inf where it lies at or below the budget floor
    (or below the closure's floor) — it is never reached. Vectorised over L0, target and
    array rate parameters.
    """
    closure, rate = get_closure(closure), get_rate(rate)
    L0 = _L0(closure, L0)
    tgt = check_finite_array("target", target)
    return _hit_time(closure, rate, L0, tgt, 0.0)


def steps_to_target(
    closure: Closure | str,
    rate: RateModel | str,
    L0: Any,
    target: Any,
    schedule: Schedule | None = None,
) -> np.ndarray:
    """The smallest number of optimizer steps N with S(N) = sum_{k<N} eta_k >= T(L_tgt).

    For a rate in intrinsic time the schedule converts time to steps (constant eta:
    N = ceil(T / eta)); for a step-time rate (:class:`~lossrate.rates.ScheduleRate`)
    N = ceil(T) and ``schedule`` is not needed. inf where the target is not reached
    within the schedule (or never). Returned as floats so that inf can be represented.
    """
    rate = get_rate(rate)
    T = np.asarray(time_to_target(closure, rate, L0, target), dtype=float)
    if getattr(rate, "time_axis", "intrinsic") == "step":
        return np.where(np.isfinite(T), np.ceil(T - 1e-9), np.inf)[()]
    if not isinstance(schedule, Schedule):
        raise InvalidArgumentError(
            "schedule is required for a rate in intrinsic time: pass the run's "
            "lossrate.Schedule (e.g. Schedule.constant(eta, n_steps))."
        )
    cum = schedule.cumulative
    # T within round-off of a step boundary counts as reached there
    N = np.searchsorted(cum, np.where(np.isfinite(T), T * (1 - 1e-12), 0.0), side="left")
    return np.where(np.isfinite(T) & (T <= cum[-1] * (1 + 1e-12)), N.astype(float), np.inf)[()]


@dataclass(frozen=True, eq=False)
class EnergyEstimate:
    """Energy to reach a target loss.

    Attributes:
        target: the target loss.
        steps: optimizer steps needed (inf: not reached).
        energy_j: joules for those steps (inf: not reached).
        intrinsic_time: T(L_tgt) on the rate's axis.
        source: where the energy-per-step figure comes from.
        notes: assumptions made (e.g. extrapolation beyond logged steps).
    """

    target: float
    steps: float
    energy_j: float
    intrinsic_time: float
    source: str
    notes: tuple[str, ...] = ()

    def report(self) -> str:
        """One line with the steps and energy, then the source and notes."""
        if not np.isfinite(self.steps):
            head = f"L = {self.target:.6g} is not reached (below the floor or beyond the schedule)"
        else:
            head = (
                f"L = {self.target:.6g}: {int(self.steps)} steps, {self.energy_j:.6g} J "
                f"({self.energy_j / 3.6e6:.4g} kWh)"
            )
        return "\n".join(
            [head, f"energy per step from: {self.source}", *(f"note: {n}" for n in self.notes)]
        )


def _per_step_energy(energy: Any) -> tuple[np.ndarray | float, str, tuple[str, ...]]:
    if isinstance(energy, Trajectory):
        if energy.energy_j is None or not np.isfinite(energy.energy_j).any():
            raise InvalidArgumentError(
                "energy_per_step: the trajectory has no measured 'energy_j' column; log energy "
                "(lossrate.energy) or pass joules per step as a number."
            )
        col = energy.energy_j
        src = energy.meta.energy_source or "unknown meter"
        name = energy.meta.name or "trajectory"
        ok = np.isfinite(col)
        steps = energy.step
        if ok.all() and np.array_equal(steps, np.arange(steps.size)):
            return col.astype(float), f"{name}: column energy_j per step ({src})", ()
        mean = float(np.mean(col[ok]))
        return (
            mean,
            f"{name}: mean of {int(ok.sum())} logged energy_j values ({src})",
            (
                "energy was not logged at every step; the mean per logged step is used for all steps",
            ),
        )
    arr = np.asarray(energy, dtype=float)
    if arr.ndim == 0:
        e = check_positive("energy_per_step", energy)
        return e, f"constant {e:.6g} J per step (given)", ()
    arr = check_finite_array("energy_per_step", arr, ndim=1)
    if arr.size == 0 or (arr < 0).any():
        raise InvalidArgumentError("energy_per_step must hold joules >= 0 for each step.")
    return arr, f"per-step array of {arr.size} values (given)", ()


def energy_to_target(
    closure: Closure | str,
    rate: RateModel | str,
    L0: float,
    target: float,
    schedule: Schedule | None = None,
    *,
    energy_per_step: Any,
) -> EnergyEstimate:
    """E = sum_{k<N} e_k with N = :func:`steps_to_target` (theory §5.2).

    ``energy_per_step`` is joules per step as a number (e.g. mean power x seconds per
    step, or FLOPs per step / FLOP-per-joule), a per-step array, or a
    :class:`~lossrate.Trajectory` with an ``energy_j`` column. Beyond the end of a per-step
    array the mean of its values is used (stated in ``notes``).
    """
    L0 = check_positive("L0", L0)
    target = float(check_finite_array("target", target))
    e, source, notes = _per_step_energy(energy_per_step)
    T = float(time_to_target(closure, rate, L0, target))
    N = float(steps_to_target(closure, rate, L0, target, schedule))
    if not np.isfinite(N):
        return EnergyEstimate(target, np.inf, np.inf, T, source, notes)
    n = int(N)
    if isinstance(e, float):
        E = e * n
    else:
        E = float(e[:n].sum())
        if n > e.size:
            E += float(e.mean()) * (n - e.size)
            notes = (*notes, f"{n - e.size} steps beyond the {e.size} given use their mean energy")
    return EnergyEstimate(target, N, E, T, source, notes)


def certified_lower_bound(
    closure: Closure | str,
    phi_hi: RateModel | float,
    L0: float,
    t: Any,
    *,
    sigma: Any = None,
    gd_lr: float | None = None,
    rtol: float = 1e-10,
    margin: float = 1e-7,
) -> Solution:
    """Lambda(t) <= L(t): the speed-limit curve (theory §1.4, §5.1).

    Continuous (default): dLambda/dt = -phi_hi(t) g_hi(Lambda), Lambda(0) = L0, where
    g_hi is ``closure.bracket(L, sigma)[1]`` with a measured ``sigma`` and the sigma-free
    ``closure.upper`` without. By the comparison lemma, gradient flow with
    ||grad L||^2 <= phi_hi g_hi(L) stays above Lambda. ``phi_hi`` is a rate or a number
    (eta K^2 in step time, K^2 in intrinsic time). The curve is lowered by a relative
    ``margin`` on top of the integration tolerance ``rtol``, so that it stays a bound.

    Discrete (``gd_lr`` = eta, t = whole step counts): Lambda_{k+1} = Lambda_k - eta
    phi_hi g_hi(Lambda_k), a lower bound for full-batch GD on a convex loss, since
    L_{k+1} >= L_k - eta ||grad L_k||^2 and x -> x - eta phi_hi g_hi(x) is non-decreasing
    when eta phi_hi sup g_hi' <= 1 (checked; an error otherwise). ``phi_hi`` must then be
    a number (K^2). This sequence lies below the continuous curve.

    Raises:
        InvalidArgumentError: a closure without ``upper``/``bracket``, bad inputs, or a
            step size too large for the discrete bound.
    """
    closure = get_closure(closure)
    if gd_lr is None:
        rate = (
            phi_hi if isinstance(phi_hi, RateModel) else Constant(check_positive("phi_hi", phi_hi))
        )
        sol = solve_ode(closure, rate, L0, t, sigma=sigma, bracket="hi", rtol=rtol)
        if not sol.success:
            return sol
        lowered = sol.loss * (1.0 - margin - 10.0 * rtol)
        return Solution(
            sol.t,
            lowered,
            sol.status,
            f"certified lower bound (g_hi, phi_hi), lowered by {margin + 10 * rtol:g} relative; "
            + sol.message,
            sol.hit_times,
            sol.method,
        )
    eta = check_positive("gd_lr", gd_lr)
    if isinstance(phi_hi, RateModel):
        raise InvalidArgumentError(
            "phi_hi must be a number (K^2) for the discrete GD bound (gd_lr)."
        )
    k2 = check_positive("phi_hi", phi_hi)
    L0 = check_positive("L0", L0)
    steps = check_finite_array("t", t, ndim=1)
    if (steps < 0).any() or (steps != np.round(steps)).any() or (np.diff(steps) < 0).any():
        raise InvalidArgumentError(
            "t must hold sorted whole step counts >= 0 for the discrete bound (gd_lr)."
        )
    if sigma is not None:
        raise InvalidArgumentError(
            "sigma is not supported with gd_lr; use the sigma-free upper bound."
        )
    grid = np.linspace(0.0, L0, 2001)[1:]
    slope = np.max(np.abs(np.diff(closure.upper(grid)) / np.diff(grid)))
    if eta * k2 * slope > 1.0 + 1e-12:
        raise InvalidArgumentError(
            f"gd_lr * phi_hi * sup g_hi' = {eta * k2 * slope:.4g} > 1: the GD comparison map is not "
            "monotone, so the discrete bound does not hold; use a smaller gd_lr."
        )
    n = int(steps[-1]) if steps.size else 0
    lam = np.empty(n + 1)
    lam[0] = L0
    for k in range(n):
        lam[k + 1] = max(lam[k] - eta * k2 * float(closure.upper(lam[k])), 0.0)
    return Solution(
        steps,
        lam[steps.astype(np.int64)],
        "success",
        f"certified lower bound for GD with lr {eta:g} (discrete comparison sequence)",
        {},
        "discrete",
    )
