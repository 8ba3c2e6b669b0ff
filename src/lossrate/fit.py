"""Fit curve models to loss curves and predict with them: the public verbs.

``fit`` (one run; ``model="auto"``, the default, weighs the ODE models and the peer laws
by backtests, see :mod:`lossrate.auto`), ``fit_many`` (several runs, shared / per-run
parameters, priors) and ``predict`` (any steps, the fitted or another schedule). The
engine lives in :mod:`lossrate.fitting`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ._errors import InvalidArgumentError
from ._model import CurveModel, RunData
from ._results import FitResult, Prediction
from .auto import AutoFit, fit_auto, predict_auto
from .auto._candidates import DECAY_SHARE
from .fitting import engine
from .fitting.engine import fit_many as fit_many
from .fitting.predict import predict as _engine_predict
from .fitting.registry import available_models as _available_models
from .fitting.registry import get_model as get_model
from .fitting.result import Fit as Fit
from .schedule import Schedule, continues, decays_after_peak
from .trajectory import Trajectory

__all__ = ["AutoFit", "Fit", "available_models", "fit", "fit_many", "get_model", "predict"]

#: options of :func:`fit` that ``auto`` takes (the rest belong to one model's fit)
AUTO_OPTIONS = (
    "schedule",
    "level",
    "seed",
    "bootstrap",
    "horizon",
    "ahead",
    "earlier",
    "candidates",
    "max_points",
    "jobs",
)


def available_models() -> list[str]:
    """Names of the ODE models and of the peer laws, and "auto"."""
    return sorted({"auto", *_available_models()})


def fit(data: Trajectory | RunData, model: CurveModel | str = "auto", **options: Any) -> FitResult:
    """Fit ``model`` to one run.

    ``model="auto"`` (the default) fits the ODE models and the peer laws and weighs them by
    rolling-origin backtests inside the data at the extrapolation ratio asked for, with
    intervals calibrated on the backtests (:func:`lossrate.auto.fit_auto`); it takes the
    options ``schedule``, ``level``, ``seed``, ``horizon`` (the last step to predict:
    default the end of ``schedule``), ``candidates`` (the models weighed) and
    ``max_points``; ``bootstrap`` is accepted and ignored (its intervals come from the
    backtests). Any other model is fitted by the engine
    (:func:`lossrate.fitting.engine.fit`, whose docstring lists its options).
    """
    if isinstance(model, str) and model == "auto":
        bad = sorted(set(options) - set(AUTO_OPTIONS))
        if bad:
            raise InvalidArgumentError(
                f"option(s) {bad} set one model's fit; auto weighs several models and takes "
                f"only {', '.join(AUTO_OPTIONS)}. Name the model (e.g. model='ode_relax') to "
                "use them."
            )
        options.pop("bootstrap", None)
        cands = options.pop("candidates", None)
        return fit_auto(data, models=cands, **options)
    return engine.fit(data, model, **options)


def predict(
    fit_result: FitResult,
    steps: Any = None,
    *,
    run: str | Trajectory | RunData | None = None,
    schedule: Schedule | None = None,
    level: float | None = None,
) -> Prediction:
    """The loss a fitted model predicts at ``steps``, with an interval at ``level``.

    For an ``auto`` fit (:class:`lossrate.auto.AutoFit`) the weighted prediction with its
    calibrated interval (:func:`lossrate.auto.predict_auto`); otherwise
    :func:`lossrate.fitting.predict.predict`, whose docstring gives the arguments.
    """
    if isinstance(fit_result, AutoFit):
        if run is not None:
            raise InvalidArgumentError(
                "run= applies to joint fits; an auto fit predicts the run it was fitted on "
                "(pass schedule= for a what-if)."
            )
        return predict_auto(fit_result, steps, schedule=schedule, level=level)
    pred = _engine_predict(fit_result, steps, run=run, schedule=schedule, level=level)
    if schedule is not None and run is None:
        pred = _no_higher_with_decay(fit_result, pred, schedule, level)
    return pred


def _no_higher_with_decay(
    fr: FitResult, pred: Prediction, schedule: Schedule, level: float | None
) -> Prediction:
    """A what-if that lowers the lr after the fitted steps never predicts more than keeping
    the lr where the fit ended: where a law says so (a law in the lr sum alone has no decay
    gain), the prediction there is the no-decay one, and the warnings say so.

    Where the decay's gain is not identified (the fitted steps never saw the lr decay, and
    no prior from runs that decayed was used), a law's drop term is a guess its fit could
    not size (``ode_relax`` on a constant-lr log predicted 1e-10 after a WSD decay where the
    real run ended at 0.008): the point prediction is then the no-decay curve, the law's
    guess of the gain becomes the interval's lower edge, and the warnings say so.
    """
    runs = getattr(fr, "runs", ())
    if len(runs) != 1:
        return pred
    sn = int(runs[0].traj.step[-1])
    cut = min(sn, schedule.n_steps - 1)
    lr_cut = float(schedule.lr[cut])
    ahead = pred.step > sn
    lr = schedule.at(np.clip(pred.step, 0, schedule.n_steps - 1))
    if lr_cut <= 0 or not np.any(lr[ahead] < DECAY_SHARE * lr_cut):
        return pred
    prior = fr.extra.get("prior") if isinstance(getattr(fr, "extra", None), dict) else None
    seen = decays_after_peak(runs[0].schedule.lr[: max(sn, 1)], DECAY_SHARE) or bool(
        prior and prior.get("decayed")
    )
    notes = list(pred.warnings)
    if not seen:
        notes.append(
            "the decay gain is not identified: the fitted steps hold no lr decay, so what the "
            "decay gains is the model's guess (give earlier runs that decayed, --prior, or use "
            "model='auto', whose interval shows the range)"
        )
    if not continues(runs[0].schedule, schedule, cut):
        # another run from an earlier step, not this one going on: no "no decay" to compare
        return dataclasses.replace(pred, warnings=tuple(dict.fromkeys(notes)))
    flat = schedule.held_from(cut, name="no decay")
    base = _engine_predict(fr, pred.step, schedule=flat, level=level)
    under = ahead & (np.maximum.accumulate(np.where(ahead, lr, 0.0)) <= lr_cut * (1 + 1e-9))
    higher = under & (pred.loss > base.loss)
    guessed = under & ~seen & (pred.loss < base.loss)
    if higher.any():
        notes.append(
            f"{fr.model.describe()} predicts a higher loss with the lr decay than without it at "
            f"{int(higher.sum())} step(s) (it has no term for a decay's gain); the prediction "
            "there is the no-decay one: a decay does not raise the loss"
        )
    if guessed.any():
        i = int(np.flatnonzero(guessed)[-1])
        notes.append(
            f"the prediction keeps the no-decay curve ({base.loss[i]:.4g} at step "
            f"{int(pred.step[i])}) and the model's guess of the decay ({pred.loss[i]:.4g}) is "
            "the interval's lower edge"
        )
    flat_pt = higher | guessed
    return dataclasses.replace(
        pred,
        loss=np.where(flat_pt, base.loss, pred.loss),
        lower=np.where(flat_pt, np.minimum(base.lower, pred.lower), pred.lower),
        upper=np.where(flat_pt, base.upper, pred.upper),
        mean_lower=None
        if pred.mean_lower is None
        else np.where(flat_pt, np.minimum(base.loss, pred.mean_lower), pred.mean_lower),
        mean_upper=None
        if pred.mean_upper is None
        else np.where(
            flat_pt,
            base.mean_upper if base.mean_upper is not None else base.loss,
            pred.mean_upper,
        ),
        warnings=tuple(dict.fromkeys(notes)),
    )
