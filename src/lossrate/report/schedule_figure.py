"""Figure of a schedule search (:func:`lossrate.optimize_schedule`): the lr of each family's
best schedule and of the references (top), and their predicted loss with the interval of
the best one (bottom, log y)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ._style import PEER_COLORS, _styled

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..optimize import ScheduleOptimum

__all__ = ["schedule_figure"]


@_styled
def schedule_figure(result: ScheduleOptimum) -> Figure:
    """Two panels against step: learning rates, and predicted losses (the best family's
    interval shaded). Save it with :func:`lossrate.report.figures.save_figure`."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.0, 6.4), dpi=150, layout="constrained")
    ax_lr, ax_loss = fig.subplots(2, 1, sharex=True, height_ratios=(1, 1.4))
    steps = np.arange(result.budget.n_steps)
    grey = {"current": "#7f7f7f", "cosine": "#bcbd22"}
    for name, (sch, pred) in result.references.items():
        c = grey.get(name, "#999999")
        ax_lr.plot(steps, sch.lr, color=c, ls="--", lw=1.2, label=name)
        ax_loss.plot(pred.step, pred.loss, color=c, ls="--", lw=1.2, label=f"{name}")
    best = result.best.family
    for i, (name, f) in enumerate(sorted(result.families.items())):
        c = PEER_COLORS[i % len(PEER_COLORS)]
        lw = 2.0 if name == best else 1.3
        ax_lr.plot(steps, f.schedule.lr, color=c, lw=lw, label=f"best {name}")
        p = f.prediction
        ax_loss.plot(p.step, p.loss, color=c, lw=lw, label=f"best {name}: {f.loss:.4g}")
        if name == best:
            ax_loss.fill_between(
                p.step,
                p.lower,
                p.upper,
                color=c,
                alpha=0.15,
                lw=0,
                label=f"{100 * result.level:.0f} % interval",
            )
    ax_lr.set_ylabel("learning rate")
    ax_lr.legend(loc="lower left")
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("predicted loss")
    ax_loss.legend(loc="upper right")
    title = "best schedules for the budget"
    if not result.identified:
        title += " (decay gain NOT identified: the laws' guess)"
    ax_lr.set_title(title)
    return fig
