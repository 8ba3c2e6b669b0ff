"""Rates measured from a recorded trajectory: rho, the closure ratio c and phi_hat.

With the recorder's columns (theory §1.2-1.3, intrinsic time t = sum of learning rates)

    rho     = pgrad_sq / residual_sq     (Rayleigh quotient of the preconditioned kernel)
    c       = residual_sq / g(L)         (closure ratio; 1 for MSE)
    phi_hat = pgrad_sq / g(L) = rho c    (the rate the closure g needs: dL/dt = -phi_hat g(L))

These are measured independently of the loss curve, so they test the ODE out of sample
(theory §4.1) instead of fitting it. ``pgrad_sq`` comes from one mini-batch and is biased
upward by tr(Sigma_g) / B (theory §4.2); no correction is applied here. Entries are NaN where
a column was not measured or g(L) = 0 (at the closure's floor).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._errors import DataError
from .closures.base import Closure
from .trajectory import Trajectory

__all__ = ["MeasuredRates", "measured_rates"]


@dataclass(frozen=True)
class MeasuredRates:
    """Per-step measured rates (arrays aligned with the trajectory's rows).

    Attributes:
        step, t: the trajectory's steps and intrinsic times.
        rho: pgrad_sq / residual_sq.
        closure_ratio: residual_sq / g(L).
        phi_hat: pgrad_sq / g(L).
    """

    step: np.ndarray
    t: np.ndarray
    rho: np.ndarray
    closure_ratio: np.ndarray
    phi_hat: np.ndarray


def measured_rates(traj: Trajectory, closure: Closure) -> MeasuredRates:
    """rho, c and phi_hat of every logged step of ``traj`` under ``closure`` (see the module).

    Raises:
        DataError: ``traj`` lacks the residual_sq or pgrad_sq column (record it with
            lossrate.torch.InstrumentedLoss and gradient_metrics(model, optimizer)).
    """
    for name in ("residual_sq", "pgrad_sq"):
        if not traj.has(name):
            raise DataError(
                f"the trajectory has no measured {name!r}; record the run with "
                "lossrate.torch (InstrumentedLoss for residual_sq, gradient_metrics(model, "
                "optimizer) for pgrad_sq)."
            )
    g = np.asarray(closure.g(traj.loss), dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv_g = np.where(g > 0, 1.0 / np.where(g > 0, g, 1.0), np.nan)
        rho = np.where(traj.residual_sq > 0, traj.pgrad_sq / traj.residual_sq, np.nan)
    return MeasuredRates(
        step=traj.step,
        t=traj.t,
        rho=rho,
        closure_ratio=traj.residual_sq * inv_g,
        phi_hat=traj.pgrad_sq * inv_g,
    )
