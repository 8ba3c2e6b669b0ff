"""Forward solutions of dL/dt = -phi(t) g(L, sigma_L) (theory §3, §4.4).

* :func:`solve` — the reparametrised solution

      G(L(t)) = G(L0) - [Phi(t) - Phi(t0)],   L(t) = G^{-1}(G(L0) - Phi(t) + Phi(t0)),

  closed form, vectorised: rate parameters and ``L0`` broadcast against ``t`` with numpy
  rules (shape (m, 1) with t of shape (T,) gives m curves of shape (m, T)).
* :func:`solve_ode` — direct integration with :func:`scipy.integrate.solve_ivp`, needed
  when g depends on a measured sigma_L(t) (second-order closure or bracket) or when an
  SGD-noise term is added. It integrates u = ln(L - floor), so the floor is never
  crossed and tails keep their relative accuracy, with events for hitting times.

Time is the rate's own axis: intrinsic time (sum of learning rates) for most rates, optimizer
steps for :class:`~lossrate.rates.ScheduleRate` (``rate.time_axis``). ``L0`` is the loss at
time ``t0`` (default 0).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.integrate import solve_ivp
from scipy.interpolate import PchipInterpolator

from ._errors import InvalidArgumentError, check_choice, check_finite_array, check_positive
from .closures.base import Closure, get_closure
from .rates.base import RateModel, get_rate
from .rates.measured import MeasuredRate
from .rates.noise import SGDNoise

__all__ = ["Solution", "solve", "solve_ode"]

STATUSES = ("success", "floor_reached", "failed")
#: relative time resolution: solve_ode stops (and clamps to the floor) when ln(L - floor)
#: would fall by 1 within _T_RES * max(1, |t|), i.e. at a finite-time hit of the floor
_T_RES = 1e-12
#: values per block of the vectorised solve, and its worker threads
_BLOCK_VALUES = 2**17
_WORKERS = max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2))
#: below L - floor = _SWITCH * floor, solve_ode integrates L - floor instead of its log
_SWITCH = 1e-6


@dataclass(frozen=True, eq=False)
class Solution:
    """Loss curves at the requested times.

    Attributes:
        t: the times (the rate's axis), shape (T,).
        loss: the loss, shape (T,) for one curve or batch + (T,) for many.
        status: "success"; "floor_reached" (the floor was hit in finite time, the loss is
            clamped there from then on); or "failed" (see ``message``).
        message: what happened; for a failure, how to fix it.
        hit_times: first time the loss reaches each requested target (inf: not by t[-1]
            for :func:`solve_ode`, never for :func:`solve`); when the floor is reached,
            its hitting time under the key ``floor``.
        method: "reparametrised" or the solve_ivp method used.
    """

    t: np.ndarray
    loss: np.ndarray
    status: str
    message: str
    hit_times: Mapping[float, Any] = field(default_factory=dict)
    method: str = "reparametrised"

    def __post_init__(self) -> None:
        check_choice("status", self.status, STATUSES)

    @property
    def success(self) -> bool:
        """True unless the solve failed (reaching the floor is a success)."""
        return self.status != "failed"

    def report(self) -> str:
        """A short plain-text summary: status, curves, final losses, hitting times."""
        loss = np.asarray(self.loss)
        curves = int(np.prod(loss.shape[:-1])) if loss.ndim > 1 else 1
        last = loss[..., -1]
        lines = [
            f"{self.status} ({self.method}): {self.message}",
            f"{curves} curve(s), {self.t.size} times in [{self.t[0]:.6g}, {self.t[-1]:.6g}]",
            f"final loss: {np.nanmin(last):.6g}"
            + ("" if curves == 1 else f" .. {np.nanmax(last):.6g}"),
        ]
        for target, when in self.hit_times.items():
            w = np.asarray(when)
            shown = (
                f"{float(w):.6g}" if w.ndim == 0 else f"{np.nanmin(w):.6g} .. {np.nanmax(w):.6g}"
            )
            lines.append(f"hits L = {target:.6g} at t = {shown}")
        return "\n".join(lines)


# ------------------------------------------------------------------ checks
def _times(t: Any, t0: float) -> np.ndarray:
    arr = check_finite_array("t", t)
    if arr.ndim != 1 or arr.size == 0:
        raise InvalidArgumentError(
            f"t must be a non-empty 1-D array of times, got shape {arr.shape}; pass e.g. "
            "np.linspace(0, T, 200)."
        )
    if (np.diff(arr) < 0).any():
        i = int(np.flatnonzero(np.diff(arr) < 0)[0]) + 1
        raise InvalidArgumentError(
            f"t must be sorted (non-decreasing), but t[{i}]={arr[i]!r} follows {arr[i - 1]!r}; "
            "sort it first."
        )
    if arr[0] < t0:
        raise InvalidArgumentError(
            f"t must start at or after t0={t0!r} (the time of L0), got t[0]={arr[0]!r}; "
            "times must be >= 0 (and >= t0)."
        )
    return arr


def _inputs(
    closure: Any, rate: Any, L0: Any, t: Any, t0: Any
) -> tuple[Closure, RateModel, np.ndarray, np.ndarray, float]:
    closure = get_closure(closure)
    rate = get_rate(rate)
    t0 = check_positive("t0", t0, allow_zero=True)
    t = _times(t, t0)
    L0 = check_finite_array("L0", L0)
    floor = closure.floor
    if (L0 <= floor).any():
        raise InvalidArgumentError(
            f"L0 must lie above the closure's floor {floor!r}, got min L0 = {L0.min()!r}; "
            "a curve starting at or below its floor does not move."
        )
    return closure, rate, L0, t, t0


def _hit_time(closure: Closure, rate: RateModel, L0: Any, target: Any, t0: float) -> np.ndarray:
    """First time L(t) <= target under the reparametrised solution (inf: never), vectorised."""
    target = np.asarray(target, dtype=float)
    L0 = np.asarray(L0, dtype=float)
    fl = closure.floor
    never = (target < fl) | ((target == fl) & (not np.isfinite(closure.G_at_floor)))
    tgt = np.where(never, L0, np.maximum(target, fl))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        need = closure.G(L0) - closure.G(tgt) + rate.Phi(t0)
        when = rate.Phi_inv(np.maximum(need, 0.0))
    return np.where(never, np.inf, np.where(L0 <= target, t0, when))[()]


# ---------------------------------------------------------------- solvers
def solve(
    closure: Closure | str,
    rate: RateModel | str,
    L0: Any,
    t: Any,
    *,
    t0: float = 0.0,
    targets: Sequence[float] = (),
) -> Solution:
    """L(t) = G^{-1}(G(L0) - Phi(t) + Phi(t0)) for many curves at once.

    Args:
        closure: a :class:`~lossrate.closures.Closure` (or registered name).
        rate: a :class:`~lossrate.rates.RateModel` (or registered name); its parameters may be
            arrays that broadcast against ``t`` (shape (m, 1) -> m curves).
        L0: loss at time ``t0``, above the closure's floor; broadcasts like the parameters.
        t: sorted times >= t0, on the rate's time axis.
        t0: time of ``L0`` (default 0).
        targets: losses whose hitting times go into ``Solution.hit_times`` (exact, from
            Phi^{-1}; inf where never reached).

    Returns:
        A :class:`Solution`, ``loss`` of shape broadcast(L0, parameters, t).

    Raises:
        InvalidArgumentError: L0 not above the floor, t unsorted, negative or below t0,
            non-finite values, or shapes that do not broadcast.
    """
    closure, rate, L0, t, t0 = _inputs(closure, rate, L0, t, t0)
    G0, P0 = closure.G(L0), rate.Phi(t0)
    try:
        shape = np.broadcast_shapes(
            np.shape(G0), np.shape(P0), (*np.shape(rate.Phi(t[:1]))[:-1], t.size)
        )
    except ValueError as exc:
        raise InvalidArgumentError(
            f"L0 of shape {L0.shape} does not broadcast against the rate's curves: {exc}. "
            "Give L0 the parameters' shape, e.g. (m, 1)."
        ) from None
    loss = np.empty(shape)
    hit_floor = np.zeros(1, dtype=bool)  # set by any block in which y <= G(floor)
    G_floor = closure.G_at_floor

    def block(lo: int, hi: int) -> None:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            y = G0 - (rate.Phi(t[lo:hi]) - P0)
            loss[..., lo:hi] = closure.G_inv(y)
            if np.isfinite(G_floor) and (y <= G_floor).any():
                hit_floor[0] = True

    # blocks of ~_BLOCK_VALUES values stay in cache; threads share them (numpy and
    # scipy.special release the GIL inside their loops)
    curves = max(1, int(np.prod(shape[:-1])))
    width = max(1, _BLOCK_VALUES // curves)
    edges = [*range(0, t.size, width), t.size]
    if len(edges) > 2 and curves * t.size > 4 * _BLOCK_VALUES:
        with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
            list(pool.map(block, edges[:-1], edges[1:]))
    else:
        for lo, hi in itertools.pairwise(edges):
            block(lo, hi)
    hits: dict[float, Any] = {float(x): _hit_time(closure, rate, L0, float(x), t0) for x in targets}
    if not np.isfinite(loss).all():
        return Solution(
            t,
            loss,
            "failed",
            "the solution is not finite somewhere: check that L0 and the rate parameters are in "
            "range (Phi(t) finite), or use solve_ode.",
            hits,
        )
    if hit_floor[0]:
        hits[closure.floor] = _hit_time(closure, rate, L0, closure.floor, t0)
        return Solution(
            t,
            loss,
            "floor_reached",
            f"the loss reaches its floor {closure.floor!r} in finite time and stays there "
            "(see hit_times).",
            hits,
        )
    return Solution(t, loss, "success", "closed-form solution", hits)


def _series(
    name: str, value: Any, t_lo: float, t_hi: float
) -> tuple[Callable[[float], float], float]:
    """A callable of time from a callable or a (t_grid, values) pair, and its grid spacing."""
    if value is None:
        return (lambda _t: 0.0), np.inf
    if callable(value):
        return (lambda s: float(value(s))), np.inf
    try:
        grid, vals = value
    except (TypeError, ValueError):
        raise InvalidArgumentError(
            f"{name} must be a callable of t or a (t_grid, values) pair, got {type(value).__name__}."
        ) from None
    grid = check_finite_array(f"{name} t_grid", grid, ndim=1)
    vals = check_finite_array(f"{name} values", vals, ndim=1)
    if grid.shape != vals.shape or grid.size < 2 or (np.diff(grid) <= 0).any() or (vals < 0).any():
        raise InvalidArgumentError(
            f"{name}: t_grid must be strictly increasing with one value >= 0 per time (at least 2)."
        )
    if grid[0] > t_lo or grid[-1] < t_hi:
        raise InvalidArgumentError(
            f"{name} is given on [{grid[0]!r}, {grid[-1]!r}] but the solve spans [{t_lo!r}, {t_hi!r}]; "
            "give it on the whole range."
        )
    f = PchipInterpolator(grid, vals, extrapolate=False)
    return (lambda s: float(f(s))), float(np.diff(grid).min())


def _scalar_model(closure: Closure, rate: RateModel, L0: np.ndarray, t: np.ndarray) -> None:
    if L0.size != 1 or np.shape(rate.Phi(t[:1])) not in ((1,), ()):
        raise InvalidArgumentError(
            "solve_ode integrates one curve: L0 and the rate parameters must be scalars. "
            "Loop over curves, or use solve() for many curves at once."
        )


def solve_ode(
    closure: Closure | str,
    rate: RateModel | str,
    L0: float,
    t: Any,
    *,
    t0: float = 0.0,
    sigma: Callable[[float], float] | tuple[Any, Any] | None = None,
    loss_max: Callable[[float], float] | tuple[Any, Any] | None = None,
    order: int = 2,
    bracket: str | None = None,
    noise: SGDNoise | None = None,
    method: str = "LSODA",
    rtol: float = 1e-8,
    atol: float | None = None,
    max_step: float | None = None,
    targets: Sequence[float] = (),
) -> Solution:
    """Integrate dL/dt = -phi(t) gamma(t, L) + n(t, L) for one curve with solve_ivp.

    The right-hand side:

    * gamma = g(L) (mean field) when ``sigma`` is None and ``bracket`` is None;
    * gamma = g2(L, sigma(t)) = g + g'' sigma^2 / 2 with ``sigma`` and ``order=2``
      (``order=1``: mean-field g, sigma ignored);
    * gamma = g_lo or g_hi of ``closure.bracket(L, sigma(t), loss_max(t))`` with
      ``bracket='lo'``/``'hi'`` ('hi' without sigma: the sigma-free ``closure.upper``).
      A bracket bounds R itself, which vanishes only at L = 0, so then the floor is 0.
    * n = ``noise.drift(t, L, floor, rate)`` when an :class:`SGDNoise` is given.

    The state is u = ln(L - floor): du/dt = [-phi gamma + n] / (L - floor), so L never
    crosses the floor. When L - floor falls below 1e-250 (a finite-time hit: MAE,
    power k < 1, sigma-driven closures) a terminal event stops the integration and the
    loss is clamped to the floor (status "floor_reached"). Targets are located by events.

    Args:
        closure, rate, L0, t, t0: as for :func:`solve`, one curve (scalar parameters).
        sigma, loss_max: population std / largest per-sample loss of the batch, as a
            callable of t or a (t_grid, values) pair (PCHIP-interpolated, no overshoot).
        order: 1 or 2, the closure order used with ``sigma``.
        bracket: None, "lo" or "hi".
        noise: an optional SGD-noise term.
        method: "LSODA" (default, automatic stiffness switching), "Radau" or "BDF"
            (implicit, with the analytic Jacobian for mean-field g), or "DOP853"/"RK45".
        rtol: relative tolerance of solve_ivp (on u; the error of L is relative).
        atol: absolute tolerance on u = ln(L - floor), i.e. relative on L - floor
            (default: ``rtol``).
        max_step: largest step; by default no larger than the spacing of data-driven
            inputs (a measured rate's grid, sigma's grid, one optimizer step for step-time
            rates, the smallest lr for noise in intrinsic time).
        targets: losses whose first hitting times go into ``hit_times`` (inf: not by t[-1]).

    Raises:
        InvalidArgumentError: bad inputs (named), non-scalar parameters, an unknown method.
    """
    closure, rate, L0a, t, t0 = _inputs(closure, rate, L0, t, t0)
    _scalar_model(closure, rate, L0a, t)
    x0_loss = float(L0a.ravel()[0])
    method = check_choice("method", method, ("LSODA", "Radau", "BDF", "DOP853", "RK45"))
    rtol = check_positive("rtol", rtol)
    atol = rtol if atol is None else check_positive("atol", atol)
    if order not in (1, 2):
        raise InvalidArgumentError(
            f"order must be 1 (mean field) or 2 (g2 with sigma), got {order!r}."
        )
    if bracket is not None:
        check_choice("bracket", bracket, ("lo", "hi"))
        if bracket == "lo" and sigma is None:
            raise InvalidArgumentError(
                "bracket='lo' needs sigma (the lower bracket depends on the batch spread); "
                "pass sigma=(t_grid, values) or a callable."
            )
    if noise is not None and not isinstance(noise, SGDNoise):
        raise InvalidArgumentError(
            f"noise must be an SGDNoise or None, got {type(noise).__name__}."
        )

    t_end = float(t[-1])
    sig, sig_dt = _series("sigma", sigma, t0, t_end)
    lmax, lmax_dt = _series("loss_max", loss_max, t0, t_end)
    spacing = min(sig_dt, lmax_dt)
    if isinstance(rate, MeasuredRate):
        spacing = min(spacing, float(np.diff(rate.t_grid).min()))
    if getattr(rate, "time_axis", "intrinsic") == "step":
        spacing = min(spacing, 1.0)
    elif noise is not None:
        lr = noise.schedule_for(rate).lr
        spacing = min(spacing, float(lr[lr > 0].min()) if (lr > 0).any() else np.inf)
    if max_step is None:
        max_step = spacing
    else:
        max_step = min(check_positive("max_step", max_step), spacing)

    floor = 0.0 if bracket is not None else closure.floor
    mean_field = bracket is None and (sigma is None or order == 1)

    def gamma(s: float, L: float) -> float:
        if bracket is None:
            return float(closure.g(L) if mean_field else closure.g2(L, sig(s)))
        if sigma is None:
            return float(closure.upper(L))
        lo, hi = closure.bracket(L, sig(s), None if loss_max is None else lmax(s))
        return float(lo if bracket == "lo" else hi)

    def F(s: float, L: float) -> float:
        out = -float(rate.phi(s)) * gamma(s, L)
        if noise is not None:
            out += float(noise.drift(s, L, closure.floor, rate))
        return out

    def rhs(s: float, u: np.ndarray) -> np.ndarray:
        x = np.exp(u[0])
        return np.array([F(s, floor + x) / x])

    def rhs_x(s: float, y: np.ndarray) -> np.ndarray:
        return np.array([F(s, floor + y[0] * scale) / scale])

    jac = None
    if mean_field and method in ("LSODA", "Radau", "BDF"):

        def jac(s: float, u: np.ndarray) -> np.ndarray:
            x = np.exp(u[0])
            L = floor + x
            dF = -float(rate.phi(s)) * float(closure.dg(L))
            if noise is not None and noise.form == "multiplicative":
                dF += float(noise.drift(s, L, closure.floor, rate)) / x
            return np.array([[dF - F(s, L) / x]])

    def hit_floor(s: float, u: np.ndarray) -> float:
        # ln(1 / (|du/dt| tau)) crosses 0 when u would fall by 1 within tau = 1e-12 max(1, |t|):
        # the floor is closer than time can resolve, a finite-time hit
        speed = abs(float(rhs(s, u)[0])) * _T_RES * max(1.0, abs(s))
        return float(-np.log(speed + 1e-300))

    # phase 2 (floor > 0 only): below x = _SWITCH * floor, g(floor + x) resolves x only to
    # eps * floor / x, too coarse for ln x; continue in x itself with absolute accuracy
    # rtol * floor (i.e. relative on L) and stop where x reaches 0
    scale = max(floor, 1e-300)
    switch_u = np.log(_SWITCH * floor) if floor > 0 else -np.inf

    def to_phase2(s: float, u: np.ndarray) -> float:
        return float(u[0] - switch_u)

    def at_floor(s: float, y: np.ndarray) -> float:
        # time to the floor at the current speed, x / |dx/dt|: a simple zero at a finite-time
        # hit even where x itself touches 0 tangentially (x ~ (T - t)^(1/(1-k)))
        x = y[0] * scale
        return float(x / (abs(F(s, floor + x)) + 1e-300)) if x > 0 else float(y[0])

    for ev in (hit_floor, to_phase2, at_floor):
        ev.terminal = True  # type: ignore[attr-defined]
        ev.direction = -1  # type: ignore[attr-defined]

    live = [float(x) for x in targets if floor < float(x) < x0_loss]

    def crossings(in_log: bool) -> list[Callable[[float, np.ndarray], float]]:
        out = []
        for target in live:
            level = np.log(target - floor) if in_log else (target - floor) / scale

            def crossing(s: float, v: np.ndarray, level: float = level) -> float:
                return float(v[0] - level)

            crossing.direction = -1  # type: ignore[attr-defined]
            out.append(crossing)
        return out

    u0 = np.log(x0_loss - floor)
    loss = np.full(t.shape, x0_loss)
    hits: dict[float, Any] = {x: t0 for x in map(float, targets) if x >= x0_loss}
    found: dict[float, float] = {}
    t_hit = np.inf
    start, state, phase = t0, u0, 1
    while start < t_end:
        later = t > start
        if phase == 1:
            fun, evs, kw = rhs, [hit_floor, to_phase2, *crossings(True)], dict(rtol=rtol, atol=atol)
            if jac is not None:
                kw["jac"] = jac
        else:
            fun, evs, kw = rhs_x, [at_floor, *crossings(False)], dict(rtol=rtol, atol=rtol)
        with np.errstate(over="ignore", under="ignore", divide="ignore"):
            sol = solve_ivp(
                fun,
                (start, t_end),
                [state],
                method=method,
                t_eval=t[later],
                events=evs,
                max_step=max_step,
                **kw,
            )
        if sol.status < 0:
            return Solution(
                t,
                np.full(t.shape, np.nan),
                "failed",
                f"solve_ivp ({method}) failed: {sol.message} Try method='Radau', a looser rtol, "
                "or a smaller max_step; check that phi and sigma are finite on the whole range.",
                {},
                method,
            )
        got = np.asarray(sol.y).reshape(1, -1)[0]
        idx = np.flatnonzero(later)[: got.size]
        loss[idx] = floor + (np.exp(got) if phase == 1 else np.maximum(got, 0.0) * scale)
        n_stop = 2 if phase == 1 else 1
        for x, when in zip(live, sol.t_events[n_stop:]):
            if when.size and x not in found:
                found[x] = float(when[0])
        if sol.status == 0:
            break
        if phase == 1 and sol.t_events[1].size:  # switch to phase 2
            start, state, phase = float(sol.t_events[1][0]), _SWITCH, 2
            continue
        t_hit = float(sol.t_events[0][0])
        loss[t > t_hit] = floor
        break
    for x in map(float, targets):
        if x not in hits:
            hits[x] = found.get(x, t_hit if x >= floor and np.isfinite(t_hit) else np.inf)
    if np.isfinite(t_hit):
        hits[floor] = t_hit
        return Solution(
            t,
            loss,
            "floor_reached",
            f"the loss reached its floor {floor!r} at t = {t_hit:.6g} (within the solver's "
            "resolution) and is clamped there.",
            hits,
            method,
        )
    return Solution(t, loss, "success", f"integrated with {method}, rtol={rtol:g}", hits, method)
