"""Choose the learning-rate schedule from a fitted law: :func:`optimize_schedule`.

One small file per schedule family (as scipy's ``integrate/_ivp`` keeps one per method):
:mod:`.wsd` (warmup-stable-decay: decay start, length, shape, final lr), :mod:`.cosine`
(final lr, warmup) and :mod:`.free` (a monotone schedule through fixed knots, as Luo et al.
2025 optimise through the multi-power law); :data:`FAMILIES` maps their names to classes.
"""

from ._family import Budget as Budget
from ._family import Family as Family
from ._optimize import optimize_schedule as optimize_schedule
from ._registry import FAMILIES as FAMILIES
from ._registry import get_family as get_family
from ._result import FamilyOptimum as FamilyOptimum
from ._result import Gain as Gain
from ._result import ScheduleOptimum as ScheduleOptimum
from .cosine import Cosine as Cosine
from .cosine import standard_cosine as standard_cosine
from .free import FreeForm as FreeForm
from .wsd import WSD as WSD

__all__ = [
    "FAMILIES",
    "WSD",
    "Budget",
    "Cosine",
    "Family",
    "FamilyOptimum",
    "FreeForm",
    "Gain",
    "ScheduleOptimum",
    "get_family",
    "optimize_schedule",
    "standard_cosine",
]
