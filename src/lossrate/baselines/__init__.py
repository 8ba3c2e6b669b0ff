"""The peer laws behind the :class:`~lossrate._model.CurveModel` interface, and a registry.

=============  ==================================================================
power_steps    L0 + A (s + s0)^-alpha                       (steps)
power_S        L0 + A S^-alpha                              (intrinsic time S)
exponential    L0 + A exp(-S / tau)                         (intrinsic time S)
momentum       L0 + A S1^-alpha - C S2                      (Tissue et al. 2024)
multipower     L0 + A S^-alpha - LD(S; B, C, beta, gamma)   (Luo et al. 2025)
=============  ==================================================================

Every curve is evaluated under ``run.schedule`` at any steps, so a peer fitted on one
schedule predicts another. :func:`fit_multipower_published` reproduces the multi-power
law's own fitting recipe; :func:`fit_multipower_converged` runs its objective to the end.
"""

from __future__ import annotations

from typing import Any

from .._model import CurveModel
from .._registry import Registry
from .momentum import MomentumLaw
from .mpl_fit import fit_multipower_converged, fit_multipower_published
from .multipower import MultiPowerLaw
from .power import Exponential, PowerS, PowerSteps

__all__ = [
    "Exponential",
    "MomentumLaw",
    "MultiPowerLaw",
    "PowerS",
    "PowerSteps",
    "available_baselines",
    "fit_multipower_converged",
    "fit_multipower_published",
    "get_baseline",
]

_REGISTRY: Registry[CurveModel] = Registry("baseline", CurveModel, "settings")
for _cls in (PowerSteps, PowerS, Exponential, MomentumLaw, MultiPowerLaw):
    _REGISTRY.register(_cls)


def available_baselines() -> list[str]:
    """Registered peer names."""
    return _REGISTRY.names()


def get_baseline(name: str | CurveModel, **settings: Any) -> CurveModel:
    """A peer instance by name with its fixed settings (e.g. ``decay=0.999``), or the instance."""
    return _REGISTRY.get(name, **settings)
