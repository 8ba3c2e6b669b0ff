"""A long log binned by step before it is fitted, so that reading, fitting and the report
cost the same for 5 million logged rows as for 20 thousand.

A log with more rows than ``max_points`` is cut into bins of consecutive logged steps.
The bin edges are the union of ``K`` log-spaced and ``K`` evenly spaced edges in
``step - step_0`` (``K = max_points // 2``): narrow bins early, where the loss falls
fastest, and evenly spread ones over the whole run (a late lr decay keeps its shape);
empty bins are dropped, so at most ``max_points`` points remain. Each bin becomes one point:

* ``step``: the mean of its steps, rounded (bins do not overlap, so steps stay increasing);
* ``loss``: the mean of its losses, weighted by ``batch_size`` when every row logged one,
  i.e. the mean loss of all the samples the bin's rows averaged;
* ``loss_std``: the population std of all those samples, pooled from each row's mean and
  std, ``s^2 = sum_i w_i (s_i^2 + (L_i - M)^2) / sum_i w_i`` with ``M`` the weighted mean
  of the losses of the rows that logged a std (exact for equal-size batches, or with
  ``batch_size``);
* ``t`` and ``lr``: the per-row values interpolated at the point's step; ``t = sum(lr)``
  is built from every row before binning, so each point's intrinsic time is exact;
* every other column (``grad_sq``, ``wall_s``, ``test_loss``, ...): the mean of the
  values logged in the bin (NaN where none was).

The scatter of a binned loss is that of a bin mean, smaller than that of one logged loss.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._errors import InvalidArgumentError

__all__ = ["DEFAULT_MAX_POINTS", "bin_by_step", "check_max_points"]

#: Logs with more rows than this are binned (:func:`bin_by_step`); the fits thin further
#: on their own (auto fits 300 points), so 20,000 keeps every figure detailed.
DEFAULT_MAX_POINTS = 20_000
_MIN_POINTS = 100


def check_max_points(value: Any) -> int | None:
    """``max_points`` as given (a whole number >= 100, or None: never bin)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < _MIN_POINTS:
        raise InvalidArgumentError(
            f"max_points must be a whole number >= {_MIN_POINTS} (logs with more rows are binned "
            f"by step) or None (never bin), got {value!r}."
        )
    return int(value)


def bin_index(step: np.ndarray, max_points: int) -> np.ndarray:
    """The bin of each row (0, 1, ... without gaps; module docstring) for sorted ``step``."""
    s0, span = float(step[0]), float(step[-1] - step[0])
    k = max(max_points // 2, 2)
    edges = np.union1d(np.geomspace(1.0, span + 1.0, k) - 1.0, np.linspace(0.0, span, k)) + s0
    # bin j holds edges[j-1] < step <= edges[j] (the first edge closes the first bin)
    idx = np.searchsorted(edges, step, side="left")
    new = np.ones(idx.size, dtype=bool)
    np.not_equal(idx[1:], idx[:-1], out=new[1:])
    return np.cumsum(new, out=idx) - 1


def bin_by_step(
    step: np.ndarray,
    loss: np.ndarray,
    lr: np.ndarray | None,
    t: np.ndarray | None,
    cols: dict[str, np.ndarray],
    max_points: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, dict[str, np.ndarray]]:
    """Bin the rows of a log sorted by step (module docstring); returns the binned
    ``(step, loss, lr, t, cols)``. Temporaries are kept to a few columns' worth."""
    idx = bin_index(step, max_points)
    m = int(idx[-1]) + 1
    count = np.bincount(idx, minlength=m).astype(np.float64)

    def total(a: np.ndarray | None = None) -> np.ndarray:
        return count if a is None else np.bincount(idx, weights=a, minlength=m)

    out_step = np.floor(total(np.asarray(step, dtype=np.float64)) / count + 0.5)
    bs = cols.get("batch_size")
    w = bs if bs is not None and bool(np.all(np.isfinite(bs) & (bs > 0))) else None
    w_sum = total(w)
    out_loss = total(loss if w is None else w * loss) / w_sum
    out: dict[str, np.ndarray] = {}
    for name, a in cols.items():
        if name == "loss_std":
            out[name] = _pooled_std(idx, m, loss, a, w)
            continue
        ok = np.isfinite(a)
        if ok.all():
            out[name] = total(a) / count
            continue
        n_ok = total(ok.astype(np.float64))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[name] = np.where(n_ok > 0, total(np.where(ok, a, 0.0)) / n_ok, np.nan)
    out_lr = None if lr is None else np.interp(out_step, step, lr)
    out_t = None if t is None else np.interp(out_step, step, t)
    return out_step, out_loss, out_lr, out_t, out


def _pooled_std(
    idx: np.ndarray, m: int, loss: np.ndarray, std: np.ndarray, w: np.ndarray | None
) -> np.ndarray:
    """Per bin, the std of the union of the samples of its rows that logged a std:
    ``sum w (s^2 + (L - M)^2) / sum w`` over those rows, ``M`` their weighted mean loss."""
    ok = np.isfinite(std)
    wk = (np.ones(idx.size) if w is None else np.array(w, dtype=np.float64)) * ok
    w_sum = np.bincount(idx, weights=wk, minlength=m)
    has = w_sum > 0
    safe = np.where(has, w_sum, 1.0)
    mean = np.bincount(idx, weights=wk * loss, minlength=m) / safe
    dev = mean[idx]
    np.subtract(loss, dev, out=dev)
    dev *= dev
    dev += np.where(ok, std, 0.0) ** 2
    dev *= wk
    var = np.bincount(idx, weights=dev, minlength=m)
    return np.where(has, np.sqrt(var / safe), np.nan)
