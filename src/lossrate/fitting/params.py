"""The parameter map of a fit: one free vector z for a list of runs.

Every model parameter ``p`` of every run is one of

* **shared**   — one free coordinate ``p`` used by all runs;
* **per-run**  — one free coordinate ``p[run]`` per run;
* **fixed**    — a value given by the user (``fix={"p": v}`` or ``fix={"p[run]": v}``);
* **law**      — a log-linear law in a run covariate x (a :class:`~lossrate.RunMeta` field):
  ``T(p_r) = a + b ln(x_r / x_ref)`` with free coordinates ``p`` (= a, the value at the
  geometric-mean covariate x_ref) and ``p~x`` (= b); ``T`` is ln for log-scale parameters
  and the identity otherwise (so a log-scale parameter follows a power law in x).

Free coordinates live on the *search scale*: z = ln(value) for ``Param.scale == "log"``,
z = value otherwise. Bounds are mapped the same way; a shared parameter takes the
intersection of the runs' (data-dependent) bounds.

A Gaussian prior ``{"p": (mean, sd)}`` adds the residual (z - T(mean)) / sd to the fit:
``mean`` is in the parameter's natural units, ``sd`` on the search scale (for a log-scale
parameter an sd of 0.1 means "about 10 %").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .._errors import InvalidArgumentError
from .._model import CurveModel, Param, RunData

__all__ = ["FreeParam", "ParamMap"]


@dataclass(frozen=True)
class FreeParam:
    """One free coordinate: its public name, search-scale bounds and whether z = ln(value)."""

    name: str
    lower: float
    upper: float
    log: bool
    param: Param

    def to_value(self, z: float) -> float:
        return float(np.exp(z)) if self.log else float(z)

    def to_z(self, value: float) -> float:
        if self.log:
            if not value > 0:
                raise InvalidArgumentError(
                    f"{self.name}={value!r}: a log-scale parameter needs a value > 0."
                )
            return float(np.log(value))
        return float(value)


def _z_bounds(p: Param) -> tuple[float, float]:
    if p.scale == "log":
        return float(np.log(p.lower)), float(np.log(p.upper))
    return float(p.lower), float(p.upper)


class ParamMap:
    """Maps the free vector z to one natural-unit theta dict per run (see module docstring)."""

    def __init__(
        self,
        model: CurveModel,
        runs: Sequence[RunData],
        names: Sequence[str],
        *,
        shared: Sequence[str] | None = None,
        per_run: Sequence[str] = (),
        fix: Mapping[str, float] | None = None,
        depends: Mapping[str, str] | None = None,
        single: bool = False,
    ) -> None:
        self.model = model
        self.runs = tuple(runs)
        self.names = tuple(names)
        self.single = single
        self.run_params: list[dict[str, Param]] = [
            {p.name: p for p in model.params(run)} for run in self.runs
        ]
        order = [p.name for p in model.params(self.runs[0])]
        for i, ps in enumerate(self.run_params):
            if list(ps) != order:
                raise InvalidArgumentError(
                    f"model {model.name!r} gives different parameters for run {self.names[i]!r} "
                    f"({list(ps)}) than for {self.names[0]!r} ({order}); fit them separately."
                )
        self.order = order
        fix = dict(fix or {})
        depends = dict(depends or {})
        per_run = tuple(per_run)
        known = set(order)
        for label, group in (("per_run", per_run), ("depends", tuple(depends))):
            bad = sorted(set(group) - known)
            if bad:
                raise InvalidArgumentError(
                    f"{label} names unknown parameter(s) {bad}; model {model.name!r} has {order}."
                )
        if shared is not None:
            bad = sorted(set(shared) - known)
            if bad:
                raise InvalidArgumentError(
                    f"shared names unknown parameter(s) {bad}; model {model.name!r} has {order}."
                )
            overlap = sorted(set(shared) & (set(per_run) | set(depends)))
            if overlap:
                raise InvalidArgumentError(
                    f"parameter(s) {overlap} are listed as shared and as per_run/depends; pick one."
                )
        both = sorted(set(per_run) & set(depends))
        if both:
            raise InvalidArgumentError(
                f"parameter(s) {both} are both per_run and in depends; pick one."
            )
        self.fixed: dict[str, float] = {}
        fixed_run: list[dict[str, float]] = [{} for _ in self.runs]
        for key, value in fix.items():
            base, run_name = _split(key)
            if base not in known:
                raise InvalidArgumentError(
                    f"fix names unknown parameter {key!r}; model {model.name!r} has {order}."
                )
            try:
                v = float(value)
            except (TypeError, ValueError):
                raise InvalidArgumentError(
                    f"fix[{key!r}] must be a number, got {value!r}."
                ) from None
            if not np.isfinite(v):
                raise InvalidArgumentError(f"fix[{key!r}] must be finite, got {value!r}.")
            if run_name is None:
                for d in fixed_run:
                    d.setdefault(base, v)  # a per-run fix of the same parameter wins
            else:
                if run_name not in self.names:
                    raise InvalidArgumentError(
                        f"fix names run {run_name!r} in {key!r}; the runs are {list(self.names)}."
                    )
                fixed_run[self.names.index(run_name)][base] = v
            self.fixed[key] = v
        self.free: list[FreeParam] = []
        self.laws: dict[str, tuple[str, float]] = {}
        # rules[r][p] = ("fixed", v) | ("free", j) | ("law", j_a, j_b, logx)
        self.rules: list[dict[str, tuple]] = [{} for _ in self.runs]
        for p in order:
            fixed_all = all(p in d for d in fixed_run)
            if fixed_all:
                for r, d in enumerate(fixed_run):
                    self.rules[r][p] = ("fixed", d[p])
                continue
            if p in depends and not single:
                self._add_law(p, depends[p], fixed_run)
            elif (p in per_run and not single) or any(p in d for d in fixed_run):
                for r, d in enumerate(fixed_run):
                    if p in d:
                        self.rules[r][p] = ("fixed", d[p])
                    else:
                        j = self._add_free(f"{p}[{self.names[r]}]", [self.run_params[r][p]])
                        self.rules[r][p] = ("free", j)
            else:
                j = self._add_free(p, [ps[p] for ps in self.run_params])
                for r in range(len(self.runs)):
                    self.rules[r][p] = ("free", j)
        if not self.free:
            raise InvalidArgumentError(
                "every parameter is fixed: nothing is left to fit. Remove some entries of fix."
            )
        self.lower = np.array([f.lower for f in self.free])
        self.upper = np.array([f.upper for f in self.free])

    # ------------------------------------------------------------ building
    def _add_free(self, name: str, params: Sequence[Param]) -> int:
        bounds = [_z_bounds(p) for p in params]
        lo = max(b[0] for b in bounds)
        hi = min(b[1] for b in bounds)
        if not lo < hi:
            raise InvalidArgumentError(
                f"shared parameter {name!r} has no common range across the runs "
                f"(bounds {[(p.lower, p.upper) for p in params]}); make it per_run."
            )
        self.free.append(FreeParam(name, lo, hi, params[0].scale == "log", params[0]))
        return len(self.free) - 1

    def _add_law(self, p: str, covariate: str, fixed_run: list[dict[str, float]]) -> None:
        xs = []
        for run, name in zip(self.runs, self.names):
            x = getattr(run.traj.meta, covariate, None)
            if x is None:
                x = run.traj.meta.extra.get(covariate)
            try:
                xv = float(x)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                xv = np.nan
            if not (np.isfinite(xv) and xv > 0):
                raise InvalidArgumentError(
                    f"depends={{{p!r}: {covariate!r}}}: run {name!r} has {covariate}={x!r}; the "
                    "covariate must be a positive number in RunMeta (or RunMeta.extra) of every run."
                )
            xs.append(xv)
        logx = np.log(np.asarray(xs))
        self.laws[p] = (covariate, float(logx.mean()))
        logx = logx - logx.mean()
        if np.ptp(logx) == 0:
            raise InvalidArgumentError(
                f"depends={{{p!r}: {covariate!r}}}: every run has the same {covariate}; "
                "a law needs at least two different values. Share the parameter instead."
            )
        ja = self._add_free(p, [ps[p] for ps in self.run_params])
        span = float(self.free[ja].upper - self.free[ja].lower) / float(np.ptp(logx))
        slope = Param(f"{p}~{covariate}", -span, span, "linear", f"slope of {p} in ln {covariate}")
        self.free.append(FreeParam(f"{p}~{covariate}", -span, span, False, slope))
        jb = len(self.free) - 1
        for r in range(len(self.runs)):
            self.rules[r][p] = ("law", ja, jb, float(logx[r]))

    # ------------------------------------------------------------ mapping
    @property
    def n_free(self) -> int:
        return len(self.free)

    @property
    def free_names(self) -> list[str]:
        return [f.name for f in self.free]

    def run_columns(self) -> list[np.ndarray]:
        """For each run, the free coordinates its parameters depend on (sorted)."""
        out = []
        for rules in self.rules:
            cols: set[int] = set()
            for rule in rules.values():
                if rule[0] == "free":
                    cols.add(rule[1])
                elif rule[0] == "law":
                    cols.update((rule[1], rule[2]))
            out.append(np.array(sorted(cols), dtype=int))
        return out

    def thetas(self, z: np.ndarray) -> list[dict[str, float]]:
        """Natural-unit parameters of every run for the free vector ``z``."""
        out = []
        for r, rules in enumerate(self.rules):
            theta: dict[str, float] = {}
            for p, rule in rules.items():
                kind = rule[0]
                if kind == "fixed":
                    theta[p] = rule[1]
                elif kind == "free":
                    theta[p] = self.free[rule[1]].to_value(z[rule[1]])
                else:
                    ja, jb, lx = rule[1], rule[2], rule[3]
                    zz = z[ja] + z[jb] * lx
                    if self.free[ja].log:
                        theta[p] = float(np.exp(zz))
                    else:
                        theta[p] = float(zz)
                    pr = self.run_params[r][p]
                    theta[p] = float(np.clip(theta[p], pr.lower, pr.upper))
            out.append(theta)
        return out

    def theta_new(self, z: np.ndarray, run: RunData) -> dict[str, float]:
        """Parameters for a run that was not fitted: shared and fixed values, laws evaluated
        at its covariate; a per-run parameter has no value for it (an error)."""
        bounds = {p.name: p for p in self.model.params(run)}
        theta: dict[str, float] = {}
        for p in self.order:
            rules = [rules[p] for rules in self.rules]
            kind = rules[0][0]
            if kind == "law":
                covariate, mean = self.laws[p]
                x = getattr(run.traj.meta, covariate, None) or run.traj.meta.extra.get(covariate)
                if x is None or not float(x) > 0:
                    raise InvalidArgumentError(
                        f"{p} follows a law in {covariate!r}, but the new run has {covariate}={x!r}; "
                        f"set RunMeta.{covariate}."
                    )
                ja, jb = rules[0][1], rules[0][2]
                zz = z[ja] + z[jb] * (np.log(float(x)) - mean)
                v = float(np.exp(zz)) if self.free[ja].log else float(zz)
                theta[p] = float(np.clip(v, bounds[p].lower, bounds[p].upper))
            elif all(r == rules[0] for r in rules):
                theta[p] = (
                    rules[0][1]
                    if kind == "fixed"
                    else self.free[rules[0][1]].to_value(z[rules[0][1]])
                )
            else:
                raise InvalidArgumentError(
                    f"parameter {p!r} is per-run in this fit, so a new run has no value for it; "
                    "predict a fitted run (run='name'), or refit with it shared or fixed."
                )
        return theta

    def values(self, z: np.ndarray) -> np.ndarray:
        """Natural-unit values of the free coordinates."""
        return np.array([f.to_value(v) for f, v in zip(self.free, z)])

    def to_z(self, values: np.ndarray) -> np.ndarray:
        return np.array([f.to_z(v) for f, v in zip(self.free, values)])

    def start(self, guesses: Sequence[Mapping[str, float]]) -> np.ndarray:
        """A start z from one guess dict per run (clipped strictly inside the bounds)."""
        z = np.empty(self.n_free)
        seen = np.zeros(self.n_free, dtype=bool)
        for r, rules in enumerate(self.rules):
            g = guesses[r]
            for p, rule in rules.items():
                if rule[0] == "fixed":
                    continue
                j = rule[1]
                if rule[0] == "law":
                    if not seen[rule[2]]:
                        z[rule[2]] = 0.0
                        seen[rule[2]] = True
                if seen[j]:
                    continue
                if p not in g:
                    raise InvalidArgumentError(
                        f"model {self.model.name!r}: its guess lacks parameter {p!r}."
                    )
                f = self.free[j]
                v = float(g[p])
                if f.log:
                    v = max(v, np.exp(f.lower))
                z[j] = f.to_z(v)
                seen[j] = True
        return self.clip(z)

    def clip(self, z: np.ndarray) -> np.ndarray:
        span = self.upper - self.lower
        margin = np.minimum(1e-6 * span + 1e-12, 0.25 * span)
        return np.clip(z, self.lower + margin, self.upper - margin)

    def prior_terms(
        self, prior: Mapping[str, tuple[float, float]] | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(indices, centres, sds) of Gaussian prior terms on free coordinates."""
        if not prior:
            return np.zeros(0, dtype=int), np.zeros(0), np.zeros(0)
        idx, mu, sd = [], [], []
        names = self.free_names
        for key, spec in prior.items():
            try:
                mean, s = (float(v) for v in spec)
            except (TypeError, ValueError):
                raise InvalidArgumentError(
                    f"prior[{key!r}] must be a pair (mean, sd), got {spec!r}."
                ) from None
            if not (np.isfinite(mean) and np.isfinite(s) and s > 0):
                raise InvalidArgumentError(
                    f"prior[{key!r}] = {spec!r}: mean must be finite and sd finite and > 0."
                )
            if key in names:
                targets = [names.index(key)]
            else:
                run = _split(key)[1]
                targets = [j for j, n in enumerate(names) if run is None and _split(n)[0] == key]
                if not targets:
                    fixed = key in self.fixed
                    raise InvalidArgumentError(
                        f"prior names {key!r}, which is "
                        + ("fixed" if fixed else "not a free parameter")
                        + f"; the free parameters are {names}."
                    )
            for j in targets:
                idx.append(j)
                mu.append(self.free[j].to_z(mean))
                sd.append(s)
        return np.asarray(idx, dtype=int), np.asarray(mu), np.asarray(sd)


def _split(key: str) -> tuple[str, str | None]:
    """'beta[run1]' -> ('beta', 'run1'); 'beta' -> ('beta', None)."""
    if key.endswith("]") and "[" in key:
        base, run = key[:-1].split("[", 1)
        return base, run
    return key, None
