"""Figures against optimizer step: observed vs predicted loss, residuals, peer models."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .._errors import InvalidArgumentError
from .._results import Prediction
from ..trajectory import Trajectory
from ._style import (
    COLORS,
    DPI,
    PEER_COLORS,
    _cut_fraction,
    _legend_below,
    _log_y,
    _mark_cut,
    _new_figure,
    _observed_line,
    _pct,
    _percent_axis,
    _run_title,
    _running_median,
    _shade_prefix,
    _smooth_window,
    _styled,
)
from .summary import observed_final, predicted_at

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["loss_figure", "peers_figure", "residuals_figure"]


# ---------------------------------------------------------------------- figures
@_styled
def loss_figure(
    traj: Trajectory,
    prediction: Prediction | None = None,
    *,
    cut_step: float | None = None,
    floor: float | None = None,
    target: float | None = None,
    model_label: str = "model",
    title: str | None = None,
) -> Figure:
    """Observed loss against optimizer step with the prediction and its interval (log y).

    Args:
        traj: the observed run.
        prediction: the model curve over the run (and beyond); its ``lower``/``upper``
            interval is drawn as a band.
        cut_step: last step the model was fitted on; the prefix is shaded and the cut marked.
        floor: the loss floor to draw as a horizontal line (omitted when None).
        target: a target loss to draw (omitted when None).
        model_label: legend name of the model.
        title: figure title (default: from the run metadata).
    """
    fig, ax = _new_figure()
    _shade_prefix(ax, float(traj.step[0]), cut_step, _cut_fraction(traj, cut_step))
    _observed_line(ax, traj)
    arrays = [traj.loss]
    if prediction is not None:
        ax.fill_between(
            prediction.step,
            prediction.lower,
            prediction.upper,
            color=COLORS["interval"],
            alpha=0.45,
            lw=0,
            label=f"{_pct(prediction.level)} prediction interval",
            zorder=1.5,
        )
        ax.plot(
            prediction.step,
            prediction.loss,
            color=COLORS["model"],
            lw=2.0,
            label=model_label,
            zorder=5,
        )
        arrays += [prediction.loss, prediction.upper]
    if floor is not None and np.isfinite(floor) and floor > 0:
        ax.axhline(floor, color=COLORS["floor"], ls=":", lw=1.4, label=f"loss floor {floor:.4g}")
        arrays.append(np.array([floor]))
    if target is not None and np.isfinite(target) and target > 0:
        ax.axhline(target, color=COLORS["target"], ls="-.", lw=1.2, label=f"target {target:.4g}")
        arrays.append(np.array([target]))
    _log_y(ax, arrays)
    _mark_cut(ax, cut_step)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (log scale)")
    ax.set_xlim(
        traj.step[0], max(traj.step[-1], prediction.step[-1] if prediction is not None else 0)
    )
    ax.set_title(title or _run_title(traj, "observed vs predicted loss"))
    if prediction is not None:
        _final_box(ax, traj, prediction)
    _legend_below(fig, ax, ncols=3)
    return fig


def _final_box(ax: Axes, traj: Trajectory, prediction: Prediction) -> None:
    last = int(traj.step[-1])
    if not prediction.step[0] <= last <= prediction.step[-1]:
        text = f"predicted at step {int(prediction.step[-1])}: {prediction.loss[-1]:.4g}"
    else:
        pred, lo, hi = predicted_at(prediction, last)
        obs = observed_final(traj)
        err = 100 * (pred - obs) / obs
        text = (
            f"step {last}\nobserved   {obs:.4g}\npredicted  {pred:.4g}  ({err:+.1f} %)\n"
            f"{_pct(prediction.level)} interval  [{lo:.3g}, {hi:.3g}]"
        )
    ax.text(
        0.985,
        0.97,
        text,
        transform=ax.transAxes,
        ha="right",
        va="top",
        family="monospace",
        fontsize=8,
        bbox={"boxstyle": "round,pad=0.4", "fc": "white", "ec": "#bbbbbb", "alpha": 0.92},
        zorder=10,
    )


@_styled
def residuals_figure(
    traj: Trajectory,
    prediction: Prediction,
    *,
    cut_step: float | None = None,
    noise_sd: float | None = None,
    title: str | None = None,
) -> Figure:
    """log(observed / predicted) against step, fitted prefix and hold-out coloured apart.

    Args:
        noise_sd: fitted residual sd of log loss; draws the +-1 and +-2 sd band.
    """
    pred = np.interp(traj.step, prediction.step, prediction.loss, left=np.nan, right=np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.log(traj.loss) - np.log(pred)
    fig, ax = _new_figure(size=(8.0, 3.6))
    if noise_sd is not None and np.isfinite(noise_sd) and noise_sd > 0:
        ax.axhspan(
            -2 * noise_sd,
            2 * noise_sd,
            color=COLORS["interval"],
            alpha=0.25,
            lw=0,
            label="±2 fitted noise sd",
        )
        ax.axhspan(
            -noise_sd,
            noise_sd,
            color=COLORS["interval"],
            alpha=0.35,
            lw=0,
            label="±1 fitted noise sd",
        )
    train = traj.step <= (cut_step if cut_step is not None else np.inf)
    ms = 3.5 if traj.n <= 200 else 2.0
    ax.plot(
        traj.step[train],
        r[train],
        ls="none",
        marker="o",
        ms=ms,
        alpha=0.6,
        color=COLORS["observed"],
        label="fitted prefix",
    )
    if (~train).any():
        ax.plot(
            traj.step[~train],
            r[~train],
            ls="none",
            marker="o",
            ms=ms,
            alpha=0.6,
            color=COLORS["measured"],
            label="held out (prediction)",
        )
    ok = np.isfinite(r)
    if ok.sum() > 10:
        ax.plot(
            traj.step[ok],
            _running_median(r[ok], _smooth_window(int(ok.sum())) * 2 + 1),
            color=COLORS["model"],
            lw=1.5,
            label="running median",
        )
    ax.axhline(0.0, color="#333333", lw=0.9)
    _mark_cut(ax, cut_step)
    fin = r[ok]
    if fin.size:
        lim = max(float(np.quantile(np.abs(fin), 0.995)) * 1.15, 2.5 * (noise_sd or 0), 1e-3)
        ax.set_ylim(-lim, lim)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("log(observed / predicted)")
    ax.set_title(title or _run_title(traj, "residuals of the fit"))
    _legend_below(fig, ax, ncols=5)
    _percent_axis(ax)
    return fig


@dataclass(frozen=True)
class _Peer:
    name: str
    prediction: Prediction
    color: str


@_styled
def peers_figure(
    traj: Trajectory,
    predictions: Mapping[str, Prediction],
    *,
    cut_step: float | None = None,
    title: str | None = None,
) -> Figure:
    """Several models fitted on the same prefix: their curves (left) and final-loss errors (right).

    Args:
        predictions: model name -> prediction over the run; the first is drawn as the main model.
    """
    if not predictions:
        raise InvalidArgumentError(
            "predictions is empty; pass at least one model's Prediction by name."
        )
    peers = [
        _Peer(k, p, PEER_COLORS[i % len(PEER_COLORS)])
        for i, (k, p) in enumerate(predictions.items())
    ]
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11.0, 4.6), dpi=DPI, layout="constrained")
    ax, bx = fig.subplots(1, 2, width_ratios=[2.2, 1.0])
    _shade_prefix(ax, float(traj.step[0]), cut_step, _cut_fraction(traj, cut_step))
    _observed_line(ax, traj)
    arrays = [traj.loss]
    for p in peers:
        ax.plot(p.prediction.step, p.prediction.loss, color=p.color, lw=1.7, label=p.name)
        arrays.append(p.prediction.loss)
    _log_y(ax, arrays)
    _mark_cut(ax, cut_step)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (log scale)")
    ax.set_title(title or _run_title(traj, "models fitted on the same prefix"))
    _legend_below(fig, ax, ncols=4)

    obs = observed_final(traj)
    last = float(traj.step[-1])
    errs = [
        100 * (float(np.interp(last, p.prediction.step, p.prediction.loss)) - obs) / obs
        for p in peers
    ]
    y = np.arange(len(peers))[::-1]
    bx.barh(y, errs, color=[p.color for p in peers], alpha=0.85, height=0.6)
    for yi, e in zip(y, errs, strict=True):
        bx.annotate(
            f"{e:+.2f} %",
            xy=(e, yi),
            xytext=(4 if e >= 0 else -4, 0),
            textcoords="offset points",
            ha="left" if e >= 0 else "right",
            va="center",
            fontsize=8.5,
        )
    bx.axvline(0, color="#333333", lw=0.9)
    bx.set_yticks(y, [p.name for p in peers])
    span = max(max(abs(e) for e in errs), 0.5)
    bx.set_xlim(-1.45 * span, 1.45 * span)
    bx.set_xlabel("final-loss error (%)")
    bx.set_title(f"error at step {int(last)}")
    bx.grid(axis="y", visible=False)
    return fig
