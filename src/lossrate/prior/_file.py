"""Checks of the files a prior is read from: saved priors and fit JSONs (every field's type,
range and finiteness, against the model the prior is for), through :mod:`lossrate._validate`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .. import _validate as v
from .._errors import DataError, InvalidArgumentError
from .._model import CurveModel
from ._records import FORMAT, VERSION, ParamPrior, SourceRun

_PRIOR_FIX = "Rewrite the file with Prior.save (lossrate fit --save-prior)."
_FIT_FIX = "Use a fit JSON written by lossrate (FitResult.to_json, a report's fit.json)."
#: kinds of ParamPrior
KINDS = ("shared", "per_run", "law", "fixed")


def check_prior(data: Any, source: str) -> dict[str, Any]:
    """The fields of a saved prior, each checked; the keyword arguments of ``Prior(...)``."""
    from ..fit import get_model

    if not isinstance(data, Mapping) or data.get("format") != FORMAT:
        raise DataError(
            f"{source}: not a lossrate-prior file (its 'format' is "
            f"{data.get('format') if isinstance(data, Mapping) else type(data).__name__!r}); "
            "write priors with Prior.save."
        )
    fix = _PRIOR_FIX
    v.unknown_keys(
        data,
        ("format", "version", "model", "model_options", "level", "params", "sources"),
        source,
        "",
        fix,
    )
    version = v.integer(data.get("version"), source, "version", fix, lo=1)
    assert version is not None
    if version > VERSION:
        raise DataError(
            f"{source}: prior file version {version} is newer than this lossrate reads "
            f"(version {VERSION}); upgrade lossrate."
        )
    name = v.text(data.get("model"), source, "model", fix, max_len=100)
    options = v.scalars(data.get("model_options", {}), source, "model_options", fix)
    try:
        model = get_model(name, **options)
    except (InvalidArgumentError, TypeError, ValueError) as exc:
        raise DataError(
            f"{source}: field 'model' = {name!r} with model_options {options} does not build a "
            f"model ({exc}). {fix}"
        ) from None
    level = v.number(
        data.get("level", 0.9), source, "level", fix, lo=0, hi=1, lo_open=True, hi_open=True
    )
    raw = v.mapping(data.get("params"), source, "params", fix, max_items=100)
    if not raw:
        raise DataError(
            f"{source}: field 'params' is empty; a prior holds one entry per parameter. {fix}"
        )
    scales = param_scales(model)
    params = {n: _check_param(n, p, source, scales) for n, p in raw.items()}
    sources = tuple(
        _check_source(s, source, f"sources[{i}]")
        for i, s in enumerate(
            v.sequence(data.get("sources"), source, "sources", fix, max_items=100_000)
        )
    )
    return {
        "model": model.name,
        "params": params,
        "sources": sources,
        "model_options": options,
        "level": level,
        "version": version,
    }


def _check_param(
    name: str, p: Any, source: str, scales: Mapping[str, tuple[bool, float, float]]
) -> ParamPrior:
    fix = _PRIOR_FIX
    where = f"params.{name}"
    if name not in scales:
        raise DataError(
            f"{source}: field {where!r} names no parameter of the model; its parameters are "
            f"{sorted(scales)}. {fix}"
        )
    p = v.mapping(p, source, where, fix)
    v.unknown_keys(
        p, ("centre", "spread", "log", "kind", "covariate", "slope", "log_ref"), source, where, fix
    )
    for key in ("centre", "spread", "log"):
        if key not in p:
            raise DataError(f"{source}: field {where + '.' + key!r} is missing. {fix}")
    centre = v.number(p["centre"], source, f"{where}.centre", fix)
    spread = v.number(p["spread"], source, f"{where}.spread", fix, lo=0.0)
    log = v.boolean(p["log"], source, f"{where}.log", fix)
    kind = v.choice(p.get("kind", "shared"), source, f"{where}.kind", KINDS, fix)
    covariate = v.text(
        p.get("covariate"), source, f"{where}.covariate", fix, optional=True, max_len=100
    )
    slope = v.number(p.get("slope", 0.0), source, f"{where}.slope", fix)
    log_ref = v.number(p.get("log_ref", 0.0), source, f"{where}.log_ref", fix)
    assert centre is not None and spread is not None and slope is not None and log_ref is not None
    is_log, lower, upper = scales[name]
    if log != is_log:
        raise v.fail(
            source,
            f"{where}.log",
            log,
            f"the model searches {name} on a {'log' if is_log else 'linear'} scale, so it must be "
            f"{'true' if is_log else 'false'}",
            fix,
        )
    if kind == "law" and covariate is None:
        raise DataError(f"{source}: field {where!r} is a law but names no 'covariate'. {fix}")
    if covariate is None:
        value = math.exp(centre) if log and centre < 700 else (math.inf if log else centre)
        if not lower <= value <= upper:
            raise v.fail(
                source,
                f"{where}.centre",
                centre,
                f"it puts {name} at {value:.6g}, outside the model's range [{lower:g}, {upper:g}]"
                + (" (the centre is ln of the value)" if log else ""),
                fix,
            )
    return ParamPrior(centre, spread, log, kind, covariate, slope, log_ref)


def _check_source(s: Any, source: str, where: str) -> SourceRun:
    fix = _PRIOR_FIX
    s = v.mapping(s, source, where, fix)
    v.unknown_keys(
        s, ("name", "peak_lr", "schedule", "decayed", "loss", "n_points"), source, where, fix
    )
    return SourceRun(
        name=str(v.text(s.get("name"), source, f"{where}.name", fix)),
        peak_lr=v.number(
            s.get("peak_lr"), source, f"{where}.peak_lr", fix, lo=0, lo_open=True, optional=True
        ),
        schedule=v.text(s.get("schedule"), source, f"{where}.schedule", fix, optional=True),
        decayed=v.boolean(s.get("decayed"), source, f"{where}.decayed", fix),
        loss=v.text(s.get("loss"), source, f"{where}.loss", fix, optional=True),
        n_points=int(v.integer(s.get("n_points", 0), source, f"{where}.n_points", fix, lo=0) or 0),
    )


def check_fit_params(data: Any, source: str, model: CurveModel) -> dict[str, float]:
    """The fitted parameters of a fit JSON that belong to ``model``, each a finite number in
    the model's range (None values are skipped)."""
    fix = _FIT_FIX
    table = v.mapping(data, source, "", fix)
    if table.get("format") == FORMAT:
        raise DataError(
            f"{source} is a saved prior; pass it alone (Prior.load) rather than mixed with fit "
            "results."
        )
    if not isinstance(table.get("params"), Mapping):
        raise DataError(f"{source} has no 'params' object; it is not a FitResult.to_json file.")
    params = v.mapping(table["params"], source, "params", fix, max_items=1000)
    scales = param_scales(model)
    out: dict[str, float] = {}
    for name, value in params.items():
        if value is None or name not in scales:
            continue
        x = v.number(value, source, f"params.{name}", fix)
        assert x is not None
        is_log, lower, upper = scales[name]
        if not lower <= x <= upper or (is_log and x <= 0):
            raise v.fail(
                source,
                f"params.{name}",
                value,
                f"model {model.name!r} keeps {name} "
                + ("> 0" if is_log and lower <= 0 else f"in [{lower:g}, {upper:g}]"),
                fix,
            )
        out[name] = x
    return out


def fit_run_name(data: Mapping[str, Any], source: str, default: str) -> str:
    """The run a fit JSON names (``extra.runs[0]``), else ``default``."""
    extra = data.get("extra")
    if not isinstance(extra, Mapping):
        return default
    runs = extra.get("runs")
    if isinstance(runs, list) and runs and isinstance(runs[0], str):
        return runs[0][:200]
    return default


def param_scales(model: CurveModel) -> dict[str, tuple[bool, float, float]]:
    """``{name: (searched on a log scale, lower, upper)}`` of the model's parameters: the bounds
    that hold for any run (a bound that moves with the run's loss or lr is left open; a
    log-scale parameter is always > 0)."""
    import numpy as np

    from .._model import RunData
    from ..schedule import Schedule
    from ..trajectory import Trajectory

    def params(scale: float, lr: float) -> dict[str, Any]:
        steps = np.arange(0, 50, dtype=float)
        loss = scale * (1.0 + 2.0 / (1.0 + 0.2 * steps))
        t = Trajectory.from_arrays(loss, step=steps, lr=np.full(steps.size, lr))
        return {p.name: p for p in model.params(RunData(t, Schedule(np.full(60, lr), "constant")))}

    a, b = params(1.0, 1e-3), params(100.0, 0.5)
    out = {}
    for name, p in a.items():
        q = b.get(name, p)
        log = p.scale == "log"
        lower = float(p.lower) if p.lower == q.lower else -math.inf
        upper = float(p.upper) if p.upper == q.upper else math.inf
        out[name] = (log, max(lower, 0.0) if log else lower, upper)
    return out
