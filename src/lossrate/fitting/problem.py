"""The residual problem of a fit: standardised log residuals for a parameter map, their
Jacobians (grouped or analytic) and one robust least-squares search.

The objective and the noise weights are those of :mod:`lossrate.fitting.engine` (its module
docstring states them); :class:`_SVD` decomposes the Jacobians that the intervals
(:mod:`lossrate.fitting.intervals`) use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import sparse
from scipy.optimize import least_squares

from .._errors import InvalidArgumentError
from .._model import RunData
from .params import ParamMap

_BIG = 1e3  # standardised residual given to points where the model is not finite
_SPARSE_DENSITY = 0.5  # joint fits whose Jacobian has at most this fill use its sparsity
_DENSE_MAX = 2_000_000  # a grouped Jacobian with more entries stays sparse (LSMR steps)
_FD_STEP = float(np.sqrt(np.finfo(float).eps))  # relative forward-difference step


def _noise_sd(run: RunData, log: bool, weights: str) -> tuple[np.ndarray, str | None]:
    """Per-point noise sd of the fitted quantity (the engine's module docstring) and a note."""
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


class _Problem:
    """Residuals of a fit (the engine's module docstring) for a parameter map and targets."""

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
        shape = (self.n + self.prior_idx.size, z.size)
        dense = np.zeros(shape) if shape[0] * shape[1] <= _DENSE_MAX else None
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
                if dense is not None:  # a coordinate two parameters share gets both terms
                    dense[idx, j] += d[:, c] * scale
                    continue
                rows.append(idx)
                cols.append(np.full(idx.size, j))
                vals.append(d[:, c] * scale)
            offset += steps.size
        prior_rows = offset + np.arange(self.prior_idx.size)
        if dense is not None:
            np.add.at(dense, (prior_rows, self.prior_idx), 1.0 / self.prior_sd)
            return dense
        rows.append(prior_rows)
        cols.append(self.prior_idx)
        vals.append(1.0 / self.prior_sd)
        return sparse.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=shape
        )  # duplicate (row, column) entries add up

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
