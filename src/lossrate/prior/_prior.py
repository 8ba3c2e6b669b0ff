"""The :class:`Prior`: built from a joint fit, from runs, from fit files; read and written as
JSON."""

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

from .._errors import DataError, InvalidArgumentError
from .._model import CurveModel, RunData
from ..fit import Fit, fit_many, get_model
from ..schedule import Schedule
from ..trajectory import Trajectory, atomic_write
from ._file import check_fit_params, check_prior, fit_run_name
from ._records import _WIDE, DEFAULT_PER_RUN, FORMAT, VERSION, ParamPrior, SourceRun
from ._runs import (
    _covariate,
    _floor,
    _model_options,
    _named_runs,
    _param_scales,
    _read_json,
    _search_scale_se,
    _source,
    _thin,
    check_runs,
    decays,
    prior_model,
)


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

        There is no per-run fit to distribute (``evaluate``'s ``jobs=``/``address=`` have no
        counterpart here): the runs share parameters, so they are fitted together in one
        least-squares problem, whose per-run parts (the model's starting guesses, thinning,
        the decay check) are arithmetic on arrays, and reading a folder's logs is file I/O.

        Args:
            runs: trajectories (with their lr, or as (Trajectory, Schedule) pairs / RunData),
                a mapping name -> run, or a folder of trajectory files (``.csv``/``.parquet``)
                or of saved fit results / priors (``.json``: their estimates are pooled). A
                folder ``lossrate sweep`` wrote gives its finished runs only (those with the
                ``sweep_done`` marker); the others are named in a warning, with the reason.
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
            read = _finished_sweep_runs(Path(runs), "runs", set(), stacklevel=3)
            if read is not None:  # a sweep's folder: its finished runs, never partial ones
                return cls.from_runs(
                    read,
                    model,
                    per_run=per_run,
                    depends=depends,
                    max_points=max_points,
                    min_spread=min_spread,
                    **fit_options,
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
            where = repr(str(path))
            for name, x in check_fit_params(data, where, m).items():
                per.setdefault(name, []).append(math.log(x) if scales[name] else x)
            sources.append(SourceRun(fit_run_name(data, where, Path(path).stem), None, None, False))
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
        return cls(**check_prior(data, source))

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
        * a log file, or a folder of logs (``.csv``/``.tsv``/``.parquet``: lossrate
          trajectories or any log :func:`lossrate.readers.read_log` reads, e.g. runs written by
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
        if p.is_dir():
            sweep = _finished_sweep_runs(p, "path", skip, stacklevel=3)
            if sweep is not None:  # a sweep's folder: its finished runs, never partial ones
                return cls.from_runs(sweep, model, **options)
        if p.is_file() and p.suffix.lower() in _LOG_SUFFIXES:
            if p.resolve() in skip:
                raise InvalidArgumentError(
                    f"the prior {str(p)!r} is the run being fitted; a prior must come from other runs."
                )
            t = _read_run(p)
            return cls.from_runs({t.meta.name or p.stem: t}, model, **options)
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
        trajs = [f for f in files if f.suffix.lower() in _LOG_SUFFIXES]
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
            t = _read_run(f)
            name = t.meta.name or (f.parent.name if f.name == "trajectory.csv" else f.stem)
            while name in runs:
                name += "'"
            runs[name] = t
        return cls.from_runs(runs, model, **options)


#: files read as earlier runs' logs (any log :func:`lossrate.readers.read_log` reads)
_LOG_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")


def _read_run(path: Path) -> Trajectory:
    """An earlier run's log, read as :func:`lossrate.readers.read_log` reads it (a lossrate
    trajectory or a plain CSV/TSV log); it must hold the learning rate."""
    from ..readers import read_log

    t = read_log(path)
    if t.lr is None:
        raise DataError(
            f"{str(path)!r} has no learning-rate column (or it has gaps); a prior's runs need "
            "their lr. Add it to the log, or move the file out of the prior's folder."
        )
    return t


#: the marker of a finished sweep run and the summary of a sweep's folder (the names of
#: lossrate.experiments.sweep_exec.DONE_NAME and SUMMARY_NAME; that module needs torch)
SWEEP_DONE = "sweep_done"
SWEEP_SUMMARY = "sweep.json"


def _finished_sweep_runs(
    folder: Path, arg: str, skip: set[Path], *, stacklevel: int
) -> dict[str, Trajectory] | None:
    """The finished runs of a sweep's ``folder`` (:func:`sweep_runs`) read, leaving out
    ``skip``, with a warning naming each run left out; None when ``folder`` is not a sweep's.
    ``arg`` is the argument that named the folder (for the messages)."""
    sweep = sweep_runs(folder)
    if sweep is None:
        return None
    finished, left_out = sweep
    if left_out:
        warnings.warn(
            f"{arg}={str(folder)!r} is a sweep folder: left out {len(left_out)} "
            f"run(s) that did not finish: {'; '.join(left_out)}. Finish them with "
            f"`lossrate sweep SWEEP --out {folder} --resume` to use them.",
            stacklevel=stacklevel,
        )
    finished = [f for f in finished if f.resolve() not in skip]
    if not finished:
        raise DataError(
            f"{arg}={str(folder)!r} is a sweep folder with no finished run (none has "
            f"the {SWEEP_DONE} marker) besides the run being fitted; finish the sweep "
            f"(`lossrate sweep SWEEP --out {folder} --resume`) or pass other runs."
        )
    return {path.parent.name: _read_run(path) for path in finished}


def sweep_runs(folder: Path) -> tuple[list[Path], list[str]] | None:
    """The runs of a folder ``lossrate sweep`` wrote (it holds ``sweep.json`` or a run folder
    with the :data:`SWEEP_DONE` marker): the ``trajectory.csv`` of each finished run, and one
    line ``"name (why)"`` for each run left out (unfinished, failed or not started, from
    ``sweep.json`` where it says). None for any other folder."""
    status: dict[str, Mapping[str, Any]] = {}
    summary = folder / SWEEP_SUMMARY
    if summary.is_file():
        try:
            data = json.loads(summary.read_text(encoding="utf-8"))
            status = {str(r["name"]): r for r in data["runs"] if isinstance(r, Mapping)}
        except (OSError, ValueError, KeyError, TypeError):
            status = {}  # another program's sweep.json: the markers alone decide
    runs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not status and not any((d / SWEEP_DONE).is_file() for d in runs):
        return None
    finished, left_out = [], []
    for d in runs:
        log = d / "trajectory.csv"
        if (d / SWEEP_DONE).is_file() and log.is_file():
            finished.append(log)
        elif log.is_file() or d.name in status:
            run = status.get(d.name, {})
            if run.get("status") == "failed":
                why = f"failed after {run.get('attempts', '?')} tries: {run.get('error', '')}"
            else:
                why = f"unfinished: no {SWEEP_DONE} marker"
            left_out.append(f"{d.name} ({why})")
    left_out += [f"{name} (not started)" for name in status if not (folder / name).is_dir()]
    return finished, left_out
