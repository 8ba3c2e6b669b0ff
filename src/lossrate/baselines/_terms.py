"""Schedule-derived quantities shared by the peer laws, computed exactly and vectorised.

Convention (the project's, see :mod:`lossrate.trajectory`): the loss logged at step s is
the loss after the updates 0 .. s-1, so every quantity below at step s uses the learning
rates eta_0 .. eta_{s-1} only. With n = s updates applied and the lr changes
d_k = eta_{k-1} - eta_k (k >= 1):

* forward area (intrinsic time)  S1(n) = sum_{j<n} eta_j = ``schedule.S(n)``;
* momentum annealing area        S2(n) = sum_{i=1}^{n-1} m_i,  m_i = lam m_{i-1} + d_i
  (Tissue et al. 2024), i.e. S2 = sum_{i<n} sum_{k<=i} d_k lam^(i-k);
* multi-power loss-drop sum      D(n) = sum_{k=1}^{n-1} d_k G(eta_k^-gamma S_k(n)),
  S_k(n) = sum_{tau=k}^{n-1} eta_tau,  G(x) = 1 - (C x + 1)^-beta  (Luo et al. 2025).

Only steps where the lr changes (d_k != 0) enter S2 and D. The "warmup" is every lr
change before the first decrease of the lr; ``include_warmup=False`` drops those changes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.signal import lfilter

from .._errors import InvalidArgumentError
from ..schedule import Schedule

__all__ = [
    "annealing_area",
    "drop_sum_seconds",
    "lr_changes",
    "multipower_drop",
    "whole_steps",
]

#: entries per (change point x query step) block of the loss-drop sum: 64 kB per array,
#: under glibc's 128 kB mmap threshold. At 512 kB every temporary was mapped and unmapped
#: afresh, and the page faults took 3-5 s of system time of auto's 9 s on a 10,000-step log.
_BLOCK = 1 << 13


def whole_steps(schedule: Schedule, steps: Any) -> np.ndarray:
    """``steps`` as int64 after checking they are whole numbers in [0, n_steps]."""
    s = np.asarray(steps)
    if s.ndim > 1:
        raise InvalidArgumentError(
            f"steps must be a 1-D array of optimizer steps, got shape {s.shape}."
        )
    s = np.atleast_1d(s)
    if s.size and (not np.issubdtype(s.dtype, np.number) or not np.all(np.isfinite(s))):
        raise InvalidArgumentError("steps must hold finite numbers (optimizer step indices).")
    si = np.rint(s).astype(np.int64) if s.size else s.astype(np.int64)
    if s.size and np.any(si != s):
        raise InvalidArgumentError("steps must be whole numbers (optimizer step indices).")
    if s.size and (si.min() < 0 or si.max() > schedule.n_steps):
        raise InvalidArgumentError(
            f"steps must lie in [0, {schedule.n_steps}] for this {schedule.n_steps}-step schedule, "
            f"got range [{int(si.min())}, {int(si.max())}]; extend the schedule (Schedule.extend) first."
        )
    return si


def lr_changes(
    schedule: Schedule, *, include_warmup: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices k >= 1 where the lr changes, with d_k = eta_{k-1} - eta_k and eta_k."""
    d = _decrements(schedule, include_warmup)
    k = np.flatnonzero(d)
    return k, d[k], schedule.lr[k]


def _decrements(schedule: Schedule, include_warmup: bool) -> np.ndarray:
    """d_k = eta_{k-1} - eta_k for every step (d_0 = 0), warmup changes zeroed if asked."""
    lr = schedule.lr
    d = np.zeros_like(lr)
    d[1:] = lr[:-1] - lr[1:]
    if not include_warmup:
        drops = np.flatnonzero(d > 0)
        d[: drops[0] if drops.size else d.size] = 0.0
    return d


def _changes(
    schedule: Schedule, include_warmup: bool, block: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`lr_changes`, lumped by ``block``, computed once per schedule: a fit evaluates
    the drop sum thousands of times under the same schedule (Schedule is immutable)."""
    cache = schedule.__dict__.setdefault("_lr_changes", {})
    key = (include_warmup, block)
    if key not in cache:
        k, d, eta = lr_changes(schedule, include_warmup=include_warmup)
        if block > 1 and k.size:
            k, d, eta = _lump(schedule, k, d, block)
        for a in (k, d, eta):
            a.setflags(write=False)
        cache[key] = (k, d, eta)
    return cache[key]  # type: ignore[no-any-return]


def drop_sum_seconds(schedule: Schedule, n: int, include_warmup: bool, block: int) -> float:
    """Estimated seconds of one :func:`multipower_drop` at ``n`` query steps (O(n x changes)
    vectorised work plus a fixed overhead), for :meth:`CurveModel.eval_seconds`. Measured on
    the real-log suite's 2,000-step schedules: 0.2-10 ms for 50-2,000 points."""
    changes = _changes(schedule, include_warmup, int(block))[0].size
    return 1e-4 + 4e-9 * n * changes


def _lump(
    schedule: Schedule, k: np.ndarray, d: np.ndarray, block: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The lr changes of each run of ``block`` steps as one (see :func:`multipower_drop`)."""
    starts = np.r_[0, np.flatnonzero(np.diff(k // block)) + 1]
    counts = np.diff(np.r_[starts, k.size])
    k_mid = k[starts + (counts - 1) // 2]
    d_sum = np.add.reduceat(d, starts)
    keep = d_sum != 0.0
    return k_mid[keep], d_sum[keep], schedule.lr[k_mid[keep]]


def annealing_area(
    schedule: Schedule, n: np.ndarray, *, decay: float, include_warmup: bool = True
) -> np.ndarray:
    """Momentum annealing area S2(n) (module docstring), O(steps) by a first-order filter."""
    m = lfilter([1.0], [1.0, -decay], _decrements(schedule, include_warmup))
    cum = np.concatenate([[0.0], np.cumsum(m)])
    return cum[n]


def multipower_drop(
    schedule: Schedule,
    n: np.ndarray,
    C: float,
    beta: float,
    gamma: float,
    *,
    include_warmup: bool = True,
    jacobian: bool = False,
    block: int = 1,
) -> tuple[np.ndarray, np.ndarray | None]:
    """D(n) = sum_k d_k G(eta_k^-gamma S_k(n)) and, with ``jacobian``, dD/d(C, beta, gamma).

    Vectorised over blocks of (change points x query steps), O(n_changes * n_query) work
    and bounded memory; change points after a query step contribute nothing (S_k = 0).
    ``block`` > 1 lumps the changes within each run of ``block`` steps into one at their
    middle change (summed d, the lr there): about ``block`` times less work for a schedule
    that changes every step (cosine), an error of order (block / relaxation time)^2 away
    from the changes and a lag of at most ``block`` steps next to them.
    Returns ``(D, J)`` with J of shape (len(n), 3) or None.
    """
    n = np.asarray(n, dtype=np.int64)
    out = np.zeros(n.shape)
    jac = np.zeros((n.size, 3)) if jacobian else None
    k, d, eta = _changes(schedule, include_warmup, int(block))
    if k.size == 0 or n.size == 0:
        return out, jac
    cum = schedule.cumulative
    order = np.argsort(n, kind="stable")
    n_sorted = n[order]
    S_end = cum[n_sorted]
    positive = eta > 0
    log_eta = np.log(np.where(positive, eta, 1.0))
    scale = C * np.exp(-gamma * log_eta)  # C eta_k^-gamma
    acc = np.zeros(n.size)
    acc_j = np.zeros((3, n.size)) if jacobian else None
    # cache-sized blocks of change points; the query steps before a block cannot see it
    rows = max(1, _BLOCK // n.size)
    for start in range(0, k.size, rows):
        sl = slice(start, start + rows)
        q0 = int(np.searchsorted(n_sorted, k[start], side="right"))
        if q0 >= n.size:
            break
        # S_k(n) = cum[n] - cum[k] >= 0, and exactly 0 once k >= n (cumsum is monotone)
        x = np.subtract(S_end[None, q0:], cum[k[sl]][:, None])
        np.maximum(x, 0.0, out=x)
        zero = ~positive[sl]
        reached = x[zero] > 0 if zero.any() else None
        x *= scale[sl][:, None]
        lx = np.log1p(x)
        P = np.exp(lx * -beta)  # (1 + x)^-beta = 1 - G
        if reached is not None:  # eta_k = 0: G = 1 wherever S_k > 0
            P[zero] = 1.0 - reached
        w = d[sl]
        acc[q0:] += w.sum() - w @ P
        if acc_j is not None:
            # x dG/dx = beta P x / (1 + x);  dG/dbeta = P log(1 + x)
            xdG = x / (1.0 + x)
            xdG *= P
            lx *= P
            if reached is not None:
                xdG[zero] = 0.0
                lx[zero] = 0.0
            acc_j[0, q0:] += (beta / C) * (w @ xdG)
            acc_j[1, q0:] += w @ lx
            acc_j[2, q0:] -= beta * ((w * log_eta[sl]) @ xdG)
    out[order] = acc
    if jac is not None and acc_j is not None:
        jac[order] = acc_j.T
    return out, jac
