"""Moving-block bootstrap of residuals, and the autocorrelation helpers it needs.

Residuals of a loss-curve fit are autocorrelated (smoothed logs, slow misfit), so an
i.i.d. residual bootstrap understates the spread. The moving-block bootstrap resamples
blocks of b consecutive residuals; b follows the AR(1) rule of Hall, Horowitz & Jing
(1995) / Bühlmann (2002):

    b = ceil( (2 rho / (1 - rho^2))^(2/3) n^(1/3) ),   rho = lag-1 autocorrelation,

clipped to [1, n/4] (b = 1, the plain residual bootstrap, when rho <= 0).
"""

from __future__ import annotations

import numpy as np

__all__ = ["block_length", "durbin_watson", "lag1_autocorrelation", "resample_blocks"]


def lag1_autocorrelation(e: np.ndarray) -> float:
    """Sample lag-1 autocorrelation of ``e`` (0 for fewer than 3 points or constant e)."""
    e = np.asarray(e, dtype=float)
    if e.size < 3:
        return 0.0
    d = e - e.mean()
    den = float(d @ d)
    if den <= 0:
        return 0.0
    return float(d[1:] @ d[:-1]) / den


def durbin_watson(e: np.ndarray) -> float:
    """Durbin–Watson statistic sum(diff(e)^2) / sum(e^2): 2 for white residuals, -> 0 when
    they are strongly positively autocorrelated (a systematic misfit or smoothed logs)."""
    e = np.asarray(e, dtype=float)
    den = float(e @ e)
    if e.size < 2 or den <= 0:
        return float("nan")
    return float(np.sum(np.diff(e) ** 2)) / den


def block_length(e: np.ndarray) -> int:
    """Block length for a moving-block bootstrap of the series ``e`` (module docstring)."""
    n = int(np.asarray(e).size)
    rho = lag1_autocorrelation(e)
    if rho <= 0 or n < 8:
        return 1
    rho = min(rho, 0.99)
    b = int(np.ceil((2 * rho / (1 - rho**2)) ** (2 / 3) * n ** (1 / 3)))
    return int(np.clip(b, 1, max(1, n // 4)))


def resample_blocks(e: np.ndarray, b: int, rng: np.random.Generator) -> np.ndarray:
    """One moving-block resample of ``e`` (same length), blocks of length ``b``."""
    n = e.size
    if b <= 1:
        return e[rng.integers(0, n, n)]
    n_blocks = -(-n // b)
    starts = rng.integers(0, n - b + 1, n_blocks)
    idx = (starts[:, None] + np.arange(b)[None, :]).ravel()[:n]
    return e[idx]
