"""Priors from earlier runs: what other runs of the same model and data say about a new one.

For a curve model with parameters theta, each on its *search scale* z (z = ln theta for
log-scale parameters, z = theta otherwise), a :class:`Prior` holds for every parameter a
Gaussian N(mu_j(x), s_j^2) on z:

* a parameter **shared** by the earlier runs' joint fit: mu_j = its estimate, and s_j the
  spread one run's data alone would give, s_j = se_j sqrt(R) (se_j the joint fit's standard
  error on z, R the number of runs): the runs agreed on one value, and a new run is assumed
  to differ from it by no more than one run's estimation noise;
* a **per-run** parameter: mu_j = mean_r z_jr and s_j = sd_r z_jr (the spread across runs);
* a parameter following a **law** in a run setting x (``depends={"c": "peak_lr"}``):
  mu_j(x) = a_j + b_j (ln x - ln x_ref), evaluated at the new run's x; s_j = se(a_j) sqrt(R).

Every spread is floored at ``min_spread`` (on z) so a prior never claims more than the data
can know. ``fit_with_prior(prefix, prior)`` is then the penalised (MAP) fit

    minimise  sum_i rho(r_i / w_i)  +  sum_j ((z_j - mu_j) / s_j)^2        (engine ``prior=``)

whose intervals combine the prefix's own residuals (moving-block bootstrap) with the prior's
spread (each bootstrap replicate draws the prior centres mu_j* ~ N(mu_j, s_j^2)), so a
parameter the prefix cannot identify keeps the spread across runs in its interval.

A prior from runs whose lr never decayed cannot know the loss drop of a decay: predicting
one through :func:`predict_with_prior` warns (:class:`DecayNotIdentifiedWarning`) and widens
the interval after the decay starts to cover the no-decay curve and the same gain again.

Files: :meth:`Prior.save` writes plain JSON (``"format": "lossrate-prior"``, ``"version"``),
atomically; :meth:`Prior.load` refuses other formats and newer versions with a clear error.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import DataError, InvalidArgumentError
from ._model import CurveModel, RunData
from ._results import Prediction
from .fit import Fit, fit, fit_many, get_model, predict
from .schedule import Schedule, decays_after_peak
from .trajectory import Trajectory, atomic_write

__all__ = [
    "DEFAULT_PER_RUN",
    "FORMAT",
    "VERSION",
    "DecayNotIdentifiedWarning",
    "ParamPrior",
    "Prior",
    "SourceRun",
    "check_runs",
    "decays",
    "fit_with_prior",
    "predict_with_prior",
    "prior_model",
]

FORMAT = "lossrate-prior"
VERSION = 1
#: parameters refitted per run by default (the rest are shared across the earlier runs):
#: the ODE's start, floor and rate level; the peers' L0, A, alpha (the multi-power-law paper's
#: setting: its B, C, beta, gamma and the momentum law's C come from the earlier runs).
DEFAULT_PER_RUN: dict[str, tuple[str, ...]] = {
    "ode": ("L0", "L_inf", "rho_ref"),
    "ode_noise": ("L0", "L_inf", "rho_ref"),
    "ode_relax": ("L0", "L_inf", "rho_ref", "beta"),  # start, and floor/level/exponent as
    # the peers' L0, A, alpha; the drop's B, C, kappa, gamma and rho's S0 come from the runs
    "momentum": ("L0", "A", "alpha"),
    "multipower": ("L0", "A", "alpha"),
    "power_steps": ("L0", "A"),
    "power_S": ("L0", "A"),
    "exponential": ("L0", "A"),
}
_DECAY_DROP = 0.9  # a run "decays" when its lr falls below this share of its peak after the peak
_WIDE = 1.0  # spread (on z) of a per-run parameter seen in a single run


class DecayNotIdentifiedWarning(UserWarning):
    """A prior from runs that never decayed is asked to predict a decay."""


# ------------------------------------------------------------------ records
@dataclass(frozen=True)
class ParamPrior:
    """N(centre + slope (ln x - log_ref), spread^2) on one parameter's search scale z.

    ``kind`` is "shared", "per_run", "law" or "fixed" (held fixed in the earlier fits; the
    new fit holds it at ``centre``). ``log``: z = ln(value).
    """

    centre: float
    spread: float
    log: bool
    kind: str = "shared"
    covariate: str | None = None
    slope: float = 0.0
    log_ref: float = 0.0

    def z_at(self, x: float | None) -> float:
        """The centre on z for a run with covariate value ``x`` (laws only need it)."""
        if self.covariate is None:
            return self.centre
        if x is None or not (math.isfinite(float(x)) and float(x) > 0):
            raise InvalidArgumentError(
                f"this prior follows a law in {self.covariate!r}; the new run has "
                f"{self.covariate}={x!r}. Set RunMeta.{self.covariate} to a positive number."
            )
        return self.centre + self.slope * (math.log(float(x)) - self.log_ref)

    def value_at(self, x: float | None = None) -> float:
        """The centre in natural units."""
        z = self.z_at(x)
        return math.exp(z) if self.log else z


@dataclass(frozen=True)
class SourceRun:
    """What a prior remembers of one earlier run (never its points)."""

    name: str
    peak_lr: float | None
    schedule: str | None
    decayed: bool
    loss: str | None = None
    n_points: int = 0


@dataclass(frozen=True)
class Prior:
    """Per-parameter centres and spreads across earlier runs (module docstring).

    Attributes:
        model: registered model name; ``model_options`` rebuild the instance.
        params: one :class:`ParamPrior` per parameter name.
        sources: the earlier runs (names and settings only).
        level: the level of the intervals it was built with (informational).
        version: file-format version.
    """

    model: str
    params: Mapping[str, ParamPrior]
    sources: tuple[SourceRun, ...]
    model_options: Mapping[str, Any] = field(default_factory=dict)
    level: float = 0.9
    version: int = VERSION

    # -------------------------------------------------------------- views
    @property
    def source_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.sources)

    @property
    def decayed(self) -> bool:
        """Whether any earlier run decayed its lr (the decay gain is then identified)."""
        return any(s.decayed for s in self.sources)

    def build_model(self) -> CurveModel:
        """The curve model instance the prior was built for."""
        return get_model(self.model, **dict(self.model_options))

    def centres(self, meta: Any = None) -> dict[str, float]:
        """Centres in natural units for a run with metadata ``meta`` (for laws)."""
        return {n: p.value_at(_covariate(meta, p.covariate)) for n, p in self.params.items()}

    def engine_prior(
        self, meta: Any = None, *, names: Iterable[str] | None = None, scale: float = 1.0
    ) -> dict[str, tuple[float, float]]:
        """``{name: (mean, sd)}`` for :func:`lossrate.fit`'s ``prior=``: mean in natural units
        at the run's settings, sd = ``scale`` x spread on the search scale."""
        keep = set(self.params) if names is None else set(names)
        out = {}
        for n, p in self.params.items():
            if n in keep and p.kind != "fixed":
                out[n] = (p.value_at(_covariate(meta, p.covariate)), scale * p.spread)
        return out

    # -------------------------------------------------------------- build
    @classmethod
    def from_fit(
        cls,
        joint: Fit,
        *,
        min_spread: float = 0.02,
        decay_of: Mapping[str, bool] | None = None,
    ) -> Prior:
        """A prior from a joint fit of earlier runs (:func:`lossrate.fit_many`).

        Shared parameters: estimate and spread se sqrt(R); per-run ones: mean and sd across
        runs; laws: coefficients, evaluated at a new run's setting (module docstring).
        """
        if not isinstance(joint, Fit) or joint.pmap is None or joint.z_hat is None:
            raise InvalidArgumentError(
                "joint must be the result of lossrate.fit_many (or fit) in this session; a "
                "FitResult read from JSON has no parameter map. Use Prior.from_runs(folder)."
            )
        pm, z = joint.pmap, np.asarray(joint.z_hat, dtype=float)
        R = len(pm.runs)
        se_z = _search_scale_se(joint)
        params: dict[str, ParamPrior] = {}
        for p in pm.order:
            rules = [rules[p] for rules in pm.rules]
            kind = rules[0][0]
            if kind == "law":
                ja, jb = rules[0][1], rules[0][2]
                cov, log_ref = pm.laws[p]
                params[p] = ParamPrior(
                    float(z[ja]),
                    _floor(se_z[ja] * math.sqrt(R), min_spread),
                    pm.free[ja].log,
                    "law",
                    cov,
                    float(z[jb]),
                    float(log_ref),
                )
            elif all(r == rules[0] for r in rules):
                if kind == "fixed":
                    v = float(rules[0][1])
                    log = pm.run_params[0][p].scale == "log"
                    params[p] = ParamPrior(math.log(v) if log else v, 0.0, log, "fixed")
                else:
                    j = rules[0][1]
                    params[p] = ParamPrior(
                        float(z[j]), _floor(se_z[j] * math.sqrt(R), min_spread), pm.free[j].log
                    )
            else:
                log = pm.run_params[0][p].scale == "log"
                vals = []
                for rule in rules:
                    if rule[0] == "fixed":
                        v = float(rule[1])
                        vals.append(math.log(v) if log else v)
                    else:
                        vals.append(float(z[rule[1]]))
                arr = np.asarray(vals)
                sd = float(arr.std(ddof=1)) if arr.size > 1 else _WIDE
                params[p] = ParamPrior(float(arr.mean()), _floor(sd, min_spread), log, "per_run")
        sources = tuple(
            _source(run, name, None if decay_of is None else decay_of.get(name))
            for run, name in zip(pm.runs, joint.run_names)
        )
        return cls(
            model=pm.model.name,
            params=params,
            sources=sources,
            model_options=_model_options(pm.model),
            level=float(joint.level),
        )

    @classmethod
    def from_runs(
        cls,
        runs: str
        | os.PathLike[str]
        | Sequence[Trajectory | RunData | tuple[Trajectory, Schedule]]
        | Mapping[str, Trajectory | RunData | tuple[Trajectory, Schedule]],
        model: CurveModel | str = "ode_noise",
        *,
        per_run: Sequence[str] | None = None,
        depends: Mapping[str, str] | None = None,
        max_points: int | None = 300,
        min_spread: float = 0.02,
        **fit_options: Any,
    ) -> Prior:
        """A prior from earlier runs: one joint fit (:func:`lossrate.fit_many`).

        Args:
            runs: trajectories (with their lr, or as (Trajectory, Schedule) pairs / RunData),
                a mapping name -> run, or a folder of trajectory files (``.csv``/``.parquet``)
                or of saved fit results / priors (``.json``: their estimates are pooled).
            model: the curve model ("ode_noise" is fitted with its lr exponent free).
            per_run: parameters with one value per run (default :data:`DEFAULT_PER_RUN`);
                every other parameter is shared.
            depends: laws in a run setting, e.g. ``{"c": "peak_lr"}``.
            max_points: each run is thinned to at most this many evenly spaced points for the
                joint fit (its first and last point kept); None keeps every point.
            min_spread: floor of every spread on the search scale.
            fit_options: passed to :func:`lossrate.fit_many` (default ``bootstrap=0``).

        Raises:
            InvalidArgumentError / DataError: runs with different loss functions, a run
                without the setting a law needs, an empty folder (naming run and field).
        """
        if isinstance(runs, str | os.PathLike):
            if not Path(runs).is_dir():
                raise InvalidArgumentError(
                    f"runs={str(runs)!r} is not a folder; pass a folder of trajectory files "
                    "or fit JSONs, or a list of trajectories."
                )
            return cls.from_path(
                runs,
                model,
                per_run=per_run,
                depends=depends,
                max_points=max_points,
                min_spread=min_spread,
                **fit_options,
            )
        m = prior_model(model)
        named = _named_runs(runs, m)
        check_runs(named, depends)
        pr = tuple(DEFAULT_PER_RUN.get(m.name, ()) if per_run is None else per_run)
        thinned = {n: _thin(r, max_points) for n, r in named.items()}
        opts = {"bootstrap": 0, "starts": 1, **fit_options}
        joint = fit_many(thinned, m, per_run=pr, depends=depends, **opts)
        decay_of = {n: decays(r) for n, r in named.items()}
        return cls.from_fit(joint, min_spread=min_spread, decay_of=decay_of)

    @classmethod
    def from_fit_files(
        cls,
        paths: Sequence[str | os.PathLike[str]],
        model: CurveModel | str,
        *,
        min_spread: float = 0.02,
    ) -> Prior:
        """A prior pooling saved results: fit JSONs (``FitResult.to_json``, one run each:
        centre = mean and spread = sd of the estimates on z across files) or saved priors
        (their sources and parameters are taken as they are when only one is given)."""
        m = prior_model(model)
        if len(paths) == 1:
            try:
                return cls.load(paths[0])
            except DataError as exc:
                if "lossrate-prior" not in str(exc):
                    raise
        scales = _param_scales(m)
        per: dict[str, list[float]] = {}
        sources = []
        for path in paths:
            data = _read_json(Path(path))
            if data.get("format") == FORMAT:
                raise DataError(
                    f"{str(path)!r} is a saved prior; pass it alone (Prior.load) rather than "
                    "mixed with fit results."
                )
            if not isinstance(data.get("params"), dict):
                raise DataError(
                    f"{str(path)!r} has no 'params' object; it is not a FitResult.to_json file."
                )
            for name, v in data["params"].items():
                if v is None or name not in scales:
                    continue
                z = math.log(v) if scales[name] and v > 0 else float(v)
                per.setdefault(name, []).append(z)
            runs = data.get("extra", {}).get("runs") or [Path(path).stem]
            sources.append(SourceRun(str(runs[0]), None, None, False))
        if not per:
            raise DataError(
                f"no parameter of model {m.name!r} was found in {list(map(str, paths))}."
            )
        params = {}
        for name, zs in per.items():
            arr = np.asarray(zs)
            sd = float(arr.std(ddof=1)) if arr.size > 1 else _WIDE
            params[name] = ParamPrior(
                float(arr.mean()), _floor(sd, min_spread), scales[name], "per_run"
            )
        return cls(m.name, params, tuple(sources), _model_options(m))

    # -------------------------------------------------------------- files
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (format tag and version first)."""
        return {
            "format": FORMAT,
            "version": self.version,
            "model": self.model,
            "model_options": dict(self.model_options),
            "level": self.level,
            "params": {n: dataclasses.asdict(p) for n, p in self.params.items()},
            "sources": [dataclasses.asdict(s) for s in self.sources],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "prior") -> Prior:
        """Inverse of :meth:`to_dict`, with checks of the format and version."""
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            raise DataError(
                f"{source}: not a lossrate-prior file (its 'format' is "
                f"{data.get('format') if isinstance(data, Mapping) else type(data).__name__!r}); "
                "write priors with Prior.save."
            )
        version = data.get("version")
        if not isinstance(version, int) or version < 1:
            raise DataError(f"{source}: 'version' must be a whole number >= 1, got {version!r}.")
        if version > VERSION:
            raise DataError(
                f"{source}: prior file version {version} is newer than this lossrate reads "
                f"(version {VERSION}); upgrade lossrate."
            )
        try:
            params = {n: ParamPrior(**p) for n, p in data["params"].items()}
            sources = tuple(SourceRun(**s) for s in data["sources"])
            return cls(
                model=str(data["model"]),
                params=params,
                sources=sources,
                model_options=dict(data.get("model_options", {})),
                level=float(data.get("level", 0.9)),
                version=version,
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise DataError(
                f"{source}: malformed prior file ({exc!r}); rewrite it with Prior.save."
            ) from None

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the prior as JSON (atomically: a crash leaves the old file or none)."""
        p = Path(path)
        text = json.dumps(self.to_dict(), indent=2, sort_keys=False)
        atomic_write(p, lambda f: f.write(text + "\n"))
        return p

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Prior:
        """Read a prior written by :meth:`save` (see :meth:`from_dict` for the checks)."""
        p = Path(path)
        return cls.from_dict(_read_json(p), source=repr(str(p)))

    @classmethod
    def from_path(
        cls,
        path: str | os.PathLike[str],
        model: CurveModel | str = "ode_noise",
        *,
        exclude: Sequence[str | os.PathLike[str]] = (),
        **options: Any,
    ) -> Prior:
        """A prior from whatever ``path`` holds (what ``lossrate fit --prior`` accepts).

        * a saved prior (:meth:`save`): loaded as it is (``model`` is then the prior's);
        * a fit result JSON (``FitResult.to_json``) or a folder of them: pooled
          (:meth:`from_fit_files`);
        * a folder of trajectory files (``.csv``/``.parquet``, e.g. runs written by
          ``lossrate train``, or ``*/trajectory.csv`` one level down): one joint fit
          (:meth:`from_runs`, ``options`` passed on).

        ``exclude`` names files never used (the new run's own log, so that its points cannot
        enter its own prior).
        """
        p = Path(path)
        if not p.exists():
            raise InvalidArgumentError(
                f"prior path {str(p)!r} does not exist; pass a saved prior (.json), a fit JSON, "
                "or a folder of earlier runs' trajectories."
            )
        skip = {Path(e).resolve() for e in exclude}
        if p.is_file():
            if p.resolve() in skip:
                raise InvalidArgumentError(
                    f"the prior {str(p)!r} is the run being fitted; a prior must come from other runs."
                )
            data = _read_json(p)
            if isinstance(data, Mapping) and data.get("format") == FORMAT:
                return cls.from_dict(data, source=repr(str(p)))
            return cls.from_fit_files([p], model, min_spread=options.get("min_spread", 0.02))
        files = [
            f
            for f in sorted(p.iterdir()) + sorted(p.glob("*/trajectory.csv"))
            if f.is_file() and f.resolve() not in skip
        ]
        trajs = [f for f in files if f.suffix.lower() in (".csv", ".parquet", ".pq")]
        jsons = [f for f in files if f.suffix.lower() == ".json"]
        if not trajs:
            if jsons:
                return cls.from_fit_files(jsons, model, min_spread=options.get("min_spread", 0.02))
            raise DataError(
                f"folder {str(p)!r} holds no trajectory (.csv/.parquet, or */trajectory.csv) or "
                "fit (.json) files besides the run being fitted."
            )
        runs: dict[str, Trajectory] = {}
        for f in trajs:
            t = Trajectory.read(f)
            name = t.meta.name or (f.parent.name if f.name == "trajectory.csv" else f.stem)
            while name in runs:
                name += "'"
            runs[name] = t
        return cls.from_runs(runs, model, **options)


# ------------------------------------------------------------------ fitting
def prior_model(model: CurveModel | str) -> CurveModel:
    """The model as used with priors: "ode_noise" fits the lr exponent of its noise
    equilibrium in every run (so runs with and without a decay share one parameter list)."""
    if isinstance(model, str) and model == "ode_noise":
        for option in ("fit_q", "fit_p"):
            try:
                return get_model("ode_noise", **{option: True})
            except InvalidArgumentError:
                continue
    return get_model(model)


def fit_with_prior(
    prefix: Trajectory | RunData,
    prior: Prior,
    *,
    schedule: Schedule | None = None,
    refit: Sequence[str] | None = None,
    mode: str = "prior",
    per_run_prior: bool = True,
    scale: float = 1.0,
    **fit_options: Any,
) -> Fit:
    """The MAP fit of ``prefix`` under ``prior`` (module docstring).

    Args:
        prefix: the new run's observed part (its lr or ``schedule`` covering the prediction).
        prior: from :meth:`Prior.from_fit` / :meth:`Prior.from_runs` / :meth:`Prior.load`.
        refit: parameters fitted freely on the prefix (default: the prior's per-run ones).
        mode: "prior" (the other parameters get the Gaussian prior), or "fixed" (they are
            held at the prior's centre: the multi-power-law paper's setting for its peers).
        per_run_prior: also give the ``refit`` parameters their across-run prior.
        scale: multiplies every prior sd (1: as built).
        fit_options: passed to :func:`lossrate.fit` (``bootstrap``, ``level``, ``seed``, ...).

    Returns:
        a :class:`~lossrate.fit.Fit`; ``extra["prior"]`` records the sources and whether any
        decayed, and a note says how much of each priored parameter the prefix identified.
    """
    if not isinstance(prior, Prior):
        raise InvalidArgumentError(
            f"prior must be a lossrate.prior.Prior, got {type(prior).__name__}; build one with "
            "Prior.from_runs(...) or Prior.load(path)."
        )
    if mode not in ("prior", "fixed"):
        raise InvalidArgumentError(f"mode must be 'prior' or 'fixed', got {mode!r}.")
    model = prior.build_model()
    traj = prefix.traj if isinstance(prefix, RunData) else prefix
    loss = traj.meta.loss if isinstance(traj, Trajectory) else None
    known = {s.loss for s in prior.sources if s.loss}
    if loss and known and loss not in known:
        raise InvalidArgumentError(
            f"the prefix's loss is {loss!r} but the prior's runs used {sorted(known)}; a prior "
            "only transfers between runs of the same loss function."
        )
    free = set(
        [n for n, p in prior.params.items() if p.kind == "per_run"] if refit is None else refit
    )
    unknown = sorted(free - set(prior.params))
    if unknown:
        raise InvalidArgumentError(
            f"refit names {unknown}, which the prior does not hold; it has {sorted(prior.params)}."
        )
    meta = traj.meta
    fix: dict[str, float] = dict(fit_options.pop("fix", {}) or {})
    pri: dict[str, tuple[float, float]] = {}
    for n, p in prior.params.items():
        x = _covariate(meta, p.covariate)
        if p.kind == "fixed" or (mode == "fixed" and n not in free):
            fix.setdefault(n, p.value_at(x))
        elif n not in free or per_run_prior:
            pri[n] = (p.value_at(x), scale * p.spread)
    opts = {"bootstrap": 100, **fit_options}
    out = fit(prefix, model, schedule=schedule, fix=fix, prior=pri or None, **opts)
    notes = list(out.notes)
    info = _identified_share(out, prior, pri)
    if info:
        notes.append(
            "share of each priored parameter's variance the prefix resolved (1 - posterior "
            "var / prior var): " + ", ".join(f"{k} {v:.0%}" for k, v in info.items())
        )
    if mode == "fixed":
        held = sorted(set(fix) - set(fit_options.get("fix", {}) or {}))
        notes.append(f"held at the prior's centre from {len(prior.sources)} earlier runs: {held}")
    extra = dict(out.extra)
    extra["prior"] = {
        "model": prior.model,
        "sources": list(prior.source_names),
        "decayed": prior.decayed,
        "mode": mode,
    }
    return dataclasses.replace(out, notes=tuple(dict.fromkeys(notes)), extra=extra)


def predict_with_prior(
    fit_result: Fit,
    steps: Any = None,
    *,
    schedule: Schedule | None = None,
    level: float | None = None,
    warn: bool = True,
) -> Prediction:
    """:func:`lossrate.predict` for a fit made by :func:`fit_with_prior`, flagging decays the
    prior cannot know (any other fit is predicted as :func:`lossrate.predict` does).
    ``warn=False`` keeps the warning in ``Prediction.warnings`` only, not as a Python warning.

    When none of the prior's runs decayed and the predicted schedule decays (its lr falls
    below 90 % of its peak after the peak), this warns (:class:`DecayNotIdentifiedWarning`),
    adds the warning to ``Prediction.warnings`` and widens the interval from the decay on to
    cover [pred - gain, pred_no_decay + z sd] with gain = |pred_no_decay - pred|.
    """
    pred = predict(fit_result, steps, schedule=schedule, level=level)
    info = fit_result.extra.get("prior") if isinstance(fit_result.extra, Mapping) else None
    if not info or info.get("decayed", True):
        return pred
    run = fit_result.pmap.runs[0] if fit_result.pmap is not None else None
    sched = schedule if schedule is not None else (run.schedule if run is not None else None)
    if sched is None:
        return pred
    lr = sched.lr
    peak_at = int(np.argmax(lr))
    after = np.flatnonzero(lr[peak_at:] < _DECAY_DROP * lr[peak_at])
    if after.size == 0:
        return pred
    start = peak_at + int(after[0])
    hit = pred.step >= start
    if not hit.any():
        return pred
    msg = (
        f"the prior's {len(info.get('sources', []))} earlier runs never decayed their lr, so the "
        f"loss drop of the decay from step {start} is not identified; the interval there is "
        "widened to span no gain to twice the predicted gain."
    )
    if warn:
        warnings.warn(msg, DecayNotIdentifiedWarning, stacklevel=2)
    flat = sched.held_from(peak_at)
    base = predict(fit_result, pred.step, schedule=flat, level=level)
    gain = np.abs(base.loss - pred.loss)
    lower = np.where(hit, np.minimum(pred.lower, pred.loss - gain), pred.lower)
    upper = np.where(hit, np.maximum(pred.upper, base.upper), pred.upper)
    return dataclasses.replace(pred, lower=lower, upper=upper, warnings=(*pred.warnings, msg))


# ------------------------------------------------------------------ checks
def check_runs(runs: Mapping[str, RunData], depends: Mapping[str, str] | None = None) -> None:
    """Refuse runs that cannot share one fit: different loss functions, or a run without the
    setting a declared law needs (the error names the run and the field)."""
    losses = {n: r.traj.meta.loss for n, r in runs.items()}
    named = {n: v for n, v in losses.items() if v}
    if len(set(named.values())) > 1:
        first = next(iter(named))
        other = next(n for n, v in named.items() if v != named[first])
        raise InvalidArgumentError(
            f"runs use different loss functions: run {first!r} has meta.loss={named[first]!r} "
            f"but run {other!r} has meta.loss={named[other]!r}; fit runs of one loss together."
        )
    if named and len(named) < len(losses):
        missing = next(n for n, v in losses.items() if not v)
        raise InvalidArgumentError(
            f"run {missing!r} has no meta.loss while the others use {next(iter(named.values()))!r}; "
            "set RunMeta.loss on every run so runs of different losses are never mixed."
        )
    for p, cov in (depends or {}).items():
        for n, r in runs.items():
            x = _covariate(r.traj.meta, cov)
            ok = x is not None and isinstance(x, int | float) and math.isfinite(x) and x > 0
            if not ok:
                raise InvalidArgumentError(
                    f"depends={{{p!r}: {cov!r}}}: run {n!r} has meta.{cov}={x!r}; the law needs a "
                    f"positive {cov} in every run. Set RunMeta({cov}=...) or drop the dependence."
                )


def decays(run: RunData, upto: int | None = None) -> bool:
    """Whether the run's lr falls below 90 % of its peak after the peak (up to step ``upto``,
    default the last logged step): whether it shows a decay."""
    last = int(run.traj.step[-1]) if upto is None else int(upto)
    return decays_after_peak(run.schedule.lr[: max(last, 1)], _DECAY_DROP)


# ------------------------------------------------------------------ helpers
def _covariate(meta: Any, name: str | None) -> Any:
    if name is None or meta is None:
        return None
    x = getattr(meta, name, None)
    if x is None and isinstance(getattr(meta, "extra", None), Mapping):
        x = meta.extra.get(name)
    return x


def _floor(s: float, lo: float) -> float:
    s = float(s)
    return max(s, lo) if math.isfinite(s) else max(_WIDE, lo)


def _search_scale_se(f: Fit) -> np.ndarray:
    """Standard errors of the free coordinates on the search scale: from the draws (or the
    reported errors), and the Gauss–Newton (Wald) errors where those are missing (a joint fit
    whose bootstrap gave no intervals), so that a prior is not left uninformative."""
    se = _draw_se(f)
    if not np.all(np.isfinite(se)):
        from .fitting.intervals import wald_se

        se = np.where(np.isfinite(se), se, wald_se(f))
    return se


def _draw_se(f: Fit) -> np.ndarray:
    """Standard errors of the free coordinates on the search scale (from the draws)."""
    pm = f.pmap
    if pm is None:
        raise InvalidArgumentError("this fit carries no parameter map; refit it.")
    if f.samples is not None and len(f.samples) > 2:
        s = np.asarray(f.samples, dtype=float)
        cols = []
        for j, fp in enumerate(pm.free):
            c = np.log(np.maximum(s[:, j], 1e-300)) if fp.log else s[:, j]
            cols.append(float(np.std(c, ddof=1)))
        return np.asarray(cols)
    out = []
    for fp in pm.free:
        se = float(f.stderr.get(fp.name, np.nan))
        v = float(f.params.get(fp.name, np.nan))
        out.append(se / abs(v) if fp.log and v else se)
    return np.asarray(out)


def _identified_share(
    out: Fit, prior: Prior, pri: Mapping[str, tuple[float, float]]
) -> dict[str, float]:
    if out.samples is None or not pri:
        return {}
    names = list(out.params)
    s = np.asarray(out.samples, dtype=float)
    res = {}
    for n, (_, sd) in pri.items():
        if n not in names:
            continue
        col = s[:, names.index(n)]
        if prior.params[n].log:
            col = np.log(np.maximum(col, 1e-300))
        res[n] = float(np.clip(1.0 - np.var(col, ddof=1) / sd**2, 0.0, 1.0))
    return res


def _model_options(model: CurveModel) -> dict[str, Any]:
    if not dataclasses.is_dataclass(model):
        return {}
    out = {}
    for f in dataclasses.fields(model):
        v = getattr(model, f.name)
        if v is None or isinstance(v, bool | int | float | str):
            out[f.name] = v
    return out


def _source(run: RunData, name: str, decayed: bool | None) -> SourceRun:
    meta = run.traj.meta
    return SourceRun(
        name=name,
        peak_lr=None if meta.peak_lr is None else float(meta.peak_lr),
        schedule=meta.schedule,
        decayed=decays(run) if decayed is None else bool(decayed),
        loss=meta.loss,
        n_points=int(run.traj.n),
    )


def _as_rundata(item: Any, model: CurveModel, where: str) -> RunData:
    from .fitting.engine import as_run

    if isinstance(item, tuple) and len(item) == 2:
        return as_run(item[0], model, item[1])
    if isinstance(item, Trajectory | RunData):
        return as_run(item, model)
    raise InvalidArgumentError(
        f"{where} is a {type(item).__name__}; pass a Trajectory, RunData or (Trajectory, Schedule)."
    )


def _named_runs(runs: Any, model: CurveModel) -> dict[str, RunData]:
    if isinstance(runs, Mapping):
        out = {str(k): _as_rundata(v, model, f"runs[{k!r}]") for k, v in runs.items()}
    else:
        out = {}
        for i, item in enumerate(runs):
            rd = _as_rundata(item, model, f"runs[{i}]")
            name = rd.traj.meta.name or f"run{i}"
            if name in out:
                raise InvalidArgumentError(
                    f"two runs are named {name!r}; set RunMeta.name uniquely or pass a mapping."
                )
            out[name] = rd
    if not out:
        raise InvalidArgumentError("runs is empty; a prior needs at least one earlier run.")
    return out


def _thin(run: RunData, max_points: int | None) -> RunData:
    n = run.traj.n
    if max_points is None or n <= max_points:
        return run
    idx = np.unique(np.r_[np.linspace(0, n - 1, int(max_points)).round().astype(int), n - 1])
    return RunData(run.traj.select(idx), run.schedule)


def _param_scales(model: CurveModel) -> dict[str, bool]:
    steps = np.arange(0, 50, dtype=float)
    loss = 1.0 + 2.0 / (1.0 + 0.2 * steps)
    t = Trajectory.from_arrays(loss, step=steps, lr=np.full(steps.size, 1e-3))
    rd = RunData(t, Schedule(np.full(60, 1e-3), "constant"))
    return {p.name: p.scale == "log" for p in model.params(rd)}


def _read_json(p: Path) -> Any:
    if not p.is_file():
        raise DataError(f"{str(p)!r} does not exist or is not a file; check the path.")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(
            f"{str(p)!r} is not valid JSON ({exc}); rewrite it with Prior.save."
        ) from None
