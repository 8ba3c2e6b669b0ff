"""lossrate: measure, model and predict how a training loss falls.

The loss state-rate ODE  dL/dt = -phi(t) g(L, sigma_L),  t = sum of learning rates.
"""

from ._errors import DataError as DataError
from ._errors import InvalidArgumentError as InvalidArgumentError
from ._errors import LossrateError as LossrateError
from .schedule import Schedule as Schedule
from .trajectory import RunMeta as RunMeta
from .trajectory import Trajectory as Trajectory

__version__ = "0.1.0"
