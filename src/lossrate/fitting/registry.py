"""Curve models by name: the ODE models register here; the peer laws come from
:func:`lossrate.baselines.get_baseline`, so one name space serves both."""

from __future__ import annotations

import importlib
from typing import Any, TypeVar

from .._errors import InvalidArgumentError
from .._model import CurveModel

__all__ = ["available_models", "get_model", "register_model"]

_REGISTRY: dict[str, type[CurveModel]] = {}
M = TypeVar("M", bound=type[CurveModel])


def register_model(cls: M) -> M:
    """Class decorator: make ``cls`` available by ``cls.name`` in :func:`get_model`."""
    if not cls.name:
        raise TypeError(f"{cls.__name__} needs a non-empty class attribute 'name'.")
    _REGISTRY[cls.name] = cls
    return cls


def _load() -> Any:
    """Register the ODE models; return the peers' module."""
    importlib.import_module("lossrate.fitting.ode_models")
    return importlib.import_module("lossrate.baselines")


def available_models() -> list[str]:
    """Names of the ODE models and of the peer laws."""
    peers = _load()
    return sorted({*_REGISTRY, *peers.available_baselines()})


def get_model(model: str | CurveModel, **options: Any) -> CurveModel:
    """A curve-model instance from a registered name and options (or the instance itself)."""
    if isinstance(model, CurveModel):
        if options:
            raise InvalidArgumentError(
                f"options {sorted(options)} given with a model instance; set them on the instance."
            )
        return model
    peers = _load()
    if model not in _REGISTRY:
        if model in peers.available_baselines():
            return peers.get_baseline(model, **options)  # type: ignore[no-any-return]
        raise InvalidArgumentError(
            f"model={model!r} is not known; choose one of {', '.join(available_models())} "
            "or pass a CurveModel instance."
        )
    try:
        return _REGISTRY[model](**options)
    except TypeError as exc:
        raise InvalidArgumentError(f"model {model!r}: bad options {options}: {exc}") from None
