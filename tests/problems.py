"""Shared analytic cases of dL/dt = -phi(t) g(L): closed forms written independently of the
library's G / G_inv (theory §3, §4.3), used by the solver, rate and bound tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.special import wrightomega

from lossrate.closures import get_closure
from lossrate.closures.base import Closure
from lossrate.rates import PowerLaw
from lossrate.rates.base import RateModel

#: the F1 rate shared by the cases: phi = 0.8 (1 + t/5)^-0.7
PHI0, T0, BETA = 0.8, 5.0, 0.7


def rel(a: object, b: object) -> float:
    """Largest relative difference |a - b| / |b| (|b| floored at 1e-300)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def power_law_Phi(
    t: np.ndarray, phi0: float = PHI0, t0: float = T0, beta: float = BETA
) -> np.ndarray:
    """F1 integral written out: phi0 t0/(1-beta) [(1+t/t0)^(1-beta) - 1] (log at beta = 1)."""
    t = np.asarray(t, dtype=float)
    if beta == 1.0:
        return phi0 * t0 * np.log1p(t / t0)
    return phi0 * t0 / (1.0 - beta) * ((1.0 + t / t0) ** (1.0 - beta) - 1.0)


@dataclass(frozen=True)
class Case:
    """A closure, a rate and L0 with the exact loss as a function of Phi."""

    id: str
    closure: Closure
    L0: float
    exact_of_Phi: Callable[[np.ndarray], np.ndarray]
    t_end: float = 40.0

    @property
    def rate(self) -> RateModel:
        return PowerLaw(PHI0, T0, BETA)

    @property
    def t(self) -> np.ndarray:
        return np.linspace(0.0, self.t_end, 41)

    def exact(self, t: np.ndarray) -> np.ndarray:
        return self.exact_of_Phi(power_law_Phi(t))


def _power(c: float, k: float, floor: float, L0: float) -> Callable[[np.ndarray], np.ndarray]:
    x0 = L0 - floor

    def f(P: np.ndarray) -> np.ndarray:
        if k == 1.0:
            return floor + x0 * np.exp(-c * P)
        if k > 1.0:
            return floor + (x0 ** (1 - k) + (k - 1) * c * P) ** (-1.0 / (k - 1))
        return floor + np.maximum(x0 ** (1 - k) - (1 - k) * c * P, 0.0) ** (1.0 / (1 - k))

    return f


def _ce(alpha: float, L0: float) -> Callable[[np.ndarray], np.ndarray]:
    v0 = np.expm1(L0)
    return lambda P: np.log1p(1.0 / np.real(wrightomega(alpha * P + 1.0 / v0 - np.log(v0))))


CASES: list[Case] = [
    Case("mse_exp", get_closure("mse", a=0.5), 2.0, lambda P: 2.0 * np.exp(-2.0 * P)),
    Case(
        "linear_floor",
        get_closure("mse", a=0.25, floor=0.3),
        2.5,
        lambda P: 0.3 + 2.2 * np.exp(-1.0 * P),
    ),
    *[
        Case(
            f"power_k{k}",
            get_closure("power", c=1.2, k=k, floor=0.1),
            2.0,
            _power(1.2, k, 0.1, 2.0),
        )
        for k in (0.5, 1.0, 2.0, 3.5)
    ],
    Case("ce_wright_omega", get_closure("ce", classes=10, alpha=1.5), 6.0, _ce(1.5, 6.0)),
    Case("mae", get_closure("mae"), 3.0, lambda P: np.maximum(3.0 - P, 0.0), t_end=20.0),
]

#: cases whose floor is reached at a finite time
FINITE_HIT = {"power_k0.5", "mae"}


def case(name: str) -> Case:
    """The case with this id."""
    return next(c for c in CASES if c.id == name)


def linear_regression(n: int = 200, d: int = 20, noise: float = 0.3, seed: int = 0):
    """A least-squares problem L(w) = |X w - y|^2 / (2n): per-sample l_i = (x_i.w - y_i)^2 / 2,
    so the MSE closure has a = 1/2, R = 2L and K^2 = trace(X^T X)/n = mean |x_i|^2."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = X @ rng.standard_normal(d) + noise * rng.standard_normal(n)
    return X, y


def gd_losses(X: np.ndarray, y: np.ndarray, lr: float, steps: int) -> np.ndarray:
    """Full-batch gradient descent from w = 0: the loss before each step 0..steps."""
    n, d = X.shape
    w = np.zeros(d)
    out = np.empty(steps + 1)
    for k in range(steps + 1):
        r = X @ w - y
        out[k] = r @ r / (2 * n)
        w = w - lr * (X.T @ r) / n
    return out
