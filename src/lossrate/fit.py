"""Fit curve models to loss curves and predict with them: the public verbs.

``fit`` (one run; ``model="auto"``, the default, weighs the ODE models and the peer laws
by backtests, see :mod:`lossrate.auto`), ``fit_many`` (several runs, shared / per-run
parameters, priors) and ``predict`` (any steps, the fitted or another schedule). The
engine lives in :mod:`lossrate.fitting`.
"""

from __future__ import annotations

from typing import Any

from ._errors import InvalidArgumentError
from ._model import CurveModel, RunData
from ._results import FitResult, Prediction
from .auto import AutoFit, fit_auto, predict_auto
from .fitting import engine
from .fitting.engine import Fit as Fit
from .fitting.engine import fit_many as fit_many
from .fitting.predict import predict as _engine_predict
from .fitting.registry import available_models as _available_models
from .fitting.registry import get_model as get_model
from .schedule import Schedule
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
    "candidates",
    "max_points",
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
    return _engine_predict(fit_result, steps, run=run, schedule=schedule, level=level)
