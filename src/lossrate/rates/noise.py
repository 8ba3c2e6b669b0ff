"""The SGD-noise term (theory F3 and §4.6), for the direct ODE and in closed form.

**General form** (any closure; integrated by :func:`lossrate.solve.solve_ode`). In
intrinsic time S = sum of learning rates,

    dL/dS = -phi(S) g(L) + c eta(S)^p phi(S)^gamma h(L),

with eta(S) the learning rate of the optimizer step that contains intrinsic time S
(taken from a :class:`~lossrate.schedule.Schedule`) and

* ``form="additive"``:       h = 1          (theory F3: c = nu / (2B), p = 1, gamma = 0);
* ``form="multiplicative"``: h = L - floor  (theory §4.6: gamma = 1 there).

``gamma = 0`` (the default) is the plain F3 term c eta^p h(L). When the rate lives in
step time (``time_axis == "step"``, e.g. :class:`~lossrate.rates.schedule.ScheduleRate`),
the same term is carried over with dS/ds = eta: dL/ds = -phi g + eta c eta^p rho^gamma h
with rho = phi / eta the rate per unit of intrinsic time.

At constant eta the additive term gives the equilibrium g(L_eq) = c eta^p phi^(gamma-1):
it falls when eta falls, the lr-decay loss drop that gradient flow alone lacks.

**Closed form for the power closure** (:func:`solve_power_noise`). With
g = a x^k, x = L - floor, rho(S) = rho0 (1 + S/S0)^(-beta) and the multiplicative term,

    dx/dS = -a rho x^k + c eta^p rho^gamma x.

Bernoulli's u = x^(1-k) makes it linear, du/dS = (k-1) [a rho - c eta^p rho^gamma u].
We integrate w = (u - 1)/(k - 1), which obeys

    dw/dS = (a rho - b) - (k - 1) b w,     b = c eta^p rho^gamma,

and is smooth through k = 1 (where w = -ln x): x = exp(-w log1p((k-1)w)/((k-1)w)).
Over optimizer step j eta is constant; with the exact integrals
dR_j = int rho dS and dQ_j = int rho^gamma dS over the step (closed form: rho^gamma is a
power law too), the step map is the exact solution with step-averaged coefficients:

    w_{j+1} = exp(-e_j) w_j + m_j,   b_j = c eta_j^p dQ_j,   e_j = (k-1) b_j,
    m_j = (a dR_j - b_j) (1 - exp(-e_j)) / e_j.

For gamma = 1 both coefficients are multiples of rho, so with r = R(S) as the clock the
step map is *exact*; for c = 0 it is exact for any gamma; otherwise its error is second
order in the variation of rho over one step. The recurrence is summed in closed form with
cumulative sums, w_n = exp(-E_n) [w_0 + sum_{j<n} m_j exp(E_{j+1})], E_n = sum_{j<n} e_j,
in blocks within which E grows by less than 600, so exp never overflows: O(steps),
vectorised over parameter arrays (shape (m, 1) parameters give (m, steps) curves), no ODE
solver and no Python loop over steps. The equilibrium at constant eta and rho is
x_eq = (c eta^p rho^(gamma-1) / a)^(1/(k-1)) (gamma = 1: (c eta^p / a)^(1/(k-1))).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._errors import InvalidArgumentError, check_choice
from ..closures.base import Closure
from ..schedule import Schedule
from ._params import expm1_over, log1p_over, param
from .base import RateModel
from .power_law import PowerLaw
from .schedule import ScheduleRate

__all__ = ["SGDNoise", "power_noise_equilibrium", "power_noise_path", "solve_power_noise"]

_FORMS = ("additive", "multiplicative")
#: cap of one step's decay exponent (exp(-300) ~ 5e-131: older memory is irrelevant)
_EMAX = 300.0
#: a block of steps spans less than 2 * _BLOCK of decay exponent, so exp(E) < e^600
_BLOCK = 300.0


@dataclass(frozen=True, eq=False)
class SGDNoise:
    """The noise term c eta^p phi^gamma h(L) of dL/dS (see the module docstring).

    Attributes:
        c: strength >= 0 (float or array broadcasting like rate parameters).
        p: exponent of the learning rate (1 in theory F3; fitted runs suggest ~0.25).
        gamma: exponent of the rate phi (0: plain F3; 1: the §4.6 form).
        form: "additive" (h = 1) or "multiplicative" (h = L - floor).
        schedule: the learning rates; None takes the schedule of a
            :class:`ScheduleRate` when one is used.
    """

    c: Any
    p: Any = 1.0
    gamma: Any = 0.0
    form: str = "additive"
    schedule: Schedule | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "c", param("noise", "c", self.c, nonnegative=True))
        object.__setattr__(self, "p", param("noise", "p", self.p))
        object.__setattr__(self, "gamma", param("noise", "gamma", self.gamma))
        check_choice("form", self.form, _FORMS)
        if self.schedule is not None and not isinstance(self.schedule, Schedule):
            raise InvalidArgumentError(
                f"noise: schedule must be a lossrate.Schedule or None, got {type(self.schedule).__name__}."
            )

    def schedule_for(self, rate: RateModel) -> Schedule:
        """The schedule that gives eta: this term's own, else the rate's."""
        if self.schedule is not None:
            return self.schedule
        if isinstance(rate, ScheduleRate):
            return rate.schedule
        raise InvalidArgumentError(
            "noise: the noise term needs the learning rates; pass SGDNoise(..., schedule=...) "
            "or use a ScheduleRate."
        )

    def drift(self, t: Any, L: Any, floor: float, rate: RateModel) -> np.ndarray:
        """The noise term's contribution to dL/dt on the rate's own time axis at (t, L)."""
        t = np.asarray(t, dtype=float)
        sched = self.schedule_for(rate)
        step_axis = getattr(rate, "time_axis", "intrinsic") == "step"
        if step_axis:
            eta = sched.lr[np.clip(np.floor(t).astype(np.int64), 0, sched.n_steps - 1)]
        else:
            eta = eta_at_intrinsic(sched, t)
        h = 1.0 if self.form == "additive" else np.asarray(L, dtype=float) - floor
        term = self.c * eta**self.p * h
        if np.any(np.asarray(self.gamma) != 0):
            phi = rate.phi(t)
            if step_axis:
                with np.errstate(divide="ignore", invalid="ignore"):
                    phi = np.where(eta > 0, phi / np.where(eta > 0, eta, 1.0), 0.0)
            term = term * phi**self.gamma
        return term * eta if step_axis else term


def eta_at_intrinsic(schedule: Schedule, S: Any) -> np.ndarray:
    """The learning rate of the step k with S_k <= S < S_{k+1} (the last step at the end)."""
    S = np.asarray(S, dtype=float)
    cum = schedule.cumulative
    if S.size and (S.min() < 0 or S.max() > cum[-1] * (1 + 1e-12)):
        raise InvalidArgumentError(
            f"intrinsic time spans [{S.min()!r}, {S.max()!r}] but the schedule covers [0, {cum[-1]!r}]; "
            "extend the schedule (Schedule.extend) to cover the whole time range."
        )
    k = np.clip(np.searchsorted(cum, S, side="right") - 1, 0, schedule.n_steps - 1)
    return schedule.lr[k]


def _linear_recurrence(decay: np.ndarray, drive: np.ndarray, w0: np.ndarray) -> np.ndarray:
    """w_{j+1} = exp(-decay_j) w_j + drive_j along the last axis (decay >= 0): w_1 .. w_n.

    Closed form by cumulative sums in blocks within which the summed decay stays below
    2 * _BLOCK, so exp(E) stays finite; the block loop runs (total decay / _BLOCK) times.
    """
    decay = np.minimum(decay, _EMAX)
    n = decay.shape[-1]
    worst = decay.reshape(-1, n).max(axis=0) if decay.ndim > 1 else decay
    if worst.sum() < _BLOCK:
        edges = [0, n]
    else:
        M = np.cumsum(worst)
        block = np.floor((M - worst) / _BLOCK)  # block id from the decay before step j
        edges = [0, *(np.flatnonzero(np.diff(block)) + 1).tolist(), n]
    out = np.empty(np.broadcast_shapes(decay.shape, drive.shape, (*w0.shape[:-1], n)))
    ws = w0
    for lo, hi in itertools.pairwise(edges):
        E = np.cumsum(decay[..., lo:hi], axis=-1)
        grow = np.exp(E)
        acc = np.cumsum(drive[..., lo:hi] * grow, axis=-1)
        out[..., lo:hi] = (ws + acc) / grow
        ws = out[..., hi - 1 : hi]
    return out


def power_noise_path(
    lr: np.ndarray | Schedule,
    *,
    L0: Any,
    k: Any,
    a: Any,
    rho0: Any,
    S0: Any,
    beta: Any,
    c: Any,
    p: Any = 1.0,
    gamma: Any = 1.0,
    floor: Any = 0.0,
    steps: Any = None,
) -> np.ndarray:
    """Loss at step boundaries of dx/dS = -a rho x^k + c eta^p rho^gamma x, x = L - floor.

    The array core of :func:`solve_power_noise`, without its checks (fitters call it in
    their inner loop). ``lr`` holds the n per-step learning rates. Every other argument
    broadcasts against the step axis with numpy rules, as rate parameters do: scalars give
    one curve, shape (m, 1) gives m curves. ``steps`` (default 0..n) picks step
    boundaries; the result has shape broadcast(arguments, (len(steps),)). Needs k >= 1,
    c >= 0 and L0 > floor (unchecked here).
    """
    if isinstance(lr, Schedule):
        lr, S = lr.lr, lr.cumulative
    else:
        lr = np.asarray(lr, dtype=float)
        S = np.concatenate([[0.0], np.cumsum(lr)])
    dR = np.diff(PowerLaw(rho0, S0, beta).Phi(S), axis=-1)
    gamma = np.asarray(gamma, dtype=float)
    if np.all(gamma == 1.0):
        dQ = dR
    else:
        rho_g = PowerLaw(np.asarray(rho0, dtype=float) ** gamma, S0, np.asarray(beta) * gamma)
        dQ = np.diff(rho_g.Phi(S), axis=-1)
    p = np.asarray(p, dtype=float)
    eta_p = lr if np.all(p == 1.0) else lr**p
    km1 = np.asarray(k, dtype=float) - 1.0
    b = c * eta_p * dQ
    e = km1 * b
    drive = (a * dR - b) * expm1_over(-e)
    lnx0 = np.log(np.asarray(L0, dtype=float) - floor)
    w0 = -lnx0 * expm1_over(-km1 * lnx0)
    w0 = w0.reshape(w0.shape or (1,))
    w_steps = _linear_recurrence(e, drive, w0)
    w = np.concatenate([np.broadcast_to(w0, (*w_steps.shape[:-1], 1)), w_steps], axis=-1)
    if steps is not None:
        w = w[..., np.asarray(steps, dtype=np.int64)]
    return floor + np.exp(-w * log1p_over(km1 * w))


def solve_power_noise(
    closure: Closure, rate: ScheduleRate, noise: SGDNoise, L0: Any, steps: Any = None
) -> np.ndarray:
    """The loss at optimizer-step boundaries under the power closure with multiplicative noise.

    Solves dx/dS = -a rho(S) x^k + c eta^p rho(S)^gamma x exactly per step (see the module
    docstring), with g = a x^k from ``closure`` (:class:`~lossrate.closures.PowerFloor`,
    k >= 1), rho and the schedule from ``rate`` and (c, p, gamma) from ``noise``
    (``form="multiplicative"``). ``L0`` and the parameters broadcast as for rates: shape
    (m, 1) gives m curves. ``steps`` (whole numbers in [0, n_steps]; default all n + 1
    boundaries) picks where the loss is returned.

    Raises:
        InvalidArgumentError: a closure other than the power family, k < 1, an additive
            noise term, a noise schedule differing from the rate's, L0 <= floor, or
            steps outside the schedule.
    """
    from ..closures.power import PowerFloor

    if not isinstance(closure, PowerFloor):
        raise InvalidArgumentError(
            f"closure: the closed-form noise solver needs the power closure (get_closure('power', "
            f"c=..., k=..., floor=...)), got {type(closure).__name__}; use solve_ode otherwise."
        )
    if closure.k < 1:
        raise InvalidArgumentError(
            f"closure: k={closure.k!r} < 1 hits the floor in finite time; the closed-form noise "
            "solver needs k >= 1. Use solve_ode(..., noise=...) instead."
        )
    if not isinstance(rate, ScheduleRate):
        raise InvalidArgumentError(
            f"rate must be a ScheduleRate (eta(s) rho(S)), got {type(rate).__name__}."
        )
    if not isinstance(noise, SGDNoise) or noise.form != "multiplicative":
        raise InvalidArgumentError(
            "noise must be SGDNoise(c, p, gamma, form='multiplicative') for the closed form; "
            "an additive term needs solve_ode."
        )
    sched = rate.schedule
    if noise.schedule is not None and not np.array_equal(noise.schedule.lr, sched.lr):
        raise InvalidArgumentError(
            "noise.schedule differs from rate.schedule; leave noise.schedule=None to use the rate's."
        )
    L0 = np.asarray(L0, dtype=float)
    if not np.isfinite(L0).all() or (L0 <= closure.floor).any():
        raise InvalidArgumentError(
            f"L0 must be finite and above the closure's floor {closure.floor!r}, got {L0!r}."
        )
    if steps is not None:
        s = np.asarray(steps)
        if s.ndim != 1 or (s != np.round(s)).any() or (s < 0).any() or (s > sched.n_steps).any():
            raise InvalidArgumentError(
                f"steps must be a 1-D array of whole steps in [0, {sched.n_steps}], got {steps!r}."
            )
    return power_noise_path(
        sched,
        L0=L0,
        k=closure.k,
        a=closure.c,
        rho0=rate.rho0,
        S0=rate.S0,
        beta=rate.beta,
        c=noise.c,
        p=noise.p,
        gamma=noise.gamma,
        floor=closure.floor,
        steps=steps,
    )


def power_noise_equilibrium(
    closure: Closure, noise: SGDNoise, eta: Any, rho: Any = 1.0
) -> np.ndarray:
    """L_eq = floor + (c eta^p rho^(gamma-1) / a)^(1/(k-1)): where -a rho x^k + c eta^p rho^gamma x
    vanishes, for the power closure g = a x^k (k > 1) and constant eta and rho."""
    k = getattr(closure, "k", None)
    if k is None or k <= 1:
        raise InvalidArgumentError(
            "closure: the equilibrium needs the power closure with k > 1 (at k <= 1 x decays to 0 "
            "or grows without bound)."
        )
    ratio = (
        noise.c
        * np.asarray(eta, dtype=float) ** noise.p
        * np.asarray(rho, dtype=float) ** (noise.gamma - 1.0)
        / closure.c
    )  # type: ignore[attr-defined]
    return closure.floor + ratio ** (1.0 / (k - 1.0))
