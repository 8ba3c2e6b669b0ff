"""The fitting engine: robust least squares on log L for one run or many.

For runs r = 1..R with logged losses y_ri at steps s_ri, a curve model m(s; theta_r, run_r)
and a parameter map z -> (theta_1 .. theta_R) (:mod:`lossrate.fitting.params`):

    minimise  sum_ri  rho( (ln m(s_ri; theta_r) - ln y_ri) / w_ri )
            + sum_j   rho( (z_j - mu_j) / tau_j )                      (Gaussian priors)

* ``rho`` is scipy's robust loss ("soft_l1", "huber" or "linear") with ``f_scale`` in units
  of the standardised residual (default 3: points beyond 3 noise sd are down-weighted);
* w_ri is the noise sd of ln y, one level per run from the data (robust scale of second
  differences of ln y, which sees the batch noise but not a smooth trend). With
  ``weights="measured"`` and a run that logs ``loss_std`` and ``batch_size`` its shape
  follows sigma_L / (L sqrt(B)) (theory §4.2) instead; that is not the default because late
  in a run sigma_L / L grows tenfold, so those weights hand the fit to the early steps and a
  law that is not exact there extrapolates far worse (the demo's MNIST run: power_steps
  +147 % with them, +66 % without), and because the same curve must get the same fit from
  a plain CSV and from an instrumented log;
* the search runs on z = ln(value) for log-scale parameters, within bounds, from every guess
  of the model plus jittered copies of the best one (``starts``), and keeps the best optimum.

Intervals: a moving-block bootstrap of the log residuals (:mod:`.bootstrap`), refitted from
the optimum, or linearised (one Gauss–Newton step per replicate: with ``bootstrap=0``, or
when refits would be slow). Both give parameter draws (``FitResult.samples``) for
:func:`predict`. The Gauss–Newton covariance (inflated for residual autocorrelation) only
serves the identifiability notes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import sparse
from scipy.optimize import least_squares
from scipy.stats import chi2, norm

from .._errors import DataError, InvalidArgumentError, check_choice
from .._model import CurveModel, RunData
from .._results import FitResult
from ..schedule import Schedule
from ..trajectory import Trajectory
from .bootstrap import block_length, durbin_watson, lag1_autocorrelation, resample_blocks
from .params import ParamMap

__all__ = ["Fit", "as_run", "fit", "fit_many", "resolve_model", "run_name"]

LOSSES = ("soft_l1", "huber", "linear")
_BIG = 1e3  # standardised residual given to points where the model is not finite
_SCREEN = 4  # function evaluations per parameter when screening a start
_POLISH = 2  # screened starts run to convergence
_POLISH_NFEV = 40  # their evaluation budget per parameter
_EXTRA_ROUNDS = 3  # further budgets for a fit still improving when its budget ran out
_SCREEN_POINTS = 600  # starts are screened on at most this many points
_SPARSE_DENSITY = 0.5  # joint fits whose Jacobian has at most this fill use its sparsity
_DENSE_MAX = 2_000_000  # a grouped Jacobian with more entries stays sparse (LSMR steps)
_FD_STEP = float(np.sqrt(np.finfo(float).eps))  # relative forward-difference step
_BOOT_NFEV = 15  # evaluation budget per parameter of one bootstrap refit
_BOOT_BUDGET_S = 5.0  # refit bootstrap only when its estimated time is below this
_LINEAR_DRAWS = 200  # replicates of the linearised bootstrap with bootstrap=0
_MIN_SV = 0.1  # singular-value floor of the linearised bootstrap (standardised residual units)
_REGION = 0.999  # linearised replicates must stay inside this likelihood region (chi^2_k)
_CHECK_POINTS = 1000  # linearised replicates are checked on at most this many points
_HALVINGS = 8  # step halvings tried to bring a linearised replicate into the region


@dataclass(frozen=True, eq=False)
class Fit(FitResult):
    """A :class:`~lossrate.FitResult` that also keeps what :func:`predict` needs: the runs
    (observations and schedules) and the parameter map. Neither goes into ``to_dict``."""

    runs: tuple[RunData, ...] = field(default=(), repr=False)
    run_names: tuple[str, ...] = ()
    pmap: ParamMap | None = field(default=None, repr=False)
    z_hat: np.ndarray | None = field(default=None, repr=False)
    log: bool = True

    def theta(self, run: str | None = None) -> dict[str, float]:
        """All model parameters (fitted and fixed) of one fitted run, by plain name."""
        if self.pmap is None or self.z_hat is None:
            raise InvalidArgumentError("this FitResult carries no parameter map; refit it.")
        return self.pmap.thetas(self.z_hat)[self.run_index(run)]

    def run_index(self, run: str | None) -> int:
        if run is None:
            if len(self.run_names) != 1:
                raise InvalidArgumentError(
                    f"this fit covers {len(self.run_names)} runs; name one with run=..., "
                    f"one of {list(self.run_names)}."
                )
            return 0
        if run not in self.run_names:
            raise InvalidArgumentError(
                f"run={run!r} was not fitted; the fitted runs are {list(self.run_names)}."
            )
        return self.run_names.index(run)


# ---------------------------------------------------------------- inputs
def resolve_model(model: CurveModel | str) -> CurveModel:
    """A model instance from an instance or a registered name."""
    if isinstance(model, CurveModel):
        return model
    if isinstance(model, str):
        from .registry import get_model

        return get_model(model)
    raise InvalidArgumentError(
        f"model must be a CurveModel or a registered name, got {type(model).__name__}."
    )


def run_name(run: RunData, i: int) -> str:
    return run.traj.meta.name or f"run{i}"


def as_run(
    data: Trajectory | RunData | tuple[Trajectory, Schedule],
    model: CurveModel,
    schedule: Schedule | None = None,
) -> RunData:
    """Pair a trajectory with its schedule (or take a RunData or a (Trajectory, Schedule)
    pair); models that ignore the lr get a unit schedule."""
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[1], Schedule):
        pair_traj, pair_sched = data
        data, schedule = pair_traj, pair_sched if schedule is None else schedule
    if isinstance(data, RunData):
        return data if schedule is None else data.with_schedule(schedule)
    if not isinstance(data, Trajectory):
        raise InvalidArgumentError(
            f"data must be a Trajectory or RunData, got {type(data).__name__}; build one with "
            "Trajectory.from_arrays(loss, step=..., lr=...)."
        )
    if schedule is None and data.lr is None and not getattr(model, "needs_schedule", True):
        schedule = Schedule(np.ones(int(data.step[-1]) + 1), "unit")
    if schedule is None and data.lr is None:
        raise InvalidArgumentError(
            f"model {model.name!r} depends on the learning rate, but the trajectory has no 'lr' "
            "column and no schedule was given. Pass schedule=Schedule.make(...) covering the run, "
            "or log lr."
        )
    return RunData.from_trajectory(data, schedule)


def _drop_zero_time(model: CurveModel, runs: list[RunData]) -> tuple[list[RunData], list[str]]:
    """Leave out logged steps at intrinsic time S = 0 for a law that diverges there."""
    if not getattr(model, "positive_time", False):
        return runs, []
    out, n = [], 0
    for run in runs:
        keep = run.schedule.S(np.clip(run.traj.step, 0, run.schedule.n_steps)) > 0
        if keep.all() or not keep.any():
            out.append(run)
            continue
        n += int((~keep).sum())
        out.append(RunData(run.traj.select(keep), run.schedule))
    if not n:
        return out, []
    return out, [f"{n} logged step(s) at S = sum(lr) = 0 left out: {model.name} diverges there"]


def _check_run(run: RunData, name: str, k: int, log: bool) -> None:
    y = run.traj.loss
    n = y.size
    if n < k + 2:
        raise DataError(
            f"run {name!r} has {n} points, too few to fit {k} parameters (need at least {k + 2}). "
            "Log more steps, fit a longer prefix, or fix some parameters (fix={...})."
        )
    if log and (y <= 0).any():
        raise DataError(
            f"run {name!r} has a loss <= 0 at step {int(run.traj.step[np.argmin(y)])}; the fit "
            "works on ln L. Pass log=False, or shift the loss by its known minimum."
        )
    if np.ptp(y) == 0:
        raise DataError(
            f"run {name!r} has a constant loss ({y[0]!r}); there is no decrease to fit."
        )
    m = max(2, n // 10)
    head, tail = float(np.median(y[:m])), float(np.median(y[-m:]))
    if not tail < head:
        raise DataError(
            f"run {name!r}: the loss does not fall (median of the first {m} points {head:.4g}, "
            f"of the last {m} points {tail:.4g}); a loss-curve model needs a decreasing loss. "
            "Check the column (accuracy instead of loss?) or cut a diverging tail."
        )


def _noise_sd(run: RunData, log: bool, weights: str) -> tuple[np.ndarray, str | None]:
    """Per-point noise sd of the fitted quantity (module docstring) and a note."""
    if weights == "none":
        return np.ones(run.traj.n), None
    y = np.log(run.traj.loss) if log else run.traj.loss.copy()
    if y.size >= 5:
        d2 = y[2:] - 2 * y[1:-1] + y[:-2]
        level = 1.4826 * float(np.median(np.abs(d2 - np.median(d2)))) / np.sqrt(6.0)
    else:
        level = 0.0
    scale = float(np.median(np.abs(y))) if not log else 1.0
    level = max(level, 1e-6 * max(scale, 1e-12))
    note = None
    traj = run.traj
    sd = np.full(y.size, level)
    if (
        weights == "measured"
        and traj.has("loss_std")
        and (traj.has("batch_size") or traj.meta.batch_size)
    ):
        bs = traj.batch_size if traj.has("batch_size") else np.full(y.size, traj.meta.batch_size)
        shape = traj.loss_std / np.sqrt(np.asarray(bs, dtype=float))  # type: ignore[operator]
        if log:
            shape = shape / traj.loss
        ok = np.isfinite(shape) & (shape > 0)
        if ok.sum() >= max(3, y.size // 2):
            shape = np.where(ok, shape, np.median(shape[ok]))
            sd = level * shape / float(np.median(shape))
            note = (
                "points weighted by the measured noise sigma_L / (L sqrt(B)) (loss_std, "
                "batch_size); its level taken from the curve's own scatter"
            )
    return sd, note


# ---------------------------------------------------------------- problem
class _Problem:
    """Residuals of a fit (module docstring) for a parameter map and targets."""

    def __init__(
        self,
        pmap: ParamMap,
        log: bool,
        prior: Mapping[str, tuple[float, float]] | None,
        weights: str = "noise",
    ) -> None:
        self.pmap = pmap
        self.model = pmap.model
        self.log = log
        self.steps = [run.traj.step for run in pmap.runs]
        self.obs = [np.log(r.traj.loss) if log else r.traj.loss.astype(float) for r in pmap.runs]
        self.notes: list[str] = []
        self.sd = []
        for run in pmap.runs:
            sd, note = _noise_sd(run, log, weights)
            self.sd.append(sd)
            if note and note not in self.notes:
                self.notes.append(note)
        self.sizes = [y.size for y in self.obs]
        self.n = int(sum(self.sizes))
        self.prior_idx, self.prior_mu, self.prior_sd = pmap.prior_terms(prior)

    def thinned(self, max_points: int) -> _Problem:
        """The same problem on every m-th point of each run (for cheap screening of starts)."""
        m = -(-self.n // max_points)
        if m <= 1:
            return self
        sub = object.__new__(_Problem)
        sub.__dict__.update(self.__dict__)
        keep = [np.unique(np.r_[np.arange(0, y.size, m), y.size - 1]) for y in self.obs]
        sub.steps = [s[i] for s, i in zip(self.steps, keep)]
        sub.obs = [y[i] for y, i in zip(self.obs, keep)]
        # residuals stay in noise-sd units (the robust loss's scale); the prior terms are
        # weakened by the same factor m as the data, so their balance holds (sum ~ 1/m)
        sub.sd = [sd[i] for sd, i in zip(self.sd, keep)]
        sub.prior_sd = self.prior_sd * np.sqrt(m)
        sub.sizes = [y.size for y in sub.obs]
        sub.n = int(sum(sub.sizes))
        starts = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])
        sub.rows = np.concatenate([i + o for i, o in zip(keep, starts)])  # rows of the full data
        sub.stride = m
        return sub

    def _structure(self) -> tuple[list[np.ndarray], list[list[int]]] | None:
        """For a joint fit whose Jacobian is sparse: the residual rows each free coordinate
        moves, and a grouping of the coordinates into colours that move disjoint rows.
        None for a single run or a dense pattern (every parameter shared)."""
        cached = self.__dict__.get("_struct_for")
        if cached is not None and cached[0] == tuple(self.sizes):
            return cached[1]
        out = None
        pm = self.pmap
        k = pm.n_free
        cols = pm.run_columns()
        nnz = sum(size * c.size for size, c in zip(self.sizes, cols))
        if len(pm.runs) > 1 and nnz <= _SPARSE_DENSITY * self.n * k:
            offsets = np.concatenate([[0], np.cumsum(self.sizes)])
            runs_of: list[list[int]] = [[] for _ in range(k)]
            for r, c in enumerate(cols):
                for j in c:
                    runs_of[j].append(r)
            rows = []
            for j in range(k):
                parts = [np.arange(offsets[r], offsets[r + 1]) for r in runs_of[j]]
                parts.append(self.n + np.flatnonzero(self.prior_idx == j))
                rows.append(np.concatenate(parts).astype(np.int64))
            # greedy colouring: coordinates that share no run may be perturbed together
            colours: list[list[int]] = []
            used: list[set[int]] = []
            for j in np.argsort([-len(r) for r in runs_of], kind="stable"):
                mine = set(runs_of[j])
                for c, taken in zip(colours, used):
                    if not (mine & taken):
                        c.append(int(j))
                        taken |= mine
                        break
                else:
                    colours.append([int(j)])
                    used.append(set(mine))
            out = (rows, colours)
        self.__dict__["_struct_for"] = (tuple(self.sizes), out)
        return out

    def analytic(self) -> bool:
        """The model gives its own Jacobian (``curve_and_jacobian``, columns in the order of
        its params) and no parameter follows a law: then :meth:`analytic_jacobian` serves."""
        return callable(getattr(self.model, "curve_and_jacobian", None)) and all(
            rule[0] != "law" for rules in self.pmap.rules for rule in rules.values()
        )

    def analytic_jacobian(
        self,
        z: np.ndarray,
        targets: Sequence[np.ndarray] | None = None,
        prior_mu: np.ndarray | None = None,
    ) -> np.ndarray | sparse.csr_matrix:
        """d residuals / d z from the model's own derivatives by the chain rule through the
        parameter map (a log-scaled coordinate contributes theta d/dtheta). Rows where the
        model is not finite get 0 (their residual is the constant ``_BIG``)."""
        pm = self.pmap
        rows, cols, vals = [], [], []
        offset = 0
        for r, (theta, run, steps, sd) in enumerate(
            zip(pm.thetas(z), pm.runs, self.steps, self.sd)
        ):
            with np.errstate(all="ignore"):
                m, Jm = self.model.curve_and_jacobian(theta, run, steps, jacobian=True)
                m = np.asarray(m, dtype=float)
                d = np.asarray(Jm, dtype=float) / (m[:, None] if self.log else 1.0)
                d = d / sd[:, None]
            bad = ~np.isfinite(m) | (m <= 0 if self.log else False) | ~np.isfinite(d).all(axis=1)
            d[bad] = 0.0
            idx = np.arange(offset, offset + steps.size)
            for c, name in enumerate(pm.order):
                rule = pm.rules[r][name]
                if rule[0] != "free":
                    continue
                j = rule[1]
                scale = theta[name] if pm.free[j].log else 1.0
                rows.append(idx)
                cols.append(np.full(idx.size, j))
                vals.append(d[:, c] * scale)
            offset += steps.size
        rows.append(offset + np.arange(self.prior_idx.size))
        cols.append(self.prior_idx)
        vals.append(1.0 / self.prior_sd)
        shape = (offset + self.prior_idx.size, z.size)
        J = sparse.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=shape
        )  # duplicate (row, column) entries add up
        return J.toarray() if shape[0] * shape[1] <= _DENSE_MAX else J

    def effective_k(self) -> int:
        """Coordinates a Jacobian costs evaluations for: the colours of a structured joint
        fit, else every free coordinate (evaluation budgets scale with it)."""
        st = self._structure()
        return self.pmap.n_free if st is None else len(st[1])

    def _one_by_one(self) -> tuple[list[np.ndarray], list[list[int]]]:
        """The trivial colouring: every coordinate alone, moving every row."""
        every = np.arange(self.n + self.prior_idx.size)
        return [every] * self.pmap.n_free, [[j] for j in range(self.pmap.n_free)]

    def raw_jacobian(self, z: np.ndarray) -> np.ndarray | sparse.csr_matrix:
        """d residuals / d z at ``z`` (the model's own derivatives, else differences): the plain
        Jacobian, where least_squares reports one modified by the robust loss."""
        return self.analytic_jacobian(z) if self.analytic() else self.jacobian(z)

    def jacobian(
        self,
        z: np.ndarray,
        targets: Sequence[np.ndarray] | None = None,
        prior_mu: np.ndarray | None = None,
    ) -> np.ndarray | sparse.csr_matrix:
        """Forward-difference Jacobian of :meth:`residuals` that perturbs a colour of
        coordinates at once (see :meth:`_structure`): about (shared + per-run parameters)
        residual evaluations instead of one per coordinate (one per coordinate when the
        pattern is dense). Dense when small (the exact trust-region solver), sparse CSR when
        large (LSMR)."""
        rows, colours = self._structure() or self._one_by_one()
        upper = self.pmap.upper
        f0 = self.residuals(z, targets, prior_mu)
        h = _FD_STEP * np.maximum(1.0, np.abs(z))
        h = np.where(z + h > upper, -h, h)  # step inwards at an upper bound
        data, ri, ci = [], [], []
        for colour in colours:
            zz = z.copy()
            zz[colour] += h[colour]
            df = self.residuals(zz, targets, prior_mu) - f0
            for j in colour:
                data.append(df[rows[j]] / h[j])
                ri.append(rows[j])
                ci.append(np.full(rows[j].size, j))
        shape = (f0.size, z.size)
        J = sparse.csr_matrix(
            (np.concatenate(data), (np.concatenate(ri), np.concatenate(ci))), shape=shape
        )
        return J.toarray() if shape[0] * shape[1] <= _DENSE_MAX else J

    def curves(self, z: np.ndarray) -> list[np.ndarray]:
        """The model at the observed steps (log scale when fitting logs), per run."""
        out = []
        thetas = self.pmap.thetas(z)
        for theta, run, steps in zip(thetas, self.pmap.runs, self.steps):
            try:
                with np.errstate(all="ignore"):
                    m = np.asarray(self.model.curve(theta, run, steps), dtype=float)
                    if self.log:
                        m = np.log(m)
            except (InvalidArgumentError, FloatingPointError, OverflowError, ZeroDivisionError):
                m = np.full(steps.shape, np.nan)
            out.append(m)
        return out

    def residuals(
        self,
        z: np.ndarray,
        targets: Sequence[np.ndarray] | None = None,
        prior_mu: np.ndarray | None = None,
    ) -> np.ndarray:
        targets = self.obs if targets is None else targets
        parts = []
        for m, y, sd in zip(self.curves(z), targets, self.sd):
            r = (m - y) / sd
            r[~np.isfinite(r)] = _BIG
            parts.append(r)
        if self.prior_idx.size:
            mu = self.prior_mu if prior_mu is None else prior_mu
            parts.append((z[self.prior_idx] - mu) / self.prior_sd)
        return np.concatenate(parts)


def _least_squares(
    prob: _Problem,
    z0: np.ndarray,
    loss: str,
    f_scale: float,
    *,
    targets: Sequence[np.ndarray] | None = None,
    prior_mu: np.ndarray | None = None,
    max_nfev: int | None = None,
) -> Any:
    pm = prob.pmap
    return least_squares(
        prob.residuals,
        pm.clip(z0),
        bounds=(pm.lower, pm.upper),
        loss=loss,
        f_scale=f_scale,
        x_scale="jac",
        method="trf",
        max_nfev=max_nfev,
        jac=_jac_for(prob),
        kwargs={"targets": targets, "prior_mu": prior_mu},
    )


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


def _jac_for(prob: _Problem) -> Any:
    """The model's own derivatives when it has them, else grouped or plain differences."""
    if prob.analytic():
        return prob.analytic_jacobian
    return prob.jacobian if prob._structure() is not None else "2-point"


class _SVD:
    """Singular values, right vectors and U^T of a Jacobian J = U diag(sv) V^T.

    A small J is decomposed directly. A large sparse one (a structured joint fit) goes
    through the k x k Gram matrix J^T J = V diag(sv^2) V^T, with U^T r = V^T J^T r / sv: far
    cheaper than a dense SVD of (points x parameters), and accurate for the singular values
    above ~1e-7 of the largest that the covariance and the linearised bootstrap use."""

    def __init__(self, J: Any) -> None:
        if sparse.issparse(J):
            self.J = J
            gram = np.asarray((J.T @ J).toarray(), dtype=float)
            w, v = np.linalg.eigh(gram)
            order = np.argsort(w)[::-1]
            self.sv = np.sqrt(np.maximum(w[order], 0.0))
            self.vt = v[:, order].T
            self.u = None
        else:
            J = np.asarray(J, dtype=float)
            self.u, self.sv, self.vt = np.linalg.svd(J, full_matrices=False)

    @staticmethod
    def finite(J: Any) -> bool:
        return bool(np.all(np.isfinite(J.data if sparse.issparse(J) else np.asarray(J))))

    def ut(self, r: np.ndarray) -> np.ndarray:
        """U^T r."""
        if self.u is not None:
            return self.u.T @ r
        proj = self.vt @ (self.J.T @ r)
        ok = self.sv > self.sv[0] * 1e-7 if self.sv.size and self.sv[0] > 0 else self.sv > 0
        return np.where(ok, proj / np.where(ok, self.sv, 1.0), 0.0)


def _starts(prob: _Problem, starts: int, rng: np.random.Generator) -> list[np.ndarray]:
    pm = prob.pmap
    per_run = [list(prob.model.guesses(run)) for run in pm.runs]
    for name, g in zip(pm.names, per_run):
        if not g:
            raise InvalidArgumentError(
                f"model {prob.model.name!r} gave no starting guess for {name!r}."
            )
    n_guess = max(len(g) for g in per_run)
    cands = [pm.start([g[i % len(g)] for g in per_run]) for i in range(n_guess)]
    costs = [float(np.sum(prob.residuals(c) ** 2)) for c in cands]
    best = cands[int(np.argmin(costs))]
    span = pm.upper - pm.lower
    sd = np.minimum(0.1 * span, 0.5)
    for _ in range(max(0, starts)):
        cands.append(pm.clip(best + rng.normal(0.0, 1.0, best.size) * sd))
    return cands


# ---------------------------------------------------------------- public
def fit(
    data: Trajectory | RunData,
    model: CurveModel | str,
    *,
    schedule: Schedule | None = None,
    fix: Mapping[str, float] | None = None,
    loss: str = "soft_l1",
    f_scale: float | None = None,
    log: bool = True,
    starts: int = 2,
    level: float = 0.9,
    bootstrap: int = 200,
    seed: int = 0,
    prior: Mapping[str, tuple[float, float]] | None = None,
    weights: str = "noise",
    intervals: bool = True,
) -> Fit:
    """Fit a curve model to one run by robust least squares on ln L (module docstring).

    Args:
        data: the observed run (a Trajectory, paired with ``schedule`` or its logged lr, or a
            RunData).
        model: a :class:`~lossrate._model.CurveModel` or a registered name ("ode", ...).
        schedule: the lr of every step (default: rebuilt from the logged lr).
        fix: parameter values to hold fixed, by name.
        loss: robust loss, "soft_l1" (default), "huber" or "linear" (plain least squares).
        f_scale: robust-loss scale in noise sd units (default 3); in raw units of the fitted
            quantity with ``weights="none"``.
        log: fit ln L (relative errors, default) or L.
        starts: jittered starts added to the model's own guesses.
        level: confidence level of the intervals.
        bootstrap: moving-block bootstrap replicates (0: Gauss–Newton covariance instead).
        seed: seed of the jitter and the bootstrap.
        prior: Gaussian priors ``{"name": (mean, sd)}``: mean in natural units, sd on the
            search scale (relative for log-scale parameters).
        weights: "noise" (standardise residuals by the run's estimated noise sd),
            "measured" (its shape from the logged sigma_L / (L sqrt(B)), module docstring) or
            "none" (raw residuals: a peer's own recipe, e.g. loss="huber", f_scale=1e-3 on
            ln L).
        intervals: False skips the bootstrap: point estimates only (NaN errors, no draws;
            a prediction's interval then holds observation noise only), for fits whose
            interval nobody reads (backtests).

    Returns:
        a :class:`Fit` (a :class:`~lossrate.FitResult`).

    Raises:
        InvalidArgumentError: bad options, unknown parameter names, no lr for a model that
            needs one.
        DataError: too few points, a constant or rising loss, a loss <= 0 with ``log``.
    """
    m = resolve_model(model)
    run = as_run(data, m, schedule)
    return _fit(
        m,
        [run],
        [run_name(run, 0)],
        single=True,
        shared=None,
        per_run=(),
        depends=None,
        fix=fix,
        loss=loss,
        f_scale=f_scale,
        log=log,
        starts=starts,
        level=level,
        bootstrap=bootstrap,
        seed=seed,
        prior=prior,
        weights=weights,
        intervals=intervals,
    )


def fit_many(
    runs: Sequence[Trajectory | RunData] | Mapping[str, Trajectory | RunData],
    model: CurveModel | str,
    *,
    shared: Sequence[str] | None = None,
    per_run: Sequence[str] = (),
    depends: Mapping[str, str] | None = None,
    schedules: Sequence[Schedule | None] | None = None,
    fix: Mapping[str, float] | None = None,
    prior: Mapping[str, tuple[float, float]] | None = None,
    loss: str = "soft_l1",
    f_scale: float | None = None,
    log: bool = True,
    starts: int = 2,
    level: float = 0.9,
    bootstrap: int = 200,
    seed: int = 0,
    weights: str = "noise",
) -> Fit:
    """Fit one model jointly to several runs: one stacked residual vector, one parameter map.

    Parameters are shared by default; those in ``per_run`` get one copy per run, named
    ``"name[run]"``; ``depends={"p": "covariate"}`` makes p follow a log-linear law in a
    RunMeta field across runs (:mod:`lossrate.fitting.params`). Run names come from a mapping's
    keys, else ``meta.name``, else ``run0, run1, ...``. Other arguments as in :func:`fit`.
    """
    m = resolve_model(model)
    if isinstance(runs, Mapping):
        names, items = list(runs.keys()), list(runs.values())
    else:
        items = list(runs)
        names = []
    if not items:
        raise InvalidArgumentError("runs is empty; pass at least one Trajectory or RunData.")
    if schedules is not None and len(schedules) != len(items):
        raise InvalidArgumentError(
            f"schedules has {len(schedules)} entries for {len(items)} runs; give one per run."
        )
    rds = [as_run(d, m, None if schedules is None else schedules[i]) for i, d in enumerate(items)]
    if not names:
        names = [run_name(r, i) for i, r in enumerate(rds)]
    if len(set(names)) != len(names):
        raise InvalidArgumentError(
            f"run names must be unique, got {names}; set RunMeta.name or pass a mapping."
        )
    return _fit(
        m,
        rds,
        [str(n) for n in names],
        single=False,
        shared=shared,
        per_run=per_run,
        depends=depends,
        fix=fix,
        loss=loss,
        f_scale=f_scale,
        log=log,
        starts=starts,
        level=level,
        bootstrap=bootstrap,
        seed=seed,
        prior=prior,
        weights=weights,
    )


# ---------------------------------------------------------------- core
def _fit(
    model: CurveModel,
    runs: list[RunData],
    names: list[str],
    *,
    single: bool,
    shared: Sequence[str] | None,
    per_run: Sequence[str],
    depends: Mapping[str, str] | None,
    fix: Mapping[str, float] | None,
    loss: str,
    f_scale: float | None,
    log: bool,
    starts: int,
    level: float,
    bootstrap: int,
    seed: int,
    prior: Mapping[str, tuple[float, float]] | None,
    weights: str,
    intervals: bool = True,
) -> Fit:
    t_start = time.perf_counter()
    loss = check_choice("loss", loss, LOSSES)
    weights = check_choice("weights", weights, ("noise", "measured", "none"))
    f_scale = 3.0 if f_scale is None else float(f_scale)
    if not (np.isfinite(f_scale) and f_scale > 0):
        raise InvalidArgumentError(f"f_scale must be finite and > 0, got {f_scale!r}.")
    if not 0 < float(level) < 1:
        raise InvalidArgumentError(f"level must lie in (0, 1), e.g. 0.9, got {level!r}.")
    if int(bootstrap) != bootstrap or bootstrap < 0:
        raise InvalidArgumentError(f"bootstrap must be a whole number >= 0, got {bootstrap!r}.")
    if int(starts) != starts or starts < 0:
        raise InvalidArgumentError(f"starts must be a whole number >= 0, got {starts!r}.")
    runs, dropped = _drop_zero_time(model, runs)
    settle = getattr(model, "for_runs", None)
    if callable(settle):  # settings the model decides from all the runs together
        model = settle(runs)
    pm = ParamMap(
        model,
        runs,
        names,
        shared=shared,
        per_run=per_run,
        fix=fix,
        depends=depends,
        single=single,
    )
    for run, name in zip(runs, names):
        k_run = sum(1 for rule in pm.rules[names.index(name)].values() if rule[0] != "fixed")
        _check_run(run, name, k_run, log)
    prob = _Problem(pm, log, prior, weights)
    notes = list(prob.notes) + dropped
    notes.extend(_model_notes(model, runs))
    rng = np.random.default_rng(seed)

    best = _multistart(prob, _starts(prob, int(starts), rng), loss, f_scale, notes)
    if best is None:
        raise DataError(
            f"model {model.name!r}: no start gave a finite fit; check the data or give fix=... "
            "values for the parameters you know."
        )
    z_hat = best.x
    k = pm.n_free
    fitted = prob.curves(z_hat)
    resid = [m - y for m, y in zip(fitted, prob.obs)]
    e_all = np.concatenate(resid)
    n = e_all.size
    rss = float(e_all @ e_all)
    rho1 = float(np.mean([lag1_autocorrelation(e) for e in resid]))
    dw = float(np.mean([durbin_watson(e) for e in resid]))
    noise = {nm: _robust_sd(e) for nm, e in zip(names, resid)}
    safe_rss = max(rss, 1e-300)
    metrics: dict[str, float] = {
        "n": float(n),
        "k": float(k),
        "rss": rss,
        "rmse": float(np.sqrt(rss / n)),
        "aic": float(n * np.log(safe_rss / n) + 2 * k),
        "bic": float(n * np.log(safe_rss / n) + k * np.log(n)),
        "durbin_watson": dw,
        "lag1_autocorr": rho1,
        "cost": float(best.cost),
        "nfev": float(best.nfev),
    }
    success, message, extra_notes = _judge(best, pm, z_hat)
    notes.extend(extra_notes)

    cov_z = _covariance(best)
    notes.extend(_identifiability_notes(cov_z, pm.free_names))
    values = pm.values(z_hat)
    if intervals:
        draws, b_note = _bootstrap(
            prob, best, fitted, resid, loss, f_scale, int(bootstrap), rng, refit=success
        )
        notes.append(b_note)
    else:
        draws = None
        notes.append("no intervals computed (intervals=False)")
    params = {f.name: float(v) for f, v in zip(pm.free, values)}
    stderr, ci, samples = _intervals(draws, pm, level)
    metrics["seconds"] = time.perf_counter() - t_start
    return Fit(
        model=model,
        params=params,
        stderr=stderr,
        ci=ci,
        level=float(level),
        fixed=dict(pm.fixed),
        metrics=metrics,
        success=success,
        message=message,
        notes=tuple(dict.fromkeys(notes)),
        samples=samples,
        noise_sd=noise,
        train_steps={nm: (int(r.traj.step[0]), int(r.traj.step[-1])) for nm, r in zip(names, runs)},
        extra={
            "loss": loss,
            "f_scale": f_scale,
            "log": log,
            "weights": weights,
            "runs": list(names),
        },
        runs=tuple(runs),
        run_names=tuple(names),
        pmap=pm,
        z_hat=z_hat,
        log=log,
    )


def _multistart(
    prob: _Problem, cands: list[np.ndarray], loss: str, f_scale: float, notes: list[str]
) -> Any:
    """Screen every start briefly, run the best ``_POLISH`` to convergence, and finish the
    winner on all points (screening and polishing use at most ``_SCREEN_POINTS`` points)."""
    k = prob.effective_k()
    screen = prob.thinned(_SCREEN_POINTS)

    def run(p: _Problem, z0: np.ndarray, nfev: int) -> Any:
        try:
            return _least_squares(p, z0, loss, f_scale, max_nfev=nfev * (k + 1))
        except (ValueError, np.linalg.LinAlgError) as exc:  # e.g. residuals not finite
            notes.append(f"a start failed: {exc}")
            return None

    screened = [r for r in (run(screen, z0, _SCREEN) for z0 in cands) if r is not None]
    if not screened:
        return None
    screened.sort(key=lambda r: r.cost)
    polished = [r if r.status != 0 else run(screen, r.x, _POLISH_NFEV) for r in screened[:_POLISH]]
    polished = [r for r in polished if r is not None]
    if not polished:
        return None
    best = min(polished, key=lambda r: r.cost)
    if screen is not prob:
        best = run(prob, best.x, _POLISH_NFEV)
    for _ in range(_EXTRA_ROUNDS):  # out of budget: go on while the cost still falls
        if best is None or best.status != 0:
            break
        more = run(prob, best.x, _POLISH_NFEV)
        if more is None:
            break
        stalled = best.cost - more.cost <= 1e-9 * max(best.cost, 1e-300)
        best = more
        if stalled:  # a flat valley: further evaluations do not lower the cost
            best.status, best.message = 2, "the cost stopped falling along a flat direction"
            break
    return best


def _model_notes(model: CurveModel, runs: Sequence[RunData]) -> list[str]:
    hook = getattr(model, "notes", None)
    if not callable(hook):
        return []
    out: list[str] = []
    for run in runs:
        out.extend(str(n) for n in hook(run))
    return out


def _robust_sd(e: np.ndarray) -> float:
    """1.4826 MAD, floored by a tenth of the RMS (a fit with half its residuals 0 still has noise)."""
    mad = 1.4826 * float(np.median(np.abs(e - np.median(e))))
    rms = float(np.sqrt(np.mean(e**2)))
    return max(mad, 0.1 * rms)


def _judge(res: Any, pm: ParamMap, z: np.ndarray) -> tuple[bool, str, list[str]]:
    notes = []
    span = pm.upper - pm.lower
    at_lo = z - pm.lower <= 1e-6 * span
    at_hi = pm.upper - z <= 1e-6 * span
    for f, lo, hi in zip(pm.free, at_lo, at_hi):
        if lo or hi:
            notes.append(
                f"{f.name} ended at its {'lower' if lo else 'upper'} bound "
                f"({f.to_value(f.lower if lo else f.upper):.4g}); the data push it there: fix it "
                "(fix={...}) or check that the model suits the curve."
            )
    if not np.all(np.isfinite(res.fun)) or np.any(np.abs(res.fun) >= _BIG):
        return (
            False,
            (
                "the best fit leaves points where the model is not finite; give starting values "
                "through fix=..., or a model whose range covers the data."
            ),
            notes,
        )
    if res.status <= 0:
        return (
            False,
            (
                f"least squares stopped early ({res.message}); raise starts, fix poorly identified "
                "parameters (see notes), or fit a longer stretch of the curve."
            ),
            notes,
        )
    return True, f"converged ({res.message.rstrip('.')})", notes


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
    centres from their Gaussians. When that would take longer than ``_BOOT_BUDGET_S`` (a
    slow model or many points), with ``reps == 0`` (then 200 replicates) or ``refit=False``,
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
    if refit:
        t0 = time.perf_counter()
        prob.residuals(z_hat)
        t_eval = time.perf_counter() - t0
        k_eff = prob.effective_k()
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
