"""Rate models phi(t), one file per family, and a registry by name."""

from .base import RateModel, available_rates, get_rate, register_rate

__all__ = ["RateModel", "available_rates", "get_rate", "register_rate"]
