"""Closures g(L, sigma_L), one file per loss family, and a registry by name.

Registered names: "mse", "power", "mae", "ce", "bce".
"""

from ._common import MU, X_STAR, D, Dhat
from .base import Closure, available_closures, get_closure, register_closure
from .bce import BCE
from .cross_entropy import CrossEntropy
from .mae import MAE
from .mse import MSE
from .power import PowerFloor

__all__ = [
    "BCE",
    "MAE",
    "MSE",
    "MU",
    "X_STAR",
    "Closure",
    "CrossEntropy",
    "D",
    "Dhat",
    "PowerFloor",
    "available_closures",
    "get_closure",
    "register_closure",
]
