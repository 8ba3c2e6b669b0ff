"""What a prior file holds: per-parameter priors and source runs, the format tag and
the per-run defaults."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .._errors import InvalidArgumentError

FORMAT = "lossrate-prior"
VERSION = 1
#: parameters refitted per run by default (the rest are shared across the earlier runs):
#: the ODE's start, floor and rate level; the peers' L0, A, alpha (the multi-power-law paper's
#: setting: its B, C, beta, gamma and the momentum law's C come from the earlier runs).
DEFAULT_PER_RUN: dict[str, tuple[str, ...]] = {
    "ode": ("L0", "L_inf", "rho_ref"),
    "ode_noise": ("L0", "L_inf", "rho_ref"),
    "ode_relax": ("L0", "L_inf", "rho_ref", "beta"),  # start, and floor/level/exponent as
    # the peers' L0, A, alpha; the drop's B, C, kappa, gamma and rho's S0 come from the runs
    "momentum": ("L0", "A", "alpha"),
    "multipower": ("L0", "A", "alpha"),
    "power_steps": ("L0", "A"),
    "power_S": ("L0", "A"),
    "exponential": ("L0", "A"),
}
_DECAY_DROP = 0.9  # a run "decays" when its lr falls below this share of its peak after the peak
_WIDE = 1.0  # spread (on z) of a per-run parameter seen in a single run


class DecayNotIdentifiedWarning(UserWarning):
    """A prior from runs that never decayed is asked to predict a decay."""


# ------------------------------------------------------------------ records
@dataclass(frozen=True)
class ParamPrior:
    """N(centre + slope (ln x - log_ref), spread^2) on one parameter's search scale z.

    ``kind`` is "shared", "per_run", "law" or "fixed" (held fixed in the earlier fits; the
    new fit holds it at ``centre``). ``log``: z = ln(value).
    """

    centre: float
    spread: float
    log: bool
    kind: str = "shared"
    covariate: str | None = None
    slope: float = 0.0
    log_ref: float = 0.0

    def z_at(self, x: float | None) -> float:
        """The centre on z for a run with covariate value ``x`` (laws only need it)."""
        if self.covariate is None:
            return self.centre
        if x is None or not (math.isfinite(float(x)) and float(x) > 0):
            raise InvalidArgumentError(
                f"this prior follows a law in {self.covariate!r}; the new run has "
                f"{self.covariate}={x!r}. Set RunMeta.{self.covariate} to a positive number."
            )
        return self.centre + self.slope * (math.log(float(x)) - self.log_ref)

    def value_at(self, x: float | None = None) -> float:
        """The centre in natural units."""
        z = self.z_at(x)
        return math.exp(z) if self.log else z


@dataclass(frozen=True)
class SourceRun:
    """What a prior remembers of one earlier run (never its points)."""

    name: str
    peak_lr: float | None
    schedule: str | None
    decayed: bool
    loss: str | None = None
    n_points: int = 0
