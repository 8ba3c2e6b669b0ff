"""Fitting the multi-power law as its authors do, and the same objective run to convergence.

Objective (Luo et al. 2025), one parameter set shared by every run fitted:

    f(theta) = sum_runs sum_i huber_delta(log y_i - log L(s_i; theta)),   delta = 1e-3,

huber_delta(r) = r^2 / 2 for |r| <= delta, else delta (|r| - delta / 2).

:func:`fit_multipower_published` is the authors' early-stopped recipe:

1. fit the simplified law L0 + A S^-alpha - B (peak - eta_last) by L-BFGS-B from every
   point of a 5 x 3 x 3 x 3 grid (L0 = min loss +- 0.2, A and alpha +- 0.1 around a
   log-log line fitted to loss - min + 0.01 against S, B peak in {0.03, 0.165, 0.3}),
   all four bounded below by 0, and keep the best;
2. start the full law there with C = 1, beta = gamma = 0.5 and take at most 200 AdamW
   steps (torch's defaults: betas 0.9/0.999, eps 1e-8, weight decay 0.01; lr 5e-2 for
   L0, A, B, C and 5e-3 for alpha, beta, gamma), stopping after 20 steps without a
   lower objective or when the gradient norm falls below 1e-5;
3. return the parameters with the lowest objective seen.

The AdamW endpoint is not a minimum of f: :func:`fit_multipower_converged` runs the
same objective to convergence (multi-start L-BFGS-B with the exact gradient, positive
scales A, B, C searched in logs) so the two can be compared.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from .._errors import InvalidArgumentError, check_positive
from .._model import RunData
from .._results import FitResult
from ..schedule import Schedule
from ..trajectory import Trajectory
from .multipower import PARAM_NAMES, MultiPowerLaw

__all__ = ["fit_multipower_converged", "fit_multipower_published", "huber"]

Runs = Sequence[RunData | tuple[Trajectory, Schedule]]
_FAST = np.array([True, True, False, True, True, False, False])  # L0, A, B, C get lr_fast
_LOG = np.array([False, True, False, True, True, False, False])  # A, B, C searched in logs


def huber(r: np.ndarray, delta: float) -> np.ndarray:
    """huber_delta(r) = r^2/2 for |r| <= delta, else delta (|r| - delta/2)."""
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def _as_runs(runs: Runs) -> list[RunData]:
    out = []
    for i, r in enumerate(runs):
        if isinstance(r, RunData):
            out.append(r)
        elif isinstance(r, tuple) and len(r) == 2:
            out.append(RunData.from_trajectory(*r))
        else:
            raise InvalidArgumentError(
                f"runs[{i}] is a {type(r).__name__}; pass RunData or (Trajectory, Schedule) pairs."
            )
    if not out:
        raise InvalidArgumentError("runs is empty; pass at least one run to fit.")
    return out


def _names(runs: list[RunData]) -> list[str]:
    return [r.traj.meta.name or f"run{i}" for i, r in enumerate(runs)]


@dataclass(frozen=True)
class _Objective:
    """f(theta) and its gradient for a joint fit (module docstring)."""

    model: MultiPowerLaw
    runs: list[RunData]
    delta: float

    @property
    def n(self) -> int:
        return sum(r.traj.n for r in self.runs)

    def residuals(self, theta: np.ndarray) -> list[np.ndarray]:
        th = dict(zip(PARAM_NAMES, theta))
        out = []
        for r in self.runs:
            pred = self.model.curve(th, r, r.traj.step)
            with np.errstate(divide="ignore", invalid="ignore"):
                out.append(np.log(r.traj.loss) - np.log(pred))
        return out

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        th = dict(zip(PARAM_NAMES, theta))
        f, g = 0.0, np.zeros(len(PARAM_NAMES))
        for r in self.runs:
            pred, J = self.model.curve_and_jacobian(th, r, r.traj.step)
            if not np.all(np.isfinite(pred) & (pred > 0)) or J is None:
                return np.inf, np.full(len(PARAM_NAMES), np.nan)
            res = np.log(r.traj.loss) - np.log(pred)
            f += float(huber(res, self.delta).sum())
            psi = np.clip(res, -self.delta, self.delta)
            g -= (psi / pred) @ J
        return f, g


def _simplified_start(obj: _Objective) -> tuple[np.ndarray, float, int]:
    """Step 1 of the recipe: best of the grid fits of L0 + A S^-alpha - B (peak - eta_last)."""
    data = []
    for r in obj.runs:
        n = obj.model.updates(r, r.traj.step)
        S = r.schedule.S(n)
        peak = float(np.max(r.schedule.lr))
        gap = peak - r.schedule.lr[np.maximum(n - 1, 0)]
        data.append((S, gap, np.log(r.traj.loss), peak))
    lo = min(float(r.traj.loss.min()) for r in obj.runs)
    x = np.concatenate([np.log(S) for S, *_ in data])
    y = np.concatenate([np.log(r.traj.loss - lo + 0.01) for r in obj.runs])
    slope, intercept = np.polyfit(x, y, 1)
    peak = max(p for *_, p in data)

    def f4(p: np.ndarray) -> tuple[float, np.ndarray]:
        L0, A, alpha, B = p
        f, g = 0.0, np.zeros(4)
        for S, gap, logy, _ in data:
            power = S**-alpha
            pred = L0 + A * power - B * gap
            if not np.all(pred > 0):
                return np.inf, np.full(4, np.nan)
            res = logy - np.log(pred)
            f += float(huber(res, obj.delta).sum())
            w = np.clip(res, -obj.delta, obj.delta) / pred
            g -= np.array([w.sum(), w @ power, w @ (-A * power * np.log(S)), w @ (-gap)])
        return f, g

    grid = list(
        itertools.product(
            np.linspace(lo - 0.2, lo + 0.2, 5),
            np.linspace(np.exp(intercept) - 0.1, np.exp(intercept) + 0.1, 3),
            np.linspace(-slope - 0.1, -slope + 0.1, 3),
            np.linspace(0.03, 0.3, 3) / peak,
        )
    )
    best, best_f = None, np.inf
    for p0 in grid:
        res = minimize(
            f4,
            np.maximum(p0, 0.0),
            jac=True,
            method="L-BFGS-B",
            bounds=[(0, None)] * 4,
            options={"maxiter": 100000, "ftol": 1e-9, "gtol": 1e-6},
        )
        if np.isfinite(res.fun) and res.fun < best_f:
            best, best_f = res.x, float(res.fun)
    if best is None:
        raise InvalidArgumentError(
            "no grid start of the simplified law gave a positive loss curve; are the runs' "
            "losses positive and their schedules right?"
        )
    return best, best_f, len(grid)


def _adamw(
    obj: Callable[[np.ndarray], tuple[float, np.ndarray]],
    theta0: np.ndarray,
    lr: np.ndarray,
    *,
    max_steps: int,
    patience: int,
    grad_tol: float,
    weight_decay: float = 1e-2,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> tuple[np.ndarray, float, int, str]:
    """AdamW (decoupled weight decay, as torch.optim.AdamW) with the recipe's early stops.

    Returns the parameters with the lowest objective *evaluated* (the reference code keeps
    the parameters after the step that followed it; one AdamW step apart), that
    objective, the number of steps taken, and why it stopped.
    """
    p = theta0.astype(float).copy()
    m, v = np.zeros_like(p), np.zeros_like(p)
    best_p, best_f = p.copy(), np.inf
    min_f, stall = np.inf, 0
    why = f"reached max_steps={max_steps}"
    step = 0
    for step in range(max_steps):
        f, g = obj(p)
        if not np.isfinite(f):
            why = f"objective not finite at AdamW step {step} (a non-positive loss curve)"
            break
        if f < best_f:
            best_p, best_f = p.copy(), f
        t = step + 1
        p *= 1.0 - lr * weight_decay
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        p -= lr * (m / (1 - betas[0] ** t)) / (np.sqrt(v / (1 - betas[1] ** t)) + eps)
        if f < min_f:
            min_f, stall = f, 0
        else:
            stall += 1
        if step > patience and stall >= patience:
            why = f"no lower objective for {patience} steps (AdamW step {step})"
            break
        if np.linalg.norm(g) < grad_tol:
            why = f"gradient norm below {grad_tol:g} (AdamW step {step})"
            break
    return best_p, best_f, step + 1, why


def _result(
    obj: _Objective,
    theta: np.ndarray,
    f: float,
    *,
    message: str,
    notes: list[str],
    extra: dict[str, object],
) -> FitResult:
    names = _names(obj.runs)
    res = obj.residuals(theta)
    rss = float(sum(np.sum(r**2) for r in res))
    n = obj.n
    return FitResult(
        model=obj.model,
        params=dict(zip(PARAM_NAMES, map(float, theta))),
        stderr=dict.fromkeys(PARAM_NAMES, np.nan),
        ci=dict.fromkeys(PARAM_NAMES, (np.nan, np.nan)),
        level=0.9,
        fixed={},
        metrics={
            "n": n,
            "k": len(PARAM_NAMES),
            "objective": f,
            "rss_log": rss,
            "rmse_log": float(np.sqrt(rss / n)),
        },
        success=bool(np.isfinite(f)),
        message=message,
        notes=(*notes, "no standard errors or intervals: the recipe gives point estimates only"),
        noise_sd={nm: float(np.std(r, ddof=0)) for nm, r in zip(names, res)},
        train_steps={
            nm: (int(r.traj.step[0]), int(r.traj.step[-1])) for nm, r in zip(names, obj.runs)
        },
        extra=extra,
    )


def fit_multipower_published(
    runs: Runs,
    *,
    model: MultiPowerLaw | None = None,
    delta: float = 1e-3,
    max_steps: int = 200,
    lr_fast: float = 5e-2,
    lr_slow: float = 5e-3,
    patience: int = 20,
    grad_tol: float = 1e-5,
) -> FitResult:
    """Fit one multi-power law to ``runs`` jointly by the authors' recipe (module docstring).

    Args:
        runs: RunData, or (Trajectory, Schedule) pairs such as :func:`lossrate.readers.mpl.load_mpl` returns.
        model: default ``MultiPowerLaw(count_logged_step=True)``, the authors' conventions.
        delta: Huber threshold on log residuals.
        max_steps, lr_fast, lr_slow, patience, grad_tol: the AdamW stage.

    Returns:
        FitResult with point estimates; ``extra`` holds the AdamW start, the grid's objective, steps and seconds.
    """
    delta = check_positive("delta", delta)
    if int(max_steps) != max_steps or max_steps < 1:
        raise InvalidArgumentError(f"max_steps must be a whole number >= 1, got {max_steps!r}.")
    model = MultiPowerLaw(count_logged_step=True) if model is None else model
    obj = _Objective(model, _as_runs(runs), delta)
    t0 = time.perf_counter()
    p4, f4, n_grid = _simplified_start(obj)
    theta0 = np.array([*p4, 1.0, 0.5, 0.5])
    lr = np.where(_FAST, check_positive("lr_fast", lr_fast), check_positive("lr_slow", lr_slow))
    theta, f, steps, why = _adamw(
        obj, theta0, lr, max_steps=int(max_steps), patience=patience, grad_tol=grad_tol
    )
    seconds = time.perf_counter() - t0
    return _result(
        obj,
        theta,
        f,
        message=f"published recipe: {n_grid} grid fits, then {steps} AdamW steps; stopped: {why}",
        notes=[
            f"joint fit of {len(obj.runs)} run(s) with one parameter set",
            "early-stopped by design: the AdamW endpoint is not a minimum of the objective",
        ],
        extra={
            "start": dict(zip(PARAM_NAMES, map(float, theta0))),
            "grid_objective": f4,  # of the simplified law at the start
            "adamw_steps": steps,
            "seconds": seconds,
        },
    )


def fit_multipower_converged(
    runs: Runs,
    *,
    model: MultiPowerLaw | None = None,
    delta: float = 1e-3,
    starts: Sequence[Mapping[str, float]] | None = None,
    maxiter: int = 5000,
) -> FitResult:
    """The recipe's objective minimised to convergence by multi-start L-BFGS-B.

    Starts: ``starts``, or the recipe's grid start with (C, beta, gamma) in
    {(1, 0.5, 0.5), (4, 0.5, 0.5), (1, 1, 0.5), (1, 0.5, 1)}. Bounds are the union of
    ``model.params(run)`` over the runs; A, B, C are searched in logs and the objective is
    scaled by 1 / (n delta^2), which leaves its minimiser unchanged.
    """
    delta = check_positive("delta", delta)
    model = MultiPowerLaw(count_logged_step=True) if model is None else model
    obj = _Objective(model, _as_runs(runs), delta)
    t0 = time.perf_counter()
    per_param = list(zip(*(model.params(r) for r in obj.runs)))
    lower = np.array([min(p.lower for p in ps) for ps in per_param])
    upper = np.array([max(p.upper for p in ps) for ps in per_param])
    if starts is None:
        p4 = _simplified_start(obj)[0]
        points = [
            np.array([*p4, c, b, g])
            for c, b, g in ((1, 0.5, 0.5), (4, 0.5, 0.5), (1, 1, 0.5), (1, 0.5, 1))
        ]
    else:
        points = [np.array([float(s[k]) for k in PARAM_NAMES]) for s in starts]
    scale = 1.0 / (obj.n * delta**2)

    def to_z(theta: np.ndarray) -> np.ndarray:
        return np.where(_LOG, np.log(np.maximum(theta, 1e-300)), theta)

    def from_z(z: np.ndarray) -> np.ndarray:
        return np.where(_LOG, np.exp(z), z)

    def fz(z: np.ndarray) -> tuple[float, np.ndarray]:
        theta = from_z(z)
        f, g = obj(theta)
        if not np.isfinite(f):
            return 1e30, np.zeros_like(z)
        return f * scale, np.where(_LOG, g * theta, g) * scale

    zb = list(zip(to_z(lower), to_z(upper)))
    best = None
    for p in points:
        z0 = np.clip(to_z(np.clip(p, lower, upper)), to_z(lower), to_z(upper))
        r = minimize(
            fz,
            z0,
            jac=True,
            method="L-BFGS-B",
            bounds=zb,
            options={"maxiter": maxiter, "maxfun": 2 * maxiter, "ftol": 1e-15, "gtol": 1e-10},
        )
        if best is None or r.fun < best.fun:
            best = r
    if best is None:
        raise InvalidArgumentError("starts is empty; pass at least one starting point.")
    theta = from_z(best.x)
    f = float(best.fun / scale)
    return _result(
        obj,
        theta,
        f,
        message=f"multi-start L-BFGS-B ({len(points)} starts): {best.message}",
        notes=[f"joint fit of {len(obj.runs)} run(s) with one parameter set"],
        extra={
            "seconds": time.perf_counter() - t0,
            "iterations": int(best.nit),
            "converged": bool(best.success),
        },
    )
