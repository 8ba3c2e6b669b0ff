"""Per-sample losses and squared output-gradient norms in numpy (no torch needed).

Each function returns ``(loss, r_sq)`` with ``loss[i] = l_i`` and ``r_sq[i] = ||r_i||^2``,
r_i = d l_i / d z_i, computed stably: CE's l = logsumexp(z) - z_y as log1p of the other classes' weights when
y is the argmax, q = 1 - p_y = -expm1(-l) rather than 1 - p_y (which cancels when p_y ~ 1),
and for BCE l = max(z, 0) - t z + log1p(e^{-|z|}) and r = -sigmoid(-z) for a label of 1.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import expit, log_softmax, softmax, xlogy

from .._errors import InvalidArgumentError

__all__ = ["bce_per_sample", "ce_per_sample", "smoothed_targets", "soft_ce_per_sample"]


def _logits(logits: Any) -> np.ndarray:
    z = np.asarray(logits, dtype=float)
    if z.ndim != 2 or z.shape[1] < 2:
        raise InvalidArgumentError(
            f"logits must have shape (n, C) with C >= 2 classes, got shape {z.shape}."
        )
    if not np.all(np.isfinite(z)):
        raise InvalidArgumentError("logits hold NaN or inf; remove or fill them first.")
    return z


def ce_per_sample(logits: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Softmax CE with integer labels: l_i = -log p_{i, y_i}, ||r_i||^2 = ||p_i - e_{y_i}||^2,
    computed as q^2 + sum_{k != y} p_k^2 with q = -expm1(-l)."""
    z = _logits(logits)
    y = np.asarray(labels)
    n, C = z.shape
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer) or np.any((y < 0) | (y >= C)):
        raise InvalidArgumentError(
            f"labels must be {n} integers in [0, {C}) (one per row of logits), got "
            f"shape {y.shape}, dtype {y.dtype}."
        )
    rows = np.arange(n)
    m = z.max(axis=1)
    e = np.exp(z - m[:, None])
    e_y = e[rows, y].copy()
    e[rows, y] = 0.0
    # l = logsumexp(z) - z_y = (m - z_y) + log1p(sum_{k != y} e_k + expm1(z_y - m)): when y
    # is the argmax this is log1p(sum_{k != y} e_k), exact for confident logits
    loss = (m - z[rows, y]) + np.log1p(e.sum(axis=1) + np.expm1(z[rows, y] - m))
    s = e.sum(axis=1) + e_y
    q = -np.expm1(-loss)
    return loss, q**2 + ((e / s[:, None]) ** 2).sum(axis=1)


def bce_per_sample(logits: Any, targets: Any) -> tuple[np.ndarray, np.ndarray]:
    """BCE on logits, elementwise: l = softplus(z) - t z, r^2 = (sigmoid(z) - t)^2.

    For hard targets t in {0, 1}, r^2 = (1 - e^{-l})^2 exactly (theory §2.3)."""
    z = np.asarray(logits, dtype=float)
    t = np.asarray(targets, dtype=float)
    if z.shape != t.shape:
        raise InvalidArgumentError(
            f"targets must have the shape of logits {z.shape}, got {t.shape}."
        )
    if not (np.all(np.isfinite(z)) and np.all((t >= 0) & (t <= 1))):
        raise InvalidArgumentError("logits must be finite and targets must lie in [0, 1].")
    # softplus(z) - t z written so that neither term cancels for a hard target
    loss = np.maximum(z, 0.0) - t * z + np.log1p(np.exp(-np.abs(z)))
    r = np.where(t == 1.0, -expit(-z), expit(z) - t)
    return loss, r**2


def smoothed_targets(labels: Any, classes: int, epsilon: float) -> np.ndarray:
    """Label-smoothed targets y^eps = (1 - eps) e_y + eps/C, shape (n, C)."""
    y = np.asarray(labels)
    q = np.full((y.shape[0], classes), epsilon / classes)
    q[np.arange(y.shape[0]), y] += 1.0 - epsilon
    return q


def soft_ce_per_sample(logits: Any, targets: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Softmax CE with target distributions q_i (rows summing to 1):
    l_i = -sum_k q_ik log p_ik, KL_i = KL(q_i || p_i) = l_i - H(q_i), ||r_i||^2 = ||p_i - q_i||^2.

    Returns (loss, r_sq, kl)."""
    z = _logits(logits)
    q = np.asarray(targets, dtype=float)
    if q.shape != z.shape or np.any(q < 0) or not np.allclose(q.sum(axis=1), 1.0, atol=1e-9):
        raise InvalidArgumentError(
            f"targets must be probability rows of shape {z.shape} (>= 0, summing to 1), got "
            f"shape {q.shape}."
        )
    logp = log_softmax(z, axis=1)
    loss = -(q * logp).sum(axis=1)
    kl = (xlogy(q, q) - q * logp).sum(axis=1)
    r_sq = ((softmax(z, axis=1) - q) ** 2).sum(axis=1)
    return loss, r_sq, np.maximum(kl, 0.0)
