"""``auto``: the default predictor. It fits the ODE models and the peer laws on a run's
prefix, weighs them by rolling-origin backtests inside the prefix at the extrapolation
ratio asked for (weights inverse to each model's squared backtest error; stacking and the
single best are measured beside it), and calibrates the interval on the backtest errors
(see :mod:`lossrate.auto._fit`). ``jobs`` > 1 runs its fits in worker processes.

Use it through :func:`lossrate.fit` (``model="auto"``, the default) and
:func:`lossrate.predict`.
"""

from ._candidates import CANDIDATES as CANDIDATES
from ._candidates import PEER_RECIPE as PEER_RECIPE
from ._candidates import Candidate as Candidate
from ._fit import fit_auto as fit_auto
from ._fit import thin as thin
from ._predict import predict_auto as predict_auto
from ._result import AutoFit as AutoFit
from ._result import AutoModel as AutoModel

__all__ = [
    "CANDIDATES",
    "PEER_RECIPE",
    "AutoFit",
    "AutoModel",
    "Candidate",
    "fit_auto",
    "predict_auto",
    "thin",
]
