"""Closures g(L, sigma_L), one file per loss family, and a registry by name.

Registered names: "mse" (:class:`MSE`), "power" (:class:`PowerFloor`), "mae" (:class:`MAE`),
"ce" (:class:`CrossEntropy`), "bce" (:class:`BCE`), "smoothed_ce" (:class:`SmoothedCE`),
"tabulated" (:class:`Tabulated`, any callable g). The numpy per-sample helpers give
(loss, ||r||^2) per sample for checking closures on data without torch.
"""

from ._common import MU, X_STAR, D, Dhat, d2D, dD
from ._per_sample import bce_per_sample, ce_per_sample, smoothed_targets, soft_ce_per_sample
from .base import Closure, available_closures, get_closure, register_closure
from .bce import BCE
from .cross_entropy import CrossEntropy
from .mae import MAE
from .mse import MSE
from .power import PowerFloor
from .shifted import Shifted
from .smoothed_ce import SmoothedCE, smoothed_entropy
from .tabulated import Tabulated

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
    "Shifted",
    "SmoothedCE",
    "Tabulated",
    "available_closures",
    "bce_per_sample",
    "ce_per_sample",
    "d2D",
    "dD",
    "get_closure",
    "register_closure",
    "smoothed_entropy",
    "smoothed_targets",
    "soft_ce_per_sample",
]
