"""Transfer from earlier runs, evaluated leave-one-out.

For runs r = 1..R and a hold-out rule H (default: H(r) = {r}, leave-one-run-out; or every
run sharing r's group, e.g. its model size), the prior for target r is built from the runs
not in H(r) only. The target is then fitted on its first k % of steps (with and without the
prior) and predicted on the rest; the metrics of :func:`lossrate.metrics.score` are taken on
the unseen suffix, 90 % interval coverage included, and reported per group (schedule type).

Leakage is impossible by construction: :func:`prior_sources` is the only place that picks
the runs a target's prior sees, it never returns a run in H(target), and the prior is a
function of those runs alone (tests perturb a target and check its prior is unchanged).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._errors import InvalidArgumentError
from ._model import RunData
from .fit import fit, predict
from .metrics import score
from .prior import Prior, fit_with_prior, predict_with_prior

__all__ = [
    "TransferRow",
    "leave_one_out_priors",
    "prior_sources",
    "schedule_group",
    "summarise",
    "transfer_evaluate",
]

HoldOut = Callable[[str, str], bool]


def schedule_group(run: RunData) -> str:
    """The schedule type of a run: the letters of ``meta.schedule`` before a digit or '_'."""
    name = run.traj.meta.schedule or run.schedule.name or "unknown"
    m = re.match(r"[A-Za-z]+", name)
    return m.group(0).lower() if m else "unknown"


def prior_sources(
    target: str, runs: Mapping[str, RunData], hold_out: HoldOut | None = None
) -> dict[str, RunData]:
    """The runs a target's prior may see: every run except the target and those
    ``hold_out(target, name)`` marks (e.g. the same model size)."""
    if target not in runs:
        raise InvalidArgumentError(f"target {target!r} is not one of the runs {list(runs)}.")
    return {
        n: r
        for n, r in runs.items()
        if n != target and not (hold_out is not None and hold_out(target, n))
    }


def leave_one_out_priors(
    runs: Mapping[str, RunData],
    model: str,
    *,
    hold_out: HoldOut | None = None,
    **prior_options: Any,
) -> dict[str, Prior]:
    """One prior per target, each from :func:`prior_sources` only (priors built from the same
    source set are computed once and shared)."""
    cache: dict[frozenset[str], Prior] = {}
    out = {}
    for target in runs:
        src = prior_sources(target, runs, hold_out)
        if not src:
            raise InvalidArgumentError(
                f"no earlier run is left for target {target!r} after the hold-out; add runs."
            )
        key = frozenset(src)
        if key not in cache:
            cache[key] = Prior.from_runs(src, model, **prior_options)
        out[target] = cache[key]
    return out


@dataclass(frozen=True)
class TransferRow:
    """One prediction of one target from its prefix: scores on the unseen suffix."""

    target: str
    group: str
    model: str
    with_prior: bool
    fraction: float
    scores: Mapping[str, float]
    warnings: tuple[str, ...] = ()


def _evaluate_one(
    run: RunData,
    name: str,
    model: str,
    fraction: float,
    prior: Prior | None,
    fit_options: Mapping[str, Any],
    mode: str,
) -> TransferRow | None:
    traj = run.traj
    pre = traj.prefix(fraction)
    rest = traj.step > pre.step[-1]
    if rest.sum() < 2 or pre.n < 12:
        return None
    prefix = RunData(pre, run.schedule)
    try:
        if prior is None:
            f = fit(prefix, model, **fit_options)
            p = predict(f, traj.step[rest])
        else:
            f = fit_with_prior(prefix, prior, mode=mode, **fit_options)
            p = predict_with_prior(f, traj.step[rest])
    except (InvalidArgumentError, ValueError) as exc:
        return TransferRow(
            name,
            schedule_group(run),
            model,
            prior is not None,
            fraction,
            {"failed": 1.0},
            (str(exc),),
        )
    y = traj.loss[rest]
    ok = np.isfinite(p.loss) & np.isfinite(p.lower) & np.isfinite(p.upper)
    if ok.sum() < 2:
        return TransferRow(
            name,
            schedule_group(run),
            model,
            prior is not None,
            fraction,
            {"failed": 1.0},
            ("prediction not finite",),
        )
    s = score(p.loss[ok], y[ok], p.lower[ok], p.upper[ok])
    if not ok[-1]:
        s["final_rel_err"] = float("nan")
    return TransferRow(
        name, schedule_group(run), model, prior is not None, fraction, s, tuple(p.warnings)
    )


def transfer_evaluate(
    runs: Mapping[str, RunData] | Sequence[RunData],
    models: Sequence[str] = ("ode_noise", "momentum", "multipower"),
    fractions: Sequence[float] = (0.1, 0.25, 0.5),
    *,
    hold_out: HoldOut | None = None,
    without_prior: bool = True,
    modes: Mapping[str, str] | None = None,
    prior_options: Mapping[str, Any] | None = None,
    fit_options: Mapping[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[TransferRow]:
    """Leave-one-out transfer (module docstring): every target x model x fraction, with the
    prior from the other runs and (``without_prior``) without any.

    ``modes`` picks per model "prior" (default) or "fixed" (schedule parameters held at the
    prior's centre, as in the multi-power-law paper). Returns one :class:`TransferRow` each.
    """
    named = (
        runs
        if isinstance(runs, Mapping)
        else {(r.traj.meta.name or f"run{i}"): r for i, r in enumerate(runs)}
    )
    for fr in fractions:
        if not 0 < float(fr) < 1:
            raise InvalidArgumentError(f"fractions must lie in (0, 1), got {fr!r}.")
    fopt = {"bootstrap": 60, **(fit_options or {})}
    rows: list[TransferRow] = []
    for model in models:
        priors = leave_one_out_priors(named, model, hold_out=hold_out, **(prior_options or {}))
        mode = (modes or {}).get(model, "prior")
        for name, run in named.items():
            for fr in fractions:
                for pr in [priors[name]] + ([None] if without_prior else []):
                    row = _evaluate_one(run, name, model, float(fr), pr, fopt, mode)
                    if row is not None:
                        rows.append(row)
                        if progress is not None:
                            progress(f"{model} {name} k={fr:g} prior={pr is not None}")
    return rows


def summarise(rows: Sequence[TransferRow]) -> list[dict[str, Any]]:
    """Per (group, model, with_prior, fraction): median and p90 final-loss error, median
    PredE and mean coverage, over the targets."""
    keys = sorted({(r.group, r.model, r.with_prior, r.fraction) for r in rows})
    out = []
    for g, m, w, f in keys:
        sel = [r for r in rows if (r.group, r.model, r.with_prior, r.fraction) == (g, m, w, f)]
        good = [r for r in sel if "failed" not in r.scores]
        fe = np.array([r.scores["final_rel_err"] for r in good], dtype=float)
        fe = fe[np.isfinite(fe)]
        out.append(
            {
                "group": g,
                "model": m,
                "prior": w,
                "k": f,
                "n": len(sel),
                "failed": len(sel) - len(good),
                "final_med": float(np.median(fe)) if fe.size else float("nan"),
                "final_p90": float(np.quantile(fe, 0.9)) if fe.size else float("nan"),
                "pred_e": float(np.median([r.scores["pred_e"] for r in good]))
                if good
                else float("nan"),
                "coverage": float(np.mean([r.scores["coverage"] for r in good]))
                if good
                else float("nan"),
            }
        )
    return out
