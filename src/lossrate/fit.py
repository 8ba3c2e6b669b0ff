"""Fit curve models to loss curves and predict with them: the public verbs.

``fit`` (one run), ``fit_many`` (several runs, shared / per-run parameters, priors) and
``predict`` (any steps, the fitted or another schedule). The engine lives in
:mod:`lossrate.fitting`.
"""

from .fitting.engine import Fit as Fit
from .fitting.engine import fit as fit
from .fitting.engine import fit_many as fit_many
from .fitting.predict import predict as predict
from .fitting.registry import available_models as available_models
from .fitting.registry import get_model as get_model

__all__ = ["Fit", "available_models", "fit", "fit_many", "get_model", "predict"]
