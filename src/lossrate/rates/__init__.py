"""Rate models phi(t), one file per family, and a registry by name.

Registered names: "constant" (F0), "power_law" (F1), "schedule" (F2, in step time),
"measured" (phi on a grid). The SGD-noise term (F3, §4.6) is :class:`SGDNoise`, with the
closed-form solver :func:`solve_power_noise` for the power closure.
"""

from .base import RateModel, available_rates, get_rate, register_rate
from .constant import Constant
from .measured import MeasuredRate
from .noise import SGDNoise, power_noise_equilibrium, power_noise_path, solve_power_noise
from .power_law import PowerLaw
from .schedule import ScheduleRate

__all__ = [
    "Constant",
    "MeasuredRate",
    "PowerLaw",
    "RateModel",
    "SGDNoise",
    "ScheduleRate",
    "available_rates",
    "get_rate",
    "power_noise_equilibrium",
    "power_noise_path",
    "register_rate",
    "solve_power_noise",
]
