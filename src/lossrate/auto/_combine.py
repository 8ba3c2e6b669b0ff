"""Weights of the candidates from their backtests.

Each model's backtest score s_m is the median over backtests of its |ln(pred / obs)| at the
horizon per unit of ln(horizon ratio). The weights are inverse to the squared score (Bates &
Granger 1969, "The combination of forecasts"): w_m = s_m^-2 / sum_j s_j^-2, over every
model whose backtests are finite; the prediction is sum_m w_m ln L_m.

Two alternatives are computed beside it and reported, never used:

* **best**: all weight on the model with the lowest score;
* **stack** (Yao, Vehtari, Simpson & Gelman 2018, "Using stacking to average Bayesian
  predictive distributions"): w >= 0, sum w = 1, minimising the squared backtest error of
  sum_m w_m ln L_m over the far half of every backtest's horizon, by non-negative least
  squares with the sum held by a stiff extra row (models within 2x of the best score).

Why this rule, measured (benchmarks/real_logs.py on the 46 runs of the real-log suite,
median final |ln(pred/obs)| at k = 25 % / 50 %): inverse weights 30 % / 11 %, the single
best 37 % / 15 %, stacking 35 % / 18 %, equal weights 22 % / 19 %, and choosing between
best and stacking by leave-one-origin-out 41 % / 16 %. A backtest fits less data, earlier
in the run, than the final fit: which single law wins there is a noisy signal, and weights
that chase it (best, stacking, a cross-validated choice) carry that noise into the
prediction, while equal weights give the laws that fail badly a full share. Each rule's
leave-one-origin-out error is kept in ``cv_error``.

Two softer variants were measured after the rest of auto (outlier drops, the decay rules)
on the same fits, median final |ln(pred/obs)| in %: scoring each model on the late
backtests only (horizon at the end of the prefix), and weights inverse to the score's
power 1 or 1.5 instead of 2. Real-log suite k = 25 / 50 %: power 2 on all backtests
26.9 / 10.8, power 1 25.0 / 11.5, power 1.5 25.2 / 13.0, late only 27.1 / 15.1; mpl
curves k = 25 %: 0.83, 1.01, 0.83, 0.83. None is better on both, so the rule stays.

Without any backtest (a prefix too short to hold one, e.g. under 14 logged points) the
prediction is the members' median at the horizon (the middle member, or the two middle ones
equally weighted): with nothing out of sample to rank them, the middle of the laws is the
choice the far ones cannot pull. Measured on the mpl WSD-with-constant-cooldown curves at
k = 10 % (10-11 logged points, 9 curves, median |ln(pred/obs)| of the final loss): the
lowest BIC on the prefix, the rule before, 9.36 % (it picked the momentum law, 13-25 % low,
on the three 25M curves); equal weights after the outlier rule 3.72 %; the median 3.17 %
(the best single law, power_S, 2.76 %). The lowest BIC remains the rule when the members'
predictions at the horizon are not given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import nnls

from ._backtest import Backtest

__all__ = ["Combination", "combine"]

RULES = ("inverse", "stack", "best")
_MIN_WEIGHT = 0.02  # weights below this share are dropped (they cost time, not accuracy)
_FLOOR = 1e-4  # scores below this (per unit ln ratio) count as this: no model is certain
_STACKED = 2.0  # models stacked: backtest score within this factor of the best


@dataclass(frozen=True)
class Combination:
    """The chosen weights and how they were chosen.

    ``scores``: median |ln(pred / obs)| at the backtest horizons, per candidate (inf: a
    backtest failed more often than not); ``cv_error``: the leave-one-origin-out median
    error of each rule; ``cv_paths``: per backtest, the chosen rule's out-of-sample ln L
    prediction at its scored steps (what the calibration measures).
    """

    rule: str
    weights: dict[str, float]
    scores: dict[str, float]
    cv_error: dict[str, float]
    why: str
    cv_paths: list[np.ndarray] = field(default_factory=list)


def _horizon_errors(bts: Sequence[Backtest], label: str) -> np.ndarray:
    """|ln(pred/obs)| at each backtest's horizon per unit of ln(horizon ratio)."""
    e = np.array(
        [abs(bt.error(label)[-1]) / np.log(max(bt.horizon_ratio, 1.05)) for bt in bts],
        dtype=float,
    )
    return np.where(np.isfinite(e), e, np.inf)


def _score(bts: Sequence[Backtest], label: str) -> float:
    return float(np.median(_horizon_errors(bts, label))) if bts else float("inf")


def _best(bts: Sequence[Backtest], labels: Sequence[str]) -> dict[str, float]:
    best = min(labels, key=lambda m: (_score(bts, m), labels.index(m)))
    return {best: 1.0}


def _stack(bts: Sequence[Backtest], labels: Sequence[str]) -> dict[str, float]:
    scores = {m: _score(bts, m) for m in labels}
    top = min(scores.values())
    ok = [
        m
        for m in labels
        if scores[m] <= _STACKED * top + 1e-12
        and all(np.all(np.isfinite(bt.preds[m])) for bt in bts)
    ]
    if len(ok) < 2:
        return _best(bts, labels)
    rows, rhs = [], []
    for bt in bts:
        far = bt.ratio >= 1.0 + 0.5 * (bt.horizon_ratio - 1.0)
        w = 1.0 / np.sqrt(max(int(far.sum()), 1))
        rows.append(w * np.column_stack([bt.preds[m][far] for m in ok]))
        rhs.append(w * bt.observed[far])
    A, b = np.vstack(rows), np.concatenate(rhs)
    stiff = 1e3 * max(float(np.abs(A).max()), 1.0)
    A = np.vstack([A, np.full((1, len(ok)), stiff)])
    b = np.concatenate([b, [stiff]])
    w, _ = nnls(A, b, maxiter=50 * len(ok))
    if not np.isfinite(w).all() or w.sum() <= 0:
        return _best(bts, labels)
    w = np.where(w < _MIN_WEIGHT * w.sum(), 0.0, w)  # drop dust: it only costs time
    w /= w.sum()
    return {m: float(v) for m, v in zip(ok, w) if v > 0}


def _inverse(bts: Sequence[Backtest], labels: Sequence[str]) -> dict[str, float]:
    s = {m: _score(bts, m) for m in labels}
    w = {m: max(v, _FLOOR) ** -2 for m, v in s.items() if np.isfinite(v)}
    if not w:
        return _best(bts, labels)
    total = sum(w.values())
    w = {m: v / total for m, v in w.items() if v / total >= _MIN_WEIGHT}
    total = sum(w.values())
    return {m: v / total for m, v in w.items()}


_RULE = {"inverse": _inverse, "stack": _stack, "best": _best}


def _apply(weights: Mapping[str, float], bt: Backtest) -> np.ndarray:
    """sum_m w_m ln L_m at the backtest's steps, renormalised over the members that gave a
    finite prediction there (NaN where none did)."""
    num = np.zeros(bt.steps.shape)
    den = np.zeros(bt.steps.shape)
    for m, w in weights.items():
        p = bt.preds[m]
        ok = np.isfinite(p)
        num[ok] += w * p[ok]
        den[ok] += w
    with np.errstate(invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _cv(bts: Sequence[Backtest], labels: Sequence[str], rule: str) -> list[np.ndarray]:
    out = []
    for j, bt in enumerate(bts):
        rest = [b for i, b in enumerate(bts) if i != j]
        out.append(_apply(_RULE[rule](rest, labels), bt))
    return out


def combine(
    bts: Sequence[Backtest],
    labels: Sequence[str],
    bic: Mapping[str, float],
    ratio: float = float(np.e),
    at_horizon: Mapping[str, float] | None = None,
) -> Combination:
    """Weights over ``labels`` (the candidates whose final fit is usable) from the backtests
    ``bts`` (module docstring); ``at_horizon`` (each final fit's ln L at the horizon) and
    ``bic`` (of each final fit) for the no-backtest fallback. Scores are |ln(pred/obs)| per
    unit of ln(horizon ratio), shown at ``ratio`` (the extrapolation asked for), so
    backtests of different reach compare."""
    labels = list(labels)
    unit = float(np.log(max(ratio, 1.05)))  # scores per unit ln(ratio), shown at ``ratio``
    scores = {m: unit * _score(bts, m) for m in labels}
    finite = [m for m in labels if at_horizon and np.isfinite(at_horizon.get(m, np.nan))]
    if not bts and finite:
        order = sorted(finite, key=lambda m: (at_horizon[m], labels.index(m)))  # type: ignore[index]
        n = len(order)
        mid = order[n // 2 : n // 2 + 1] if n % 2 else order[n // 2 - 1 : n // 2 + 1]
        return Combination(
            "median",
            {m: 1.0 / len(mid) for m in mid},
            scores,
            {},
            "the prefix is too short to hold a backtest: the median of the "
            f"{n} models' predictions at the horizon ({', '.join(mid)})",
        )
    if not bts:
        best = min(labels, key=lambda m: (bic.get(m, np.inf), labels.index(m)))
        return Combination(
            "best",
            {best: 1.0},
            scores,
            {},
            "the prefix is too short to hold a backtest: the model with the lowest BIC on it",
        )
    rule = "inverse"
    weights = _RULE[rule](bts, labels)
    paths = {r: _cv(bts, labels, r) for r in RULES} if len(bts) > 1 else {}
    cv_error = {}
    for r, ps in paths.items():
        e = np.array(
            [
                abs(p[-1] - bt.observed[-1]) / np.log(max(bt.horizon_ratio, 1.05))
                for p, bt in zip(ps, bts)
            ]
        )
        cv_error[r] = unit * float(np.median(np.where(np.isfinite(e), e, np.inf)))
    why = f"weights inverse to each model's squared backtest error over {len(bts)} backtests"
    if cv_error:
        why += "; leave-one-origin-out median |ln(pred/obs)| " + ", ".join(
            f"{r} {100 * v:.2f} %" for r, v in cv_error.items()
        )
    cv = paths.get(rule) or [_apply(weights, bts[0])]
    return Combination(rule, weights, scores, cv_error, why, cv)
