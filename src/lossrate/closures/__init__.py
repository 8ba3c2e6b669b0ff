"""Closures g(L, sigma_L), one file per loss family, and a registry by name."""

from .base import Closure, available_closures, get_closure, register_closure

__all__ = ["Closure", "available_closures", "get_closure", "register_closure"]
