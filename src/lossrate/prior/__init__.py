"""Priors from earlier runs: what other runs of the same model and data say about a new one.

For a curve model with parameters theta, each on its *search scale* z (z = ln theta for
log-scale parameters, z = theta otherwise), a :class:`Prior` holds for every parameter a
Gaussian N(mu_j(x), s_j^2) on z:

* a parameter **shared** by the earlier runs' joint fit: mu_j = its estimate, and s_j the
  spread one run's data alone would give, s_j = se_j sqrt(R) (se_j the joint fit's standard
  error on z, R the number of runs): the runs agreed on one value, and a new run is assumed
  to differ from it by no more than one run's estimation noise;
* a **per-run** parameter: mu_j = mean_r z_jr and s_j = sd_r z_jr (the spread across runs);
* a parameter following a **law** in a run setting x (``depends={"c": "peak_lr"}``):
  mu_j(x) = a_j + b_j (ln x - ln x_ref), evaluated at the new run's x; s_j = se(a_j) sqrt(R).

Every spread is floored at ``min_spread`` (on z) so a prior never claims more than the data
can know. ``fit_with_prior(prefix, prior)`` is then the penalised (MAP) fit

    minimise  sum_i rho(r_i / w_i)  +  sum_j ((z_j - mu_j) / s_j)^2        (engine ``prior=``)

whose intervals combine the prefix's own residuals (moving-block bootstrap) with the prior's
spread (each bootstrap replicate draws the prior centres mu_j* ~ N(mu_j, s_j^2)), so a
parameter the prefix cannot identify keeps the spread across runs in its interval.

A prior from runs whose lr never decayed cannot know the loss drop of a decay: predicting
one through :func:`predict_with_prior` warns (:class:`DecayNotIdentifiedWarning`) and widens
the interval after the decay starts to cover the no-decay curve and the same gain again.

Files: :meth:`Prior.save` writes plain JSON (``"format": "lossrate-prior"``, ``"version"``),
atomically; :meth:`Prior.load` refuses other formats and newer versions with a clear error.
"""

from __future__ import annotations

from ._fitting import fit_with_prior, predict_with_prior
from ._prior import Prior
from ._records import (
    DEFAULT_PER_RUN,
    FORMAT,
    VERSION,
    DecayNotIdentifiedWarning,
    ParamPrior,
    SourceRun,
)
from ._runs import check_runs, decays, prior_model

__all__ = [
    "DEFAULT_PER_RUN",
    "FORMAT",
    "VERSION",
    "DecayNotIdentifiedWarning",
    "ParamPrior",
    "Prior",
    "SourceRun",
    "check_runs",
    "decays",
    "fit_with_prior",
    "predict_with_prior",
    "prior_model",
]
