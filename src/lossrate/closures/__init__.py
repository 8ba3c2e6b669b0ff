"""Closures g(L, sigma_L), one file per loss family, and a registry by name."""

from .base import Closure, available_closures, get_closure, register_closure
from .mse import MSE
from .power import PowerFloor

__all__ = [
    "MSE",
    "Closure",
    "PowerFloor",
    "available_closures",
    "get_closure",
    "register_closure",
]
