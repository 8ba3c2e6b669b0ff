"""Fitting engine, prediction and the ODE curve models (see :mod:`lossrate.fit`)."""

from .engine import Fit, fit, fit_many
from .predict import predict
from .registry import available_models, get_model, register_model

__all__ = ["Fit", "available_models", "fit", "fit_many", "get_model", "predict", "register_model"]
