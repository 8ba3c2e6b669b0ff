"""The models ``auto`` weighs, each with the recipe it is fitted by."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .._errors import InvalidArgumentError
from .._model import CurveModel
from ..fitting.registry import available_models, get_model
from ..schedule import Schedule

__all__ = ["CANDIDATES", "DECAY_SHARE", "PEER_RECIPE", "Candidate", "candidates"]

#: the peers' own recipe (Huber with delta = 1e-3 on raw log residuals), as they publish it
PEER_RECIPE: Mapping[str, Any] = {"loss": "huber", "f_scale": 1e-3, "weights": "none"}
#: lr changes a drop-sum model sums over at most (changes are lumped into blocks beyond)
_DROP_CHANGES = 256


@dataclass(frozen=True)
class Candidate:
    """One model of the family: its label, registered name, fit options and settings.

    ``lumped``: the model sums a loss drop over every lr change (``ode_relax``,
    ``multipower``); ``auto`` lumps the changes of a long schedule into at most
    256 blocks (the model's ``block`` setting), so one fit stays well under a second.
    """

    label: str
    model: str
    options: Mapping[str, Any] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)
    lumped: bool = False

    def build(self, schedule: Schedule) -> CurveModel:
        """The model instance for a run under ``schedule``."""
        settings = dict(self.settings)
        if self.lumped and "block" not in settings:
            settings["block"] = max(16, math.ceil(schedule.n_steps / _DROP_CHANGES))
        return get_model(self.model, **settings)


#: the default family: the ODE models and the peer laws. ``ode_noise`` is not in it: as an
#: eighth candidate (measured 2026-12-03 on the same protocol as benchmarks/auto_variants.py,
#: median |ln(pred/obs)| of the final loss) it helped the mpl curves at k = 25 % (0.83 ->
#: 0.77 %, constant lr 0.26 -> 0.20 %) and cost them at k = 50 % (0.62 -> 0.80 %: the WSD
#: runs stepped down at the cut, 0.77 -> 1.15 %) and the real-log suite at k = 50 %
#: (9.8 -> 16.7 %; k = 25 % 22.4 % either way)
CANDIDATES: tuple[Candidate, ...] = (
    Candidate("ode", "ode"),
    Candidate("ode_relax", "ode_relax", lumped=True),
    Candidate("power_steps", "power_steps", PEER_RECIPE),
    Candidate("power_S", "power_S", PEER_RECIPE),
    Candidate("exponential", "exponential", PEER_RECIPE),
    Candidate("momentum", "momentum", PEER_RECIPE),
    Candidate("multipower", "multipower", PEER_RECIPE, lumped=True),
)


def candidates(names: Any = None) -> tuple[Candidate, ...]:
    """The candidates by label (None: :data:`CANDIDATES`); a name not in the default family
    is any registered model, fitted by the engine's default recipe."""
    if names is None:
        return CANDIDATES
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    out = []
    known = {c.label: c for c in CANDIDATES}
    for n in names:
        if isinstance(n, Candidate):
            out.append(n)
        elif n in known:
            out.append(known[n])
        elif n in available_models() and n != "auto":
            out.append(Candidate(str(n), str(n)))
        else:
            raise InvalidArgumentError(
                f"candidates holds {n!r}, which is not a model; choose from "
                f"{', '.join(sorted(set(known) | set(available_models())))}."
            )
    if len({c.label for c in out}) != len(out):
        raise InvalidArgumentError(f"candidates must be distinct, got {[c.label for c in out]}.")
    if not out:
        raise InvalidArgumentError("candidates is empty; name at least one model.")
    return tuple(out)


#: an lr below this share of the lr at the cut counts as a decay ahead
DECAY_SHARE = 0.9
