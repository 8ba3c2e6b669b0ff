"""Curve models by name: the ODE models register here; the peer laws come from
:func:`lossrate.baselines.get_baseline`, so one name space serves both."""

from __future__ import annotations

import importlib
from typing import Any, TypeVar

from .._model import CurveModel
from .._registry import Registry

__all__ = ["available_models", "get_model", "register_model"]

_REGISTRY: Registry[CurveModel] = Registry("model", CurveModel, "options")
M = TypeVar("M", bound=type[CurveModel])


def register_model(cls: M) -> M:
    """Class decorator: make ``cls`` available by ``cls.name`` in :func:`get_model`."""
    return _REGISTRY.register(cls)  # type: ignore[no-any-return]


def _load() -> Any:
    """Register the ODE models; return the peers' module."""
    importlib.import_module("lossrate.fitting.ode_models")
    importlib.import_module("lossrate.fitting.ode_relax")
    return importlib.import_module("lossrate.baselines")


def available_models() -> list[str]:
    """Names of the ODE models and of the peer laws."""
    peers = _load()
    return sorted({*_REGISTRY.names(), *peers.available_baselines()})


def get_model(model: str | CurveModel, **options: Any) -> CurveModel:
    """A curve-model instance from a registered name and options (or the instance itself)."""
    peers = _load()
    if isinstance(model, str) and model not in _REGISTRY and model in peers.available_baselines():
        return peers.get_baseline(model, **options)  # type: ignore[no-any-return]
    return _REGISTRY.get(model, extra_names=", ".join(available_models()), **options)
