"""Exact cases: linear models trained by full-batch gradient descent, where the kernel
constants are known in closed form and the certified speed limit can be checked.

For a linear model z = W x + b (one weight row per output) the empirical NTK is
Theta = I_C (x) X~ X~^T with X~ = [X, 1]. Hence (theory §1.2), for the n samples of the
training split,

    K^2 = tr(Theta)/n = C * mean_i (||x_i||^2 + 1),
    lambda_max = lambda_max(Theta/n) = lambda_max(X~^T X~ / n),

C outputs per sample (the per-sample losses of :class:`lossrate.torch.InstrumentedLoss` are
means over the C outputs, so r_i lives in R^C). Both bound the
Rayleigh quotient rho, so ||grad L||^2 = rho R <= phi_hi g_hi(L) with phi_hi in
{lambda_max, K^2} and g_hi the closure's sigma-free upper bound (:meth:`Closure.upper`:
4aL for MSE, 2 D_hat(L) for CE, D_hat(L) for BCE).

Per step, exactly: rho_k = ||grad L_k||^2 / R_k (``grad_sq / residual_sq`` of the
trajectory) must lie in [0, lambda_max]; :class:`ExactCheck` reports max_k rho_k / lambda_max,
a sharp check of the kernel constants on every logged step.

Certified bound for discrete GD (theory §5.1), from
:func:`lossrate.bounds.certified_lower_bound` with ``gd_lr``: for a convex loss
L_{k+1} >= L_k - eta ||grad L_k||^2 >= L_k - eta phi_hi g_hi(L_k), so L_k >= Lambda_k with
Lambda_{k+1} = Lambda_k - eta phi_hi g_hi(Lambda_k), provided x -> x - eta phi_hi g_hi(x)
is non-decreasing (eta phi_hi sup g_hi' <= 1). The step condition is far stricter for K^2
than for lambda_max (K^2 = 890 against lambda_max = 39 for 10-class MNIST pixels), so at the
learning rates worth training with only the lambda_max bound applies; the K^2 bound is
then reported as not applicable, with the reason. The
gradient-flow comparison solution (the ODE) is *not* a lower bound of discrete GD in
general: on a quadratic, one GD step with eta lambda = 1 reaches the minimum.

Teacher-student: x ~ N(0, I_d), y = W* x + b* + s N(0, I_C). With nn.MSELoss the training
optimum of a linear student is L* = min_W mean ||W x~ - y||^2 / C (computed exactly by least
squares, via the eigenpairs of X~^T X~ / n), and E L* = s^2 (1 - (d + 1)/n). lambda_max
comes from Lanczos (``scipy.sparse.linalg.eigsh``) plus its residual, an upper bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse.linalg import eigsh

from .._errors import InvalidArgumentError
from ..bounds import certified_lower_bound
from ..closures import Closure, get_closure
from ..trajectory import Trajectory
from .config import ExperimentConfig, TeacherConfig
from .datasets import Dataset, DatasetInfo
from .train import targets_for

__all__ = [
    "ExactCheck",
    "KernelConstants",
    "certify",
    "exact_closure",
    "is_exact_case",
    "linear_kernel_constants",
    "teacher_student",
]


@dataclass(frozen=True)
class KernelConstants:
    """Bounds on the Rayleigh quotient rho of the normalised NTK of a linear model."""

    k_sq: float  # K^2 = tr(Theta)/n
    lambda_max: float  # lambda_max(Theta/n) <= K^2


def _design(x: torch.Tensor) -> np.ndarray:
    """X~ = [vec(x), 1] in float64."""
    flat = x.reshape(x.shape[0], -1).double().cpu().numpy()
    return np.hstack([flat, np.ones((flat.shape[0], 1))])


def linear_kernel_constants(x: torch.Tensor, n_out: int) -> KernelConstants:
    """K^2 and lambda_max of z = W vec(x) + b with ``n_out`` outputs over the samples ``x``."""
    X = _design(x)
    return _constants(X, X.T @ X / X.shape[0], n_out)


def _constants(X: np.ndarray, gram: np.ndarray, n_out: int) -> KernelConstants:
    k_sq = n_out * float(np.mean(np.sum(X * X, axis=1)))
    return KernelConstants(k_sq=k_sq, lambda_max=_top_eigenvalue(gram))


def _top_eigenvalue(gram: np.ndarray) -> float:
    """An upper bound of lambda_max of a symmetric matrix, exact to rounding: Lanczos' top
    Ritz value theta plus its residual ||G v - theta v|| (an eigenvalue lies that close)."""
    if gram.shape[0] <= 64:
        return float(np.linalg.eigvalsh(gram)[-1])
    theta, v = eigsh(gram, k=1, which="LA", tol=1e-12, v0=np.ones(gram.shape[0]))
    residual = float(np.linalg.norm(gram @ v[:, 0] - theta[0] * v[:, 0]))
    return float(theta[0]) + residual


def exact_closure(cfg: ExperimentConfig, n_out: int) -> Closure:
    """The closure of the config's loss over ``n_out`` outputs (its ``upper`` is g_hi)."""
    name = cfg.loss.name
    if name == "mse":
        return get_closure("mse", a=1.0 / n_out)
    if name == "ce":
        return get_closure("ce", classes=n_out)
    return get_closure(name)


def is_exact_case(cfg: ExperimentConfig) -> bool:
    """A linear model trained by plain full-batch GD at a constant learning rate (no
    momentum, no weight decay, no warmup)."""
    o = cfg.optim
    return (
        cfg.model.kind == "linear"
        and cfg.full_batch
        and cfg.schedule.shape == "constant"
        and cfg.schedule.warmup == 0
        and o.name == "sgd"
        and o.momentum == 0
        and o.weight_decay == 0
        and cfg.loss.name in ("mse", "ce", "bce")
        and cfg.loss.label_smoothing == 0
    )


@dataclass(frozen=True, eq=False)
class ExactCheck:
    """Measured full-batch GD losses against the certified lower bounds."""

    constants: KernelConstants
    loss: np.ndarray  # measured L_k, k = 0 .. n-1
    bound_k: np.ndarray | None  # Lambda_k with phi_hi = K^2; None where the step is too large
    bound_lambda: np.ndarray | None  # Lambda_k with phi_hi = lambda_max (the tighter one)
    optimum: float | None  # minimum training loss (least squares; mse only)
    rho: np.ndarray  # measured Rayleigh quotient grad_sq / residual_sq per step
    notes: tuple[str, ...] = ()  # why a bound is not applicable

    def _bounds(self) -> list[np.ndarray]:
        return [b for b in (self.bound_k, self.bound_lambda) if b is not None]

    @property
    def margin(self) -> float:
        """min over k >= 1 of L_k minus the highest applicable bound (NaN with none);
        negative means a bound was crossed."""
        if not self._bounds() or self.loss.size < 2:
            return float("nan")
        highest = np.max(self._bounds(), axis=0)
        return float(np.min(self.loss[1:] - highest[1:]))

    @property
    def rho_ratio(self) -> float:
        """max_k rho_k / lambda_max: at most 1 (up to float32 rounding) by theory §1.2."""
        return float(np.nanmax(self.rho)) / self.constants.lambda_max

    @property
    def crossed(self) -> bool:
        """True when a measured loss fell below a certified bound or the optimum (beyond
        float32 rounding of the loss, 1e-6 relative), or rho exceeded lambda_max (by 1e-4)."""
        tol = 1e-6 * float(np.max(self.loss))
        below_opt = self.optimum is not None and float(np.min(self.loss)) < self.optimum - tol
        below = any(np.any(self.loss < b - tol) for b in self._bounds())
        return bool(below_opt or below or self.rho_ratio > 1 + 1e-4)

    def to_dict(self) -> dict[str, object]:
        """Summary, JSON-serialisable."""

        def last(b: np.ndarray | None) -> float | None:
            return None if b is None else float(b[-1])

        return {
            "k_sq": self.constants.k_sq,
            "lambda_max": self.constants.lambda_max,
            "final_loss": float(self.loss[-1]),
            "final_bound_k": last(self.bound_k),
            "final_bound_lambda": last(self.bound_lambda),
            "optimum": self.optimum,
            "margin": self.margin,
            "rho_max_over_lambda_max": self.rho_ratio,
            "crossed": self.crossed,
            "notes": list(self.notes),
        }

    def report(self) -> str:
        """A few lines for people."""
        return "\n".join(f"{k:>18}: {v}" for k, v in self.to_dict().items())


def certify(cfg: ExperimentConfig, data: Dataset, traj: Trajectory, n_out: int) -> ExactCheck:
    """Check a full-batch GD run of a linear model against its certified lower bounds.

    ``traj`` must log every step from 0; ``data`` is the training data the run used.
    """
    if not is_exact_case(cfg):
        raise InvalidArgumentError(
            f"experiment {cfg.name!r} is not an exact case; certify needs model.kind = 'linear', "
            "train.batch_size = 0 (full batch), plain SGD without momentum or weight decay, and "
            "a constant learning rate."
        )
    if not np.array_equal(traj.step, np.arange(traj.n)) or not traj.has("grad_sq"):
        raise InvalidArgumentError(
            "certify needs a trajectory logged at every step from 0, with grad_sq and residual_sq."
        )
    X = _design(data.x_train)
    gram = X.T @ X / X.shape[0]
    consts = _constants(X, gram, n_out)
    closure = exact_closure(cfg, n_out)
    notes: list[str] = []

    def bound(name: str, phi_hi: float) -> np.ndarray | None:
        try:
            sol = certified_lower_bound(
                closure, phi_hi, float(traj.loss[0]), traj.step, gd_lr=cfg.optim.lr
            )
        except InvalidArgumentError as exc:
            notes.append(f"{name} bound not applicable: {exc}")
            return None
        return np.asarray(sol.loss, dtype=float)

    optimum = None
    if cfg.loss.name == "mse":
        Y = targets_for(data.y_train, "mse", n_out).double().cpu().numpy().reshape(X.shape[0], -1)
        optimum = _least_squares_optimum(X, Y, gram)
    return ExactCheck(
        constants=consts,
        loss=traj.loss.copy(),
        bound_k=bound("K^2", consts.k_sq),
        bound_lambda=bound("lambda_max", consts.lambda_max),
        optimum=optimum,
        rho=np.asarray(traj.grad_sq) / np.asarray(traj.residual_sq),
        notes=tuple(notes),
    )


def _least_squares_optimum(X: np.ndarray, Y: np.ndarray, gram: np.ndarray) -> float:
    """min_W mean (X W - Y)^2 from the eigenpairs of the Gram matrix X^T X / n: ||Y||^2
    minus the squared norm of Y's projection onto the column space of X, over Y.size."""
    evals, evecs = np.linalg.eigh(gram)
    keep = evals > evals[-1] * 1e-12
    B = evecs[:, keep].T @ (X.T @ Y)
    projected = float(np.sum(B**2 / (X.shape[0] * evals[keep, None])))
    return max(float(np.sum(Y**2)) - projected, 0.0) / Y.size


def teacher_student(cfg: TeacherConfig) -> Dataset:
    """The synthetic linear teacher-student regression set (module docstring)."""
    g = np.random.default_rng(cfg.seed)
    W = g.standard_normal((cfg.outputs, cfg.dim)) / math.sqrt(cfg.dim)
    b = g.standard_normal(cfg.outputs)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = g.standard_normal((n, cfg.dim))
        y = x @ W.T + b + cfg.noise_std * g.standard_normal((n, cfg.outputs))
        return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.float32))

    xtr, ytr = draw(cfg.n_train)
    xte, yte = draw(cfg.n_test)
    info = DatasetInfo(
        "teacher_student",
        cfg.outputs,
        (cfg.dim,),
        cfg.n_train,
        cfg.n_test,
        f"synthetic(seed={cfg.seed})",
        "regression",
    )
    return Dataset(xtr, ytr, xte, yte, info)
