"""The MAP fit under a prior and its prediction (flagging decays the prior cannot know)."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .._errors import InvalidArgumentError
from .._model import RunData
from .._results import Prediction
from ..fit import Fit, fit, predict
from ..schedule import Schedule
from ..trajectory import Trajectory
from ._prior import Prior
from ._records import _DECAY_DROP, DecayNotIdentifiedWarning
from ._runs import _covariate, _identified_share


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
