"""Intervals of a fit: a moving-block bootstrap of the log residuals (:mod:`.bootstrap`),
refitted from the optimum or linearised (one Gauss–Newton step per replicate), the
Gauss–Newton covariance behind the identifiability notes, and Wald standard errors
(see the :mod:`lossrate.fitting.engine` module docstring).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import chi2, norm

from .._errors import InvalidArgumentError
from .bootstrap import block_length, resample_blocks
from .params import ParamMap
from .problem import _SVD, _least_squares, _Problem
from .result import Fit

_BOOT_NFEV = 15  # evaluation budget per parameter of one bootstrap refit
_BOOT_BUDGET_S = 5.0  # refit bootstrap only when its estimated time (eval_seconds) is below
_LINEAR_DRAWS = 200  # replicates of the linearised bootstrap with bootstrap=0
_MIN_SV = 0.1  # singular-value floor of the linearised bootstrap (standardised residual units)
_REGION = 0.999  # linearised replicates must stay inside this likelihood region (chi^2_k)
_CHECK_POINTS = 1000  # linearised replicates are checked on at most this many points
_HALVINGS = 8  # step halvings tried to bring a linearised replicate into the region


def wald_se(fit_result: Fit) -> np.ndarray:
    """Gauss–Newton (Wald) standard errors of the free coordinates, on the search scale, at
    the optimum: sqrt(diag(s^2 (J^T J)^+)) with s^2 the variance of the standardised
    residuals (the fit's own data only, no prior terms). A fallback where the bootstrap
    gave no intervals; a coordinate along a direction the data do not fix gets inf."""
    pm, z = fit_result.pmap, fit_result.z_hat
    if pm is None or z is None:
        raise InvalidArgumentError("this fit carries no parameter map; refit it.")
    weights = str(fit_result.extra.get("weights", "noise"))
    prob = _Problem(pm, fit_result.log, None, weights)
    f0 = prob.residuals(z)
    J = prob.raw_jacobian(z)
    if not _SVD.finite(J):
        return np.full(z.size, np.inf)
    dec = _SVD(J)
    s2 = float(np.sum(f0**2)) / max(f0.size - z.size, 1)
    keep = dec.sv > (dec.sv[0] * 1e-8 if dec.sv.size and dec.sv[0] > 0 else np.inf)
    vt = dec.vt
    var = np.sum((vt[keep] / dec.sv[keep, None]) ** 2, axis=0) * s2
    loose = np.any(np.abs(vt[~keep]) > 1e-3, axis=0) if (~keep).any() else np.zeros(z.size, bool)
    return np.where(loose, np.inf, np.sqrt(var))


def _covariance(res: Any) -> np.ndarray | None:
    """(J^T J)^+ at the optimum: the Gauss–Newton covariance up to a scale (only its
    correlations are used, for the identifiability notes)."""
    if not _SVD.finite(res.jac):
        return None
    try:
        dec = _SVD(res.jac)
    except np.linalg.LinAlgError:
        return None
    sv, vt = dec.sv, dec.vt
    if sv.size == 0 or sv[0] == 0:
        return None
    keep = sv > sv[0] * 1e-10
    inv = (vt[keep].T / sv[keep] ** 2) @ vt[keep]
    if not keep.all():
        inv += np.diag(np.where(np.abs(np.diag(inv)) > 0, 0, 1e6))
    return inv


def _identifiability_notes(cov: np.ndarray | None, names: list[str]) -> list[str]:
    """Name the parameter pairs the data cannot separate (|correlation| > 0.995), each
    parameter at most once, strongest first."""
    if cov is None:
        return ["the Jacobian at the optimum is not finite: no covariance, intervals unavailable"]
    d = np.sqrt(np.abs(np.diag(cov)))
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = cov / np.outer(d, d)
    pairs = [
        (abs(corr[i, j]), i, j)
        for i in range(len(names))
        for j in range(i + 1, len(names))
        if np.isfinite(corr[i, j]) and abs(corr[i, j]) > 0.995
    ]
    out: list[str] = []
    used: set[int] = set()
    for _, i, j in sorted(pairs, reverse=True):
        if i in used or j in used:
            continue
        used.update((i, j))
        out.append(
            f"{names[i]} and {names[j]} are nearly unidentifiable (correlation {corr[i, j]:+.3f}): "
            f"the data fix only a combination; fix one of them (fix={{{names[j]!r}: ...}}) "
            "or add a prior."
        )
    return out


class _MisfitIncrease:
    """sum r(z)^2 - sum r(z_hat)^2 over the data rows: how much worse a linearised bootstrap
    replicate z fits the data than the optimum.

    On a problem of at most ``_CHECK_POINTS`` points it is computed exactly. On a larger one
    the model is evaluated on every m-th point only (a sum m times smaller), corrected by the
    exact linear part: increase = lin_all + (thin - lin_thin), with lin the increase the
    Jacobian at the optimum predicts (2 r0.Jd + |Jd|^2, d = z - z_hat). The correction is the
    whole answer for a model linear over the step and leaves only the smooth nonlinear
    remainder to the thinned sum, whose noise-driven cross term 2 r0.Jd would otherwise
    swamp the chi^2 limit.
    """

    def __init__(self, prob: _Problem, best: Any, n_data: int) -> None:
        self.prob = prob
        self.check = prob.thinned(_CHECK_POINTS)
        self.z_hat = best.x
        self.n_data = n_data
        self.r0 = best.fun[:n_data]
        self.base = float(self.r0 @ self.r0)
        if self.check is not prob:
            self.jac = prob.raw_jacobian(self.z_hat)  # best.jac is scaled by the robust loss
            self.r0_thin = self.check.residuals(self.z_hat)[: self.check.n]
            self.base_thin = float(self.r0_thin @ self.r0_thin)

    def __call__(self, z: np.ndarray) -> float:
        if self.check is self.prob:
            r = self.prob.residuals(z)[: self.n_data]
            return float(r @ r) - self.base
        jd = np.asarray(self.jac @ (z - self.z_hat)).ravel()[: self.n_data]
        jd_thin = jd[self.check.rows]
        lin_all = float(2.0 * self.r0 @ jd + jd @ jd)
        lin_thin = float(2.0 * self.r0_thin @ jd_thin + jd_thin @ jd_thin)
        r = self.check.residuals(z)[: self.check.n]
        return lin_all + self.check.stride * (float(r @ r) - self.base_thin - lin_thin)


def _bootstrap(
    prob: _Problem,
    best: Any,
    fitted: list[np.ndarray],
    resid: list[np.ndarray],
    loss: str,
    f_scale: float,
    reps: int,
    rng: np.random.Generator,
    *,
    refit: bool = True,
) -> tuple[np.ndarray | None, str]:
    """Moving-block bootstrap of the log residuals around the fit ``best``.

    Each replicate refits the data m + e* (e* the resampled, centred residuals, inflated by
    sqrt(n/(n-k))) from the optimum with a small evaluation budget, and draws the prior
    centres from their Gaussians. When that would take longer than ``_BOOT_BUDGET_S`` by the
    model's fixed cost estimate (:meth:`CurveModel.eval_seconds`, not a timing: the choice,
    and so the intervals, must not depend on the machine's load; a slow model or many points), with ``reps == 0`` (then 200 replicates) or ``refit=False``,
    each replicate is instead the Gauss–Newton step from the optimum with the Jacobian there
    (the linearised bootstrap: no refits; directions the data do not determine stay put, as
    the pseudo-inverse leaves them, instead of exploding as a Gaussian on a near-singular
    covariance would).
    """
    z_hat = best.x
    k = z_hat.size
    n = sum(e.size for e in resid)
    infl = np.sqrt(n / max(n - k, 1))
    blocks = [block_length(e) for e in resid]
    centred = [(e - e.mean()) * infl for e in resid]
    if reps <= 0:
        reps, refit = _LINEAR_DRAWS, False
    k_eff = prob.effective_k()
    if refit:
        t_eval = sum(prob.model.eval_seconds(run, run.traj.n) for run in prob.pmap.runs)
        refit = reps * _BOOT_NFEV * (k_eff + 1) * t_eval <= _BOOT_BUDGET_S
    draws_e = [[resample_blocks(e, b, rng) for e, b in zip(centred, blocks)] for _ in range(reps)]
    mus = [
        prob.prior_mu + rng.normal(0.0, 1.0, prob.prior_mu.size) * prob.prior_sd
        if prob.prior_idx.size
        else None
        for _ in range(reps)
    ]
    out = []
    if refit:
        for es, mu in zip(draws_e, mus):
            targets = [m - e for m, e in zip(fitted, es)]
            try:
                res = _least_squares(
                    prob,
                    z_hat,
                    loss,
                    f_scale,
                    targets=targets,
                    prior_mu=mu,
                    max_nfev=_BOOT_NFEV * (k_eff + 1),
                )
            except (ValueError, np.linalg.LinAlgError):
                continue
            if np.all(np.isfinite(res.x)):
                out.append(res.x)
        how = "refitted from the optimum"
        if len(out) < max(10, reps // 2):
            out, refit = [], False  # too many refits failed: fall back to the linearised draws
    if not refit:
        if not _SVD.finite(best.jac):
            return None, "no intervals: the Jacobian at the optimum is not finite"
        # pseudo-inverse with singular values floored: along a direction the data barely
        # determine, a replicate moves a bounded step instead of running off along the
        # linearisation; replicates whose true (nonlinear) misfit to the data leaves the
        # likelihood region of the optimum are pulled back into it
        dec = _SVD(best.jac)
        floor_sv = np.maximum(dec.sv, _MIN_SV)
        pm = prob.pmap
        n_data = prob.n
        increase = _MisfitIncrease(prob, best, n_data)
        s2 = max(increase.base / max(n_data - k, 1), 1e-300)
        limit = float(chi2.ppf(_REGION, k))
        for es, mu in zip(draws_e, mus):
            r = [e / sd for e, sd in zip(es, prob.sd)]
            if mu is not None:
                r.append((z_hat[prob.prior_idx] - mu) / prob.prior_sd)
            step = -dec.vt.T @ (dec.ut(np.concatenate(r)) / floor_sv)
            for _ in range(_HALVINGS):  # shorten the step until it lies in the region
                z = np.clip(z_hat + step, pm.lower, pm.upper)
                if increase(z) / s2 <= limit:
                    out.append(z)
                    break
                step = 0.5 * step
        how = "linearised: one Gauss–Newton step each, no refits"
        if len(out) < max(10, reps // 2):
            return None, (
                f"no intervals: only {len(out)} of {reps} linearised bootstrap replicates stayed "
                "near the optimum (a strongly nonlinear fit); refit with bootstrap=200"
            )
    b_txt = (
        ", ".join(str(b) for b in blocks) if len(blocks) <= 4 else f"{min(blocks)}–{max(blocks)}"
    )
    return np.asarray(out), (
        f"intervals from a moving-block bootstrap of the log residuals ({len(out)} replicates, "
        f"{how}, block length {b_txt})"
    )


def _intervals(
    draws: np.ndarray | None, pm: ParamMap, level: float
) -> tuple[dict[str, float], dict[str, tuple[float, float]], np.ndarray | None]:
    names = pm.free_names
    if draws is None:
        nan = float("nan")
        return {n: nan for n in names}, {n: (nan, nan) for n in names}, None
    values = np.column_stack(
        [np.exp(draws[:, j]) if f.log else draws[:, j] for j, f in enumerate(pm.free)]
    )
    a = (1 - level) / 2
    lo = np.quantile(values, a, axis=0)
    hi = np.quantile(values, 1 - a, axis=0)
    se = values.std(axis=0, ddof=1)
    stderr = {n: float(s) for n, s in zip(names, se)}
    ci = {n: (float(x), float(y)) for n, x, y in zip(names, lo, hi)}
    return stderr, ci, values


def z_quantile(level: float) -> float:
    """Two-sided standard-normal quantile for ``level``."""
    return float(norm.ppf(0.5 + level / 2))
