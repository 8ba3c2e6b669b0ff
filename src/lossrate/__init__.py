"""lossrate: measure, model and predict how a training loss falls.

The loss state-rate ODE  dL/dt = -phi(t) g(L, sigma_L),  t = sum of learning rates.

The public verbs are re-exported here; everything else lives in sub-packages
(``lossrate.closures``, ``lossrate.rates``, ``lossrate.baselines``, ``lossrate.readers``,
``lossrate.torch`` for instrumentation, ``lossrate.experiments`` for real training).
Importing ``lossrate`` imports numpy and scipy only.
"""

from ._errors import DataError as DataError
from ._errors import InvalidArgumentError as InvalidArgumentError
from ._errors import LossrateError as LossrateError
from ._model import CurveModel as CurveModel
from ._model import Param as Param
from ._model import RunData as RunData
from ._results import FitResult as FitResult
from ._results import Prediction as Prediction
from .bounds import certified_lower_bound as certified_lower_bound
from .bounds import energy_to_target as energy_to_target
from .bounds import floor as floor
from .bounds import steps_to_target as steps_to_target
from .bounds import time_to_target as time_to_target
from .closures import get_closure as get_closure
from .evaluate import evaluate as evaluate
from .fit import fit as fit
from .fit import fit_many as fit_many
from .fit import get_model as get_model
from .fit import predict as predict
from .optimize import optimize_schedule as optimize_schedule
from .prior import Prior as Prior
from .prior import fit_with_prior as fit_with_prior
from .prior import predict_with_prior as predict_with_prior
from .rates import get_rate as get_rate
from .readers import read_log as read_log
from .replay import replay as replay
from .schedule import Schedule as Schedule
from .solve import Solution as Solution
from .solve import solve as solve
from .solve import solve_ode as solve_ode
from .trajectory import RunMeta as RunMeta
from .trajectory import Trajectory as Trajectory

__version__ = "0.1.0"
