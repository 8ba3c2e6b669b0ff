"""Rates measured from a recorded trajectory: rho, the closure ratio c and phi_hat, and the
gradient-noise statistics that make them unbiased.

With the recorder's columns (theory §1.2-1.3, intrinsic time t = sum of learning rates)

    rho     = pgrad_sq / residual_sq     (Rayleigh quotient of the preconditioned kernel)
    c       = residual_sq / g(L)         (closure ratio; 1 for MSE)
    phi_hat = pgrad_sq / g(L) = rho c    (the rate the closure g needs: dL/dt = -phi_hat g(L))

These are measured independently of the loss curve, so they test the ODE out of sample
(theory §4.1) instead of fitting it.

**Mini-batch bias (theory §4.2).** ``pgrad_sq`` of the trajectory comes from one mini-batch:
E||grad L_B||^2 = ||grad L||^2 + tr(Sigma_g) / B, so on small batches phi_hat is too large,
often by 10-100x. A run recorded with gradient groups (micro-batches under gradient
accumulation, the ranks of DDP, or the opt-in two-half-batch mode of
:class:`lossrate.torch.GradientGroups`) also has ``gradient_noise.csv`` beside
``trajectory.csv`` (:func:`read_gradient_noise`), with per step, from K >= 2 group gradients
G_k of b_k samples each, combined with weights w_k (sum w_k = 1) into the step's gradient
G = sum_k w_k G_k:

    grad_sq       = (||G||^2 - sum_k w_k^2 ||G_k||^2) / (1 - sum_k w_k^2)
                  = sum_{j != k} w_j w_k <G_j, G_k> / sum_{j != k} w_j w_k
    trace_sigma   = (1/K) sum_k b_k (||G_k||^2 - grad_sq)

unbiased for ||grad L||^2 and for tr(Sigma_g) (the per-sample gradient covariance) when the
groups are independent draws; the same with <., P .> gives ``pgrad_sq`` (grad L^T P grad L)
and ``ptrace_sigma`` (tr(P Sigma_g)). Two equal halves give grad_sq = <G_1, G_2>.
:func:`measured_rates` uses the debiased ``pgrad_sq`` when it is given the noise columns.
:func:`lossrate.readers.read_log` attaches it to the trajectory it reads (the column
``pgrad_sq_debiased``), and the ``ode`` models' prefix fits start their rate family from it.

**Standard errors** (``*_se``) come from the step-to-step scatter: the batch noise of
consecutive steps is independent, and second differences x_k - 2 x_{k-1} + x_{k-2} cancel a
linearly drifting true value, so se^2 = mean((Delta^2 x)^2) / 6 over the last ``window``
steps. This works for any K (with K = 2 the spread within one step cannot be estimated);
it over-states the error where the true value curves sharply within three steps.

**Gradient noise scale** B_noise = tr(Sigma_g) / ||grad L||^2 (McCandlish et al. 2018,
"An Empirical Model of Large-Batch Training"): the recorded column is the ratio of the
trailing ``window``-step means (the ratio of noisy per-step values is biased), with a 95 %
interval from the two means' standard errors (delta method in log space); its upper end
is inf while the mean of grad_sq is within two standard errors of 0. :func:`noise_scale`
summarises a run (by default its last quarter) into one estimate with an interval.
"""

from __future__ import annotations

import math
import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._errors import DataError, InvalidArgumentError
from .closures.base import Closure
from .trajectory import Trajectory

__all__ = [
    "NOISE_COLUMNS",
    "NOISE_FILENAME",
    "GradientNoise",
    "MeasuredRates",
    "NoiseScale",
    "group_estimates",
    "measured_rates",
    "noise_path",
    "noise_scale",
    "read_gradient_noise",
]

NOISE_FILENAME = "gradient_noise.csv"
NOISE_FORMAT = "lossrate-gradient-noise v1"
#: the columns of ``gradient_noise.csv``, in file order
NOISE_COLUMNS = (
    "step",
    "groups",
    "batch_size",
    "grad_sq_raw",
    "grad_sq",
    "grad_sq_se",
    "pgrad_sq_raw",
    "pgrad_sq",
    "pgrad_sq_se",
    "trace_sigma",
    "trace_sigma_se",
    "ptrace_sigma",
    "noise_scale",
    "noise_scale_lo",
    "noise_scale_hi",
    "update_dot",
)
#: steps in the trailing windows of the standard errors and of the smoothed noise scale
SE_WINDOW = 25
_Z95 = 1.959963984540054


@dataclass(frozen=True)
class MeasuredRates:
    """Per-step measured rates (arrays aligned with the trajectory's rows).

    Attributes:
        step, t: the trajectory's steps and intrinsic times.
        rho: pgrad_sq / residual_sq.
        closure_ratio: residual_sq / g(L).
        phi_hat: pgrad_sq / g(L) (debiased when the noise columns were given; may then be
            negative on single steps, as an unbiased estimate of a small rate can be).
        debiased: whether phi_hat and rho use the debiased pgrad_sq.
    """

    step: np.ndarray
    t: np.ndarray
    rho: np.ndarray
    closure_ratio: np.ndarray
    phi_hat: np.ndarray
    debiased: bool = False


def group_estimates(
    *,
    total_sq: float,
    sum_w2: float,
    sum_group_sq: float,
    groups: int,
    sum_b: float,
    sum_b_group_sq: float,
) -> tuple[float, float]:
    """(||grad L||^2, tr Sigma_g) estimates from one step's K gradient groups (see the module).

    Args:
        total_sq: ||G||^2 of the combined gradient G = sum_k w_k G_k (or G^T P G).
        sum_w2: sum_k w_k^2 (< 1: at least two groups with weight).
        sum_group_sq: sum_k w_k^2 ||G_k||^2 (= sum_k ||w_k G_k||^2, the groups' increments).
        groups: K.
        sum_b: sum_k b_k, the step's samples.
        sum_b_group_sq: sum_k b_k ||G_k||^2.

    Returns:
        (grad_sq, trace_sigma), unbiased for independent groups.
    """
    if groups < 2 or not sum_w2 < 1.0:
        raise InvalidArgumentError(
            f"an unbiased gradient norm needs at least 2 gradient groups, got groups={groups} "
            f"(sum of squared weights {sum_w2!r}); mark each micro-batch or half-batch."
        )
    u = (total_sq - sum_group_sq) / (1.0 - sum_w2)
    return u, (sum_b_group_sq - u * sum_b) / groups


class _ScatterSE:
    """Streaming standard error from the last ``window`` squared second differences / 6."""

    def __init__(self, window: int) -> None:
        self._last: deque[float] = deque(maxlen=2)
        self._sq: deque[float] = deque(maxlen=window)

    def push(self, x: float) -> float:
        if not math.isfinite(x):
            return math.nan
        if len(self._last) == 2:
            d2 = x - 2.0 * self._last[1] + self._last[0]
            self._sq.append(d2 * d2 / 6.0)
        self._last.append(x)
        return math.sqrt(sum(self._sq) / len(self._sq)) if self._sq else math.nan


class _Mean:
    """Trailing mean over the last ``window`` values."""

    def __init__(self, window: int) -> None:
        self._v: deque[float] = deque(maxlen=window)

    def push(self, x: float) -> tuple[float, int]:
        if math.isfinite(x):
            self._v.append(x)
        return (sum(self._v) / len(self._v) if self._v else math.nan), len(self._v)


def _ratio_interval(
    num: float, num_se: float, den: float, den_se: float
) -> tuple[float, float, float]:
    """num / den with a 95 % interval (delta method in log space; inf where den ~ 0)."""
    if not (math.isfinite(num) and math.isfinite(den)) or num <= 0:
        return math.nan, math.nan, math.nan
    if den <= 0:
        return math.inf, math.nan, math.inf
    est = num / den
    if not (math.isfinite(num_se) and math.isfinite(den_se)):
        return est, math.nan, math.nan
    rel = math.hypot(num_se / num, den_se / den)
    hi = math.inf if den - 2.0 * den_se <= 0 else est * math.exp(_Z95 * rel)
    return est, est * math.exp(-_Z95 * rel), hi


class NoiseRows:
    """Builds the rows of ``gradient_noise.csv`` one step at a time (used by the Recorder):
    the standard errors and the smoothed noise scale of the module docstring."""

    def __init__(self, window: int = SE_WINDOW) -> None:
        self._se = {k: _ScatterSE(window) for k in ("grad_sq", "pgrad_sq", "trace_sigma")}
        self._mean = {k: _Mean(window) for k in ("grad_sq", "trace_sigma")}

    def row(
        self,
        step: int,
        *,
        groups: int,
        batch_size: float,
        grad_sq_raw: float,
        grad_sq: float,
        pgrad_sq_raw: float,
        pgrad_sq: float,
        trace_sigma: float,
        ptrace_sigma: float,
        update_dot: float = math.nan,
    ) -> tuple[float, ...]:
        se = {k: s.push(v) for k, s, v in self._items(grad_sq, pgrad_sq, trace_sigma)}
        mu, n_u = self._mean["grad_sq"].push(grad_sq)
        ms, n_s = self._mean["trace_sigma"].push(trace_sigma)
        b = _ratio_interval(
            ms,
            se["trace_sigma"] / math.sqrt(max(n_s, 1)),
            mu,
            se["grad_sq"] / math.sqrt(max(n_u, 1)),
        )
        return (
            float(step),
            float(groups),
            float(batch_size),
            grad_sq_raw,
            grad_sq,
            se["grad_sq"],
            pgrad_sq_raw,
            pgrad_sq,
            se["pgrad_sq"],
            trace_sigma,
            se["trace_sigma"],
            ptrace_sigma,
            *b,
            update_dot,
        )

    def _items(self, *values: float) -> list[tuple[str, _ScatterSE, float]]:
        return [(k, s, v) for (k, s), v in zip(self._se.items(), values)]


@dataclass(frozen=True, eq=False)
class GradientNoise:
    """The columns of ``gradient_noise.csv`` (arrays aligned by step; see the module).

    ``grad_sq``/``pgrad_sq`` are the debiased estimates, ``*_raw`` the mini-batch ones,
    ``trace_sigma`` tr(Sigma_g) per sample, ``ptrace_sigma`` tr(P Sigma_g), ``noise_scale``
    the smoothed B_noise with its 95 % interval [``noise_scale_lo``, ``noise_scale_hi``],
    ``update_dot`` <theta_k - theta_{k-1}, G_k> (the previous update against this step's
    mini-batch gradient; NaN at the first step).
    """

    step: np.ndarray
    groups: np.ndarray
    batch_size: np.ndarray
    grad_sq_raw: np.ndarray
    grad_sq: np.ndarray
    grad_sq_se: np.ndarray
    pgrad_sq_raw: np.ndarray
    pgrad_sq: np.ndarray
    pgrad_sq_se: np.ndarray
    trace_sigma: np.ndarray
    trace_sigma_se: np.ndarray
    ptrace_sigma: np.ndarray
    noise_scale: np.ndarray
    noise_scale_lo: np.ndarray
    noise_scale_hi: np.ndarray
    update_dot: np.ndarray

    @classmethod
    def from_rows(cls, rows: np.ndarray) -> GradientNoise:
        rows = np.asarray(rows, dtype=float).reshape(-1, len(NOISE_COLUMNS))
        return cls(**{k: rows[:, i].copy() for i, k in enumerate(NOISE_COLUMNS)})

    def aligned(self, steps: np.ndarray) -> GradientNoise:
        """The rows at ``steps`` (NaN where a step has no row)."""
        idx = {int(s): i for i, s in enumerate(self.step)}
        take = np.array([idx.get(int(s), -1) for s in steps])
        out = {}
        for k in NOISE_COLUMNS:
            col = getattr(self, k)
            out[k] = np.where(take >= 0, col[np.maximum(take, 0)], np.nan)
        out["step"] = np.asarray(steps, dtype=float)
        return GradientNoise(**out)


def noise_path(run: str | os.PathLike[str]) -> Path:
    """``gradient_noise.csv`` of a run folder, or beside a trajectory file."""
    p = Path(run)
    return p / NOISE_FILENAME if p.is_dir() else p.with_name(NOISE_FILENAME)


def read_gradient_noise(run: str | os.PathLike[str]) -> GradientNoise:
    """Read ``gradient_noise.csv`` of a run folder (or the one beside a trajectory file).

    Raises:
        DataError: the file is missing (the run was recorded without gradient groups: use
            lossrate.torch.GradientGroups / DDPGradients), or malformed.
    """
    path = noise_path(run)
    if not path.exists():
        raise DataError(
            f"{str(path)!r} does not exist: the run was recorded without gradient groups, so it "
            "has no debiased gradient norm or tr(Sigma_g). Record it with "
            "lossrate.torch.GradientGroups (gradient accumulation, or the two-half-batch mode "
            "GradientGroups.split) or DDPGradients(ddp_model), passed to "
            "gradient_metrics(..., groups=...); with the callbacks' debias='accumulation' (or "
            "'ddp'); or with lossrate train and train.gradient_groups = 2 in the config."
        )
    lines = path.read_text().splitlines()
    if len(lines) < 2 or not lines[0].startswith("#") or lines[1] != ",".join(NOISE_COLUMNS):
        raise DataError(
            f"{str(path)!r} is not a gradient-noise file (expected the header "
            f"{','.join(NOISE_COLUMNS)!r}); re-record the run."
        )
    try:
        rows = np.array(
            [[float(c) for c in ln.split(",")] for ln in lines[2:] if ln], dtype=float
        ).reshape(-1, len(NOISE_COLUMNS))
    except ValueError:
        raise DataError(
            f"{str(path)!r} holds a row that is not {len(NOISE_COLUMNS)} numbers."
        ) from None
    return GradientNoise.from_rows(rows)


@dataclass(frozen=True)
class NoiseScale:
    """The gradient noise scale B_noise = tr(Sigma_g) / ||grad L||^2 over a span of steps.

    Attributes:
        estimate: mean tr(Sigma_g) / mean grad_sq over the span (inf when the mean grad_sq
            is <= 0).
        lower, upper: its 95 % interval (upper inf when grad_sq is not resolved from 0).
        batch_size: the run's median batch size over the span.
        ratio: batch_size / estimate (< 1: below the noise scale, where a larger batch
            still buys almost proportionally fewer steps).
        steps: (first, last) step of the span.
    """

    estimate: float
    lower: float
    upper: float
    batch_size: float
    ratio: float
    steps: tuple[int, int]

    def describe(self) -> str:
        """One line for people."""
        hi = "inf" if math.isinf(self.upper) else f"{self.upper:.3g}"
        return (
            f"gradient noise scale B_noise = {self.estimate:.3g} [95 % {self.lower:.3g}, {hi}] "
            f"(steps {self.steps[0]}-{self.steps[1]}); the batch size {self.batch_size:g} is "
            f"{self.ratio:.2g}x B_noise"
        )


def noise_scale(noise: GradientNoise, *, last: float = 0.25) -> NoiseScale:
    """B_noise over the last fraction ``last`` of the recorded steps (see :class:`NoiseScale`).

    The interval comes from the spread of the per-step values over the span (steps are
    independent draws; a drift of the true values over the span widens it).

    Raises:
        InvalidArgumentError: ``last`` outside (0, 1].
        DataError: fewer than 3 finite rows in the span.
    """
    if not (isinstance(last, int | float) and 0 < last <= 1):
        raise InvalidArgumentError(
            f"last must be a fraction in (0, 1] of the recorded steps, got {last!r}."
        )
    n = noise.step.size
    sel = slice(n - max(math.ceil(last * n), 1), n)
    u, s = noise.grad_sq[sel], noise.trace_sigma[sel]
    ok = np.isfinite(u) & np.isfinite(s)
    if ok.sum() < 3:
        raise DataError(
            f"the noise scale needs at least 3 steps with gradient groups in the last {last:g} "
            f"of the run, got {int(ok.sum())}; record more steps or pass a larger last."
        )
    u, s = u[ok], s[ok]
    m = int(ok.sum())
    est, lo, hi = _ratio_interval(
        float(s.mean()),
        float(s.std(ddof=1)) / math.sqrt(m),
        float(u.mean()),
        float(u.std(ddof=1)) / math.sqrt(m),
    )
    bs = float(np.nanmedian(noise.batch_size[sel]))
    steps = noise.step[sel][ok]
    return NoiseScale(
        est, lo, hi, bs, bs / est if est > 0 else math.nan, (int(steps[0]), int(steps[-1]))
    )


def measured_rates(
    traj: Trajectory, closure: Closure, noise: GradientNoise | None = None
) -> MeasuredRates:
    """rho, c and phi_hat of every logged step of ``traj`` under ``closure`` (see the module).

    With ``noise`` (:func:`read_gradient_noise`) phi_hat and rho use the debiased pgrad_sq
    (NaN at steps without a row); without it the mini-batch pgrad_sq, biased upward by
    tr(P Sigma_g) / B.

    Raises:
        DataError: ``traj`` lacks the residual_sq or pgrad_sq column (record it with
            lossrate.torch.InstrumentedLoss and gradient_metrics(model, optimizer)), or
            ``noise`` has no finite debiased pgrad_sq (recorded without an optimizer).
    """
    for name in ("residual_sq", "pgrad_sq"):
        if not traj.has(name):
            raise DataError(
                f"the trajectory has no measured {name!r}; record the run with "
                "lossrate.torch (InstrumentedLoss for residual_sq, gradient_metrics(model, "
                "optimizer) for pgrad_sq)."
            )
    pgrad = traj.pgrad_sq
    if noise is not None:
        pgrad = noise.aligned(traj.step).pgrad_sq
        if not np.isfinite(pgrad).any():
            raise DataError(
                "the gradient-noise file has no debiased pgrad_sq at the trajectory's steps; "
                "record it with gradient_metrics(model, optimizer, groups=...) (an optimizer is "
                "needed for P)."
            )
    g = np.asarray(closure.g(traj.loss), dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv_g = np.where(g > 0, 1.0 / np.where(g > 0, g, 1.0), np.nan)
        rho = np.where(traj.residual_sq > 0, pgrad / traj.residual_sq, np.nan)
    return MeasuredRates(
        step=traj.step,
        t=traj.t,
        rho=rho,
        closure_ratio=traj.residual_sq * inv_g,
        phi_hat=pgrad * inv_g,
        debiased=noise is not None,
    )
