"""Checks and helpers on the earlier runs a prior is built from (and the model used with
priors)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import InvalidArgumentError
from .._model import CurveModel, RunData
from ..fit import Fit, get_model
from ..schedule import Schedule, decays_after_peak
from ..trajectory import Trajectory
from ._records import _DECAY_DROP, _WIDE, SourceRun


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
        from ..fitting.intervals import wald_se

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
    out: Fit, prior: Any, pri: Mapping[str, tuple[float, float]]
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
    from ..fitting.engine import as_run

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
    from .._validate import read_json

    return read_json(
        p, what="prior file", fix="Rewrite it with Prior.save, or pass a fit JSON lossrate wrote."
    )
