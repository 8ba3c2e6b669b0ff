"""Figures of a fit, as functions of results: each returns a matplotlib ``Figure``.

* :func:`loss_figure` — observed loss and the model's prediction with its interval,
  the fitted prefix shaded and the cut marked (log y);
* :func:`phi_figure` — the rate phi(t) in intrinsic time: measured
  phi_hat = ||grad L||_P^2 / g(L) where the gradient was logged, and the rate the
  fitted curve implies, phi_fit = -(dL/dt) / g(L);
* :func:`closure_ratio_figure` — c(t) = R / g(L) with the rigorous bracket
  [g_lo / g, g_hi / g] (needs ``residual_sq`` and ``loss_std``);
* :func:`residuals_figure` — log(observed / predicted) with the fitted noise band;
* :func:`peers_figure` — several models' predictions and their final-loss errors.

matplotlib is imported when a figure is drawn, never at ``import lossrate``; figures
are drawn on ``matplotlib.figure.Figure`` objects directly (no pyplot, no global
backend or style changes), so they are safe in servers and notebooks alike.

The drawing lives in :mod:`._style` (colours, rc settings, helpers, PNG output),
:mod:`._curves` (figures against step) and :mod:`._rates` (figures in intrinsic time);
this module is their public face.
"""

from ._curves import loss_figure, peers_figure, residuals_figure
from ._rates import closure_ratio_figure, implied_rate, phi_figure
from ._style import COLORS, DPI, PEER_COLORS, closure_label, figure_png, save_figure

__all__ = [
    "COLORS",
    "DPI",
    "PEER_COLORS",
    "closure_label",
    "closure_ratio_figure",
    "figure_png",
    "implied_rate",
    "loss_figure",
    "peers_figure",
    "phi_figure",
    "residuals_figure",
    "save_figure",
]
