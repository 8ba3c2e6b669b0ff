"""Replay a recorded run from its measured rate: an in-sample consistency check.

The ODE factorises the loss decrease as dL/dt = -phi(t) g(L, sigma_L) (t = sum of learning
rates). A run recorded with :mod:`lossrate.torch` measures both factors without looking at
the loss curve: the rate phi_hat = pgrad_sq / g2(L, sigma) from the gradient the optimizer
applies (debiased with gradient groups, :mod:`lossrate.measured`), and the closure ratio
c = R / g2 from the per-sample residuals. :func:`replay` integrates

    dL/dt = -phi_hat(t) g2(L, sigma(t))    [+ tr(P Sigma_g)(t) / B(t)],   L(0) = L~_0,

from the run's start with the smoothed measured phi_hat (sigma_L(t) = the observed
coefficient of variation times the replayed L), and compares it with the smoothed
observed loss L~. Every output says what this is: an **in-sample consistency check of the
factorisation, not a prediction** (theory §4.1's tautology trap: phi_hat comes from the run
being replayed, so agreement shows that the measured gradient and the closure account for
the observed decrease, nothing about the future).

* **Observed** L~ is the centred moving average of ln L over ``window`` steps, shrinking at
  both ends (the replay starts at the step-0 loss).
* **phi_hat** is the debiased pgrad_sq divided by g2 at the smoothed observed loss and
  sigma_L (g2 = g + g'' sigma^2 / 2, the sigma-aware closure), smoothed over ``window`` steps
  (Savitzky-Golay, order 1: per-step values are noisy and can be negative), clipped >= 0.
  The raw mini-batch phi_hat (biased by tr(P Sigma_g)/B, theory §4.2) is replayed beside it
  for contrast.
* **SGD-noise term** (theory §4.3, F3): eta nu / (2B) with nu = tr(P H P Sigma_g). Only
  tr(P Sigma_g) is measured; with curvature at the stability edge (lambda_max(PH) = 2/eta,
  where SGD at a fixed lr settles) the term is tr(P Sigma_g) / B, built from the run's own
  measured tr(P Sigma_g). Curvature below the edge makes it smaller, so it bounds the
  noise term's size from above for plain SGD; it is an assumption, reported as such.
* **Measured second-order term** (theory §4.3's expansion without assuming a curvature):
  over one step the loss changes by dL = <dtheta, (grad L_k + grad L_{k+1}) / 2> to third
  order (the trapezoid rule, exact on a quadratic). The recorder logs <dtheta_k, G_{k+1}>
  (``update_dot``, the update against the next step's independent mini-batch gradient, so
  unbiased for <dtheta_k, grad L_{k+1}>); with <dtheta_k, grad L_k> = -eta_k pgrad_sq_k (the
  flow's P) the term beyond gradient flow is (update_dot_{k+1} / eta_k + pgrad_sq_k) / 2 per
  unit t, eta/2 (grad^T P H P grad + tr(P H P Sigma_g)/B) in expectation: the curvature
  along the actual steps, noise included.
* **Closure ratio** c = R / g2(L_B, sigma_B) per step, with the closure's rigorous bracket
  [g_lo, g_hi] / g2 where the closure has one.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.integrate import solve_ivp
from scipy.signal import savgol_filter

from ._errors import DataError, InvalidArgumentError
from .closures.base import Closure
from .measured import GradientNoise, noise_path, read_gradient_noise
from .metrics import smooth_window
from .trajectory import Trajectory

__all__ = ["LABEL", "Replay", "replay"]

_CURVES = ("loss", "loss_noise", "loss_second", "loss_raw")
LABEL = "in-sample consistency check of the factorisation, not a prediction"


@dataclass(frozen=True, eq=False)
class Replay:
    """The replayed curves of a run (arrays aligned with the run's steps).

    Attributes:
        step, t: the steps and intrinsic times.
        observed: the smoothed observed loss L~.
        loss: the replay with the debiased phi_hat (the raw one when ``debiased`` is False).
        loss_noise: the replay with the SGD-noise term added (None without tr(P Sigma_g)).
        loss_raw: the replay with the raw mini-batch phi_hat (None when ``loss`` is already it).
        loss_second: the replay with the measured second-order term (None without
            ``update_dot``).
        phi_hat: the smoothed phi_hat used for ``loss``.
        closure_ratio: c = R / g2 per step (NaN where unmeasured).
        bracket_lo, bracket_hi: the closure's rigorous bracket of c (NaN without one).
        debiased: whether ``loss`` uses the debiased phi_hat.
        closure: the closure g.
        label: what this is (:data:`LABEL`).
    """

    step: np.ndarray
    t: np.ndarray
    observed: np.ndarray
    loss: np.ndarray
    loss_noise: np.ndarray | None
    loss_raw: np.ndarray | None
    loss_second: np.ndarray | None
    phi_hat: np.ndarray
    closure_ratio: np.ndarray
    bracket_lo: np.ndarray
    bracket_hi: np.ndarray
    debiased: bool
    closure: Closure
    label: str = field(default=LABEL)

    def error(self, which: str = "loss") -> tuple[float, float]:
        """(max over steps, last step) of |replay / observed - 1| of ``which`` ("loss",
        "loss_noise", "loss_second" or "loss_raw"); NaN when that curve is absent."""
        if which not in _CURVES:
            raise InvalidArgumentError(f"which must be one of {_CURVES}, got {which!r}.")
        curve = getattr(self, which)
        if curve is None:
            return math.nan, math.nan
        rel = np.abs(curve / self.observed - 1.0)
        return float(np.nanmax(rel)), float(rel[-1])

    @property
    def in_bracket(self) -> float:
        """Share of steps whose measured c lies in the closure's bracket (NaN without one)."""
        ok = np.isfinite(self.closure_ratio) & np.isfinite(self.bracket_lo)
        if not ok.any():
            return math.nan
        c, lo, hi = self.closure_ratio[ok], self.bracket_lo[ok], self.bracket_hi[ok]
        return float(np.mean((c >= lo * (1 - 1e-9)) & (c <= hi * (1 + 1e-9))))

    def describe(self) -> str:
        """The agreement, for people (every line says what it is)."""
        lines = [f"replay ({self.label}):"]
        names = [("loss", "debiased phi_hat" if self.debiased else "raw phi_hat")]
        if self.loss_noise is not None:
            names.append(("loss_noise", "debiased phi_hat + SGD-noise term (stability-edge)"))
        if self.loss_second is not None:
            names.append(("loss_second", "debiased phi_hat + measured second-order term"))
        if self.loss_raw is not None:
            names.append(("loss_raw", "raw mini-batch phi_hat (biased, for contrast)"))
        for key, what in names:
            worst, last = self.error(key)
            curve = getattr(self, key)
            lines.append(
                f"  {what}: final {curve[-1]:.4g} vs observed {self.observed[-1]:.4g} "
                f"({100 * last:.1f} %), worst over the run {100 * worst:.1f} %"
            )
        c = self.closure_ratio[np.isfinite(self.closure_ratio)]
        if c.size:
            share = self.in_bracket
            where = "" if math.isnan(share) else f", {100 * share:.0f} % of steps in its bracket"
            lines.append(
                f"  closure ratio c = R/g2: median {np.median(c):.3g} "
                f"[{np.quantile(c, 0.1):.3g}, {np.quantile(c, 0.9):.3g}] (10-90 %){where}"
            )
        return "\n".join(lines)


def _load(run: Any) -> tuple[Trajectory, GradientNoise | None]:
    from .readers import read_log

    if not isinstance(run, str | os.PathLike):
        raise InvalidArgumentError(
            f"run must be a Trajectory or the path of a recorded run, got {type(run).__name__}."
        )
    path = Path(run)
    if not path.exists():
        raise DataError(f"{str(path)!r} does not exist; pass a run folder or its trajectory.csv.")
    traj = read_log(path / "trajectory.csv" if (path / "trajectory.csv").is_file() else path)
    noise = read_gradient_noise(path) if noise_path(path).exists() else None
    return traj, noise


def _smooth_linear(y: np.ndarray, window: int) -> np.ndarray:
    """NaN-tolerant local-linear smoothing over ``window`` points (values may be < 0)."""
    ok = np.isfinite(y)
    if ok.sum() < 2:
        raise DataError("fewer than 2 finite measured values to smooth.")
    x = np.arange(y.size)
    filled = np.interp(x, x[ok], y[ok])
    w = min(window, y.size - (1 - y.size % 2))
    return filled if w < 3 else savgol_filter(filled, w, 1, mode="interp")


def _smooth_log(y: np.ndarray, window: int) -> np.ndarray:
    """exp of the centred moving average of ln y over ``window`` points, the window shrinking
    symmetrically at both ends (so the first point is the step-0 loss itself and a curved
    start is not pulled down as a one-sided fit would)."""
    if not np.all(np.isfinite(y)) or np.any(y <= 0):
        raise DataError("the observed loss must be finite and > 0 at every step to be smoothed.")
    n = y.size
    i = np.arange(n)
    h = np.minimum(np.minimum(i, n - 1 - i), window // 2)
    c = np.concatenate([[0.0], np.cumsum(np.log(y))])
    return np.asarray(np.exp((c[i + h + 1] - c[i - h]) / (2 * h + 1)), dtype=float)


def _closure_of(traj: Trajectory, closure: Closure | str | None) -> Closure:
    from .closures import get_closure
    from .report.analysis import run_closure

    if closure is None:
        return run_closure(traj)
    if isinstance(closure, Closure):
        return closure
    if isinstance(closure, str):
        return get_closure(closure)
    raise InvalidArgumentError(
        f"closure must be a Closure, a closure name or None (the run's), got {closure!r}."
    )


def replay(
    run: Trajectory | str | os.PathLike[str],
    noise: GradientNoise | None = None,
    *,
    closure: Closure | str | None = None,
    debiased: bool = True,
    sgd_noise: bool = True,
    window: int | None = None,
) -> Replay:
    """Integrate the run's ODE from its start with its own measured rate (see the module).

    This is an in-sample consistency check of the factorisation, not a prediction.

    Args:
        run: a Trajectory recorded with lossrate.torch, or the path of a run folder (or its
            trajectory.csv), whose gradient_noise.csv is then read too.
        noise: the run's :class:`~lossrate.measured.GradientNoise` (with a Trajectory).
        closure: g (default: the run's, :func:`lossrate.report.analysis.run_closure`).
        debiased: use the debiased phi_hat (needs ``noise``); False replays the raw one.
        sgd_noise: also replay with the SGD-noise term (needs tr(P Sigma_g) in ``noise``).
        window: steps of the phi_hat and loss smoothing (default
            :func:`lossrate.metrics.smooth_window`).

    Raises:
        DataError: the run lacks pgrad_sq or residual_sq (record with gradient_metrics(model,
            optimizer) and InstrumentedLoss), or ``debiased`` without gradient groups (pass
            gradient_metrics(..., groups=GradientGroups(model)) or DDPGradients, or
            debiased=False for the biased raw replay).
        InvalidArgumentError: bad arguments.
    """
    if isinstance(run, Trajectory):
        traj = run
    else:
        if noise is not None:
            raise InvalidArgumentError(
                "noise is read from the run folder when run is a path; pass noise only with a "
                "Trajectory."
            )
        traj, noise = _load(run)
    if noise is not None and not isinstance(noise, GradientNoise):
        raise InvalidArgumentError(
            f"noise must be a GradientNoise (lossrate.measured.read_gradient_noise), got "
            f"{type(noise).__name__}."
        )
    for name, how in (
        ("pgrad_sq", "gradient_metrics(model, optimizer)"),
        ("residual_sq", "lossrate.torch.InstrumentedLoss as the training loss"),
    ):
        if not traj.has(name) or not np.isfinite(getattr(traj, name)).any():
            raise DataError(
                f"the run has no measured {name!r}, so it cannot be replayed; record it with "
                f"{how} and Recorder.log(..., grad=..., batch=crit.last)."
            )
    if debiased and noise is None:
        raise DataError(
            "debiased=True needs the run's gradient-noise columns (gradient_noise.csv), which "
            "it was recorded without; record with gradient_metrics(model, optimizer, "
            "groups=GradientGroups(model)) (micro-batches or the two-half mode "
            "GradientGroups.split) or groups=DDPGradients(ddp_model), or pass debiased=False "
            "for the raw replay (biased by tr(Sigma_g)/B)."
        )
    if window is not None and (
        isinstance(window, bool) or not isinstance(window, int) or window < 1
    ):
        raise InvalidArgumentError(f"window must be an integer >= 1 (steps), got {window!r}.")
    if traj.n < 5:
        raise DataError(f"the run has {traj.n} steps; a replay needs at least 5.")
    g_fn = _closure_of(traj, closure)
    w = window or smooth_window(traj.n)
    obs = _smooth_log(np.asarray(traj.loss, dtype=float), w)
    sigma = (_smooth_linear(traj.loss_std, w) if traj.has("loss_std") else np.zeros(traj.n)).clip(
        min=0.0
    )
    g2_obs = np.asarray(g_fn.g2(obs, sigma), dtype=float)
    cv = sigma / obs  # the replay's sigma_L = cv(t) L: the observed spread, relative
    aligned = noise.aligned(traj.step) if noise is not None else None

    def phi_of(pgrad: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            per_step = np.where(g2_obs > 0, pgrad / g2_obs, np.nan)
        phi = _smooth_linear(per_step, w)
        return np.where(np.isfinite(phi), np.maximum(phi, 0.0), 0.0)

    t = np.asarray(traj.t, dtype=float)
    raw_phi = phi_of(np.asarray(traj.pgrad_sq, dtype=float))
    curves: dict[str, np.ndarray | None] = dict.fromkeys(_CURVES[1:])
    if debiased and aligned is not None:
        phi = phi_of(aligned.pgrad_sq)
        curves["loss_raw"] = _integrate(t, raw_phi, None, g_fn, cv, obs[0])
        trace = aligned.ptrace_sigma / aligned.batch_size
        if sgd_noise and np.isfinite(trace).sum() >= 2:
            drift = np.maximum(_smooth_linear(trace, w), 0.0)
            curves["loss_noise"] = _integrate(t, phi, drift, g_fn, cv, obs[0])
        ud = aligned.update_dot
        lr = np.asarray(traj.lr, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            second = np.append((ud[1:] / lr[:-1] + aligned.pgrad_sq[:-1]) / 2, np.nan)
        # two consecutive measured steps each: none under a cadence (GradientGroups(every=N))
        if np.isfinite(second).sum() >= 2:
            second = _smooth_linear(np.where(np.isfinite(second), second, np.nan), w)
            curves["loss_second"] = _integrate(t, phi, second, g_fn, cv, obs[0])
    else:
        phi = raw_phi
    loss = _integrate(t, phi, None, g_fn, cv, obs[0])
    c, lo, hi = _closure_ratio(traj, g_fn)
    return Replay(
        step=traj.step,
        t=t,
        observed=obs,
        loss=loss,
        loss_noise=curves["loss_noise"],
        loss_raw=curves["loss_raw"],
        loss_second=curves["loss_second"],
        phi_hat=phi,
        closure_ratio=c,
        bracket_lo=lo,
        bracket_hi=hi,
        debiased=bool(debiased and aligned is not None),
        closure=g_fn,
    )


def _integrate(
    t: np.ndarray,
    phi: np.ndarray,
    drift: np.ndarray | None,
    g_fn: Closure,
    sigma: np.ndarray,
    L0: float,
) -> np.ndarray:
    """dL/dt = -phi(t) g2(L, cv(t) L) + drift(t) on the grid t (``sigma`` holds the observed
    coefficient of variation cv = sigma_L / L; piecewise-linear inputs, the floor is never
    crossed). Integrated over the step index k with dt/dk = the step's lr (LSODA, steps of at
    most one index): the same equation, whose step bound does not shrink with the smallest
    lr (a cosine schedule's last steps made the bound in t tiny and the solve endless)."""
    floor = float(g_fn.floor)
    t = np.asarray(t, dtype=float)
    if t.size < 2 or t[-1] <= t[0]:
        return np.full(t.size, L0)
    k = np.arange(t.size, dtype=float)
    dt = np.diff(t)
    last = t.size - 1

    def rhs(s: float, y: np.ndarray) -> np.ndarray:
        rate = dt[min(int(s), last - 1)]
        if rate <= 0:
            return np.zeros(1)
        L = max(float(y[0]), floor + 1e-12)
        out = -np.interp(s, k, phi) * float(g_fn.g2(L, L * np.interp(s, k, sigma)))
        if drift is not None:
            out += np.interp(s, k, drift)
        return np.array([out * rate])

    sol = solve_ivp(
        rhs, (0.0, float(last)), [L0], method="LSODA", t_eval=k, max_step=1.0, rtol=1e-6,
        atol=1e-10 * L0,
    )  # fmt: skip
    if not sol.success:
        raise DataError(f"the replay's ODE solver failed: {sol.message}")
    return np.asarray(np.maximum(sol.y[0], floor), dtype=float)


def _closure_ratio(traj: Trajectory, g_fn: Closure) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    L = np.asarray(traj.loss, dtype=float)
    s = np.asarray(traj.loss_std, dtype=float) if traj.has("loss_std") else np.zeros_like(L)
    s = np.where(np.isfinite(s), s, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        g2 = np.asarray(g_fn.g2(L, s), dtype=float)
        c = np.where(g2 > 0, traj.residual_sq / g2, np.nan)
        try:
            lo, hi = g_fn.bracket(L, s)
            lo, hi = np.asarray(lo) / g2, np.asarray(hi) / g2
        except InvalidArgumentError:
            lo = hi = np.full_like(L, np.nan)
    return c, np.where(g2 > 0, lo, np.nan), np.where(g2 > 0, hi, np.nan)
