"""Figures in intrinsic time: the rate phi(t) and the closure ratio c(t) = R / g(L)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .._errors import InvalidArgumentError
from .._results import Prediction
from ..closures import Closure
from ..trajectory import Trajectory
from ._style import (
    COLORS,
    _legend_below,
    _log_y,
    _mark_cut,
    _new_figure,
    _run_title,
    _running_median,
    _smooth_window,
    _styled,
    _t_at_step,
    _time_label,
    closure_label,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["closure_ratio_figure", "implied_rate", "phi_figure"]


@_styled
def phi_figure(
    traj: Trajectory,
    closure: Closure,
    prediction: Prediction | None = None,
    *,
    measured: np.ndarray | None = None,
    measured_label: str = "measured φ̂ = ‖∇L‖²_P / g(L)",
    cut_step: float | None = None,
    title: str | None = None,
) -> Figure:
    """The rate phi(t) against intrinsic time.

    Args:
        traj: the observed run.
        closure: the closure g(L) the rate is defined with.
        prediction: the fitted model curve; its implied rate -(dL/dt)/g(L) is drawn.
        measured: phi_hat per logged step (e.g. from :mod:`lossrate.measured`); drawn as
            points with a running median. NaN entries are skipped.
        measured_label: legend name of ``measured``.
        cut_step: last fitted step, marked on the time axis.
    """
    fig, ax = _new_figure()
    arrays: list[np.ndarray] = []
    if measured is not None:
        y = np.asarray(measured, float)
        ok = np.isfinite(y) & (y > 0)
        if ok.any():
            ax.plot(
                traj.t[ok],
                y[ok],
                ls="none",
                marker=".",
                ms=2.5,
                alpha=0.35,
                color=COLORS["measured"],
                label=measured_label,
            )
            ax.plot(
                traj.t[ok],
                _running_median(y[ok], _smooth_window(int(ok.sum()))),
                color=COLORS["measured"],
                lw=1.6,
                label="measured, running median",
            )
            arrays.append(y[ok])
    if prediction is not None:
        t_fit, phi_fit = implied_rate(prediction, closure)
        ok = np.isfinite(phi_fit) & (phi_fit > 0)
        if ok.any():
            ax.plot(
                t_fit[ok],
                phi_fit[ok],
                color=COLORS["model"],
                lw=2.0,
                label="fitted model, φ = −(dL/dt) / g(L)",
            )
            arrays.append(phi_fit[ok])
    if not arrays:
        ax.text(
            0.5,
            0.5,
            "no rate to show: no gradient norms logged and no model given",
            ha="center",
            va="center",
            transform=ax.transAxes,
            color="#777777",
        )
    else:
        vals = np.concatenate(arrays)
        if vals.max() / max(vals.min(), 1e-300) > 20:
            _log_y(ax, arrays, low_quantile=0.005)
        _legend_below(fig, ax, ncols=3)
    cut_t = _t_at_step(traj, cut_step)
    if cut_t is not None:
        ax.axvspan(float(traj.t[0]), cut_t, color=COLORS["prefix"], zorder=0)
    _mark_cut(ax, cut_t)
    ax.set_xlabel(_time_label(traj))
    ax.set_ylabel("rate φ(t)")
    ax.set_title(title or _run_title(traj, f"rate φ(t), g = {closure_label(closure)}"))
    return fig


def implied_rate(prediction: Prediction, closure: Closure) -> tuple[np.ndarray, np.ndarray]:
    """The rate a curve implies, phi = -(dL/dt) / g(L), at the midpoints of its grid.

    Exact for a gradient-flow model L = G^-1(G(L0) - Phi(t)); for a model with a noise
    term it is the net (effective) rate.
    """
    t, L = np.asarray(prediction.t, float), np.asarray(prediction.loss, float)
    dt = np.diff(t)
    ok = dt > 0
    tm = 0.5 * (t[1:] + t[:-1])
    # dG = dL / g exactly for the reparametrised solution, so use G differences: no division by tiny g
    with np.errstate(divide="ignore", invalid="ignore"):
        phi = -(np.diff(closure.G(L))) / dt
    return tm[ok], phi[ok]


@_styled
def closure_ratio_figure(
    traj: Trajectory,
    closure: Closure,
    *,
    cut_step: float | None = None,
    title: str | None = None,
) -> Figure:
    """The closure ratio c(t) = R / g(L) with its rigorous bracket [g_lo / g, g_hi / g].

    Also draws R / g2(L, sigma), the ratio with the sigma-aware second-order closure.
    Needs the columns ``residual_sq`` (R) and ``loss_std`` (sigma).

    Raises:
        InvalidArgumentError: when ``residual_sq`` or ``loss_std`` is missing.
    """
    if not (traj.has("residual_sq") and traj.has("loss_std")):
        raise InvalidArgumentError(
            "the closure-ratio figure needs the columns 'residual_sq' (R) and 'loss_std' (sigma_L); "
            "record them with lossrate's torch Recorder, or skip this figure."
        )
    assert traj.residual_sq is not None and traj.loss_std is not None
    ok = np.isfinite(traj.residual_sq) & np.isfinite(traj.loss_std)
    t, L, R, sd = traj.t[ok], traj.loss[ok], traj.residual_sq[ok], traj.loss_std[ok]
    with np.errstate(divide="ignore", invalid="ignore"):
        g = np.asarray(closure.g(L), float)
        c = R / g
        c2 = R / np.asarray(closure.g2(L, sd), float)
    fig, ax = _new_figure()
    bracket: tuple[np.ndarray, np.ndarray] | None
    try:
        bracket = closure.bracket(L, sd)
    except InvalidArgumentError:
        bracket = None
    w = _smooth_window(t.size)
    arrays = [c]
    if bracket is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            blo, bhi = np.asarray(bracket[0], float) / g, np.asarray(bracket[1], float) / g
        inside = float(np.mean((c >= blo * (1 - 1e-9)) & (c <= bhi * (1 + 1e-9))))
        ax.fill_between(
            t,
            _running_median(blo, w),
            _running_median(bhi, w),
            color=COLORS["bracket"],
            alpha=0.75,
            lw=0,
            label="rigorous bracket [g_lo, g_hi] / g (running median)",
        )
        ax.text(
            0.985,
            0.03,
            f"c inside its bracket at {inside:.0%} of logged steps",
            transform=ax.transAxes,
            ha="right",
            va="bottom",
            fontsize=8.5,
            bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": "#bbbbbb", "alpha": 0.9},
        )
        arrays += [blo, bhi]
    noisy = t.size > 80
    if noisy:
        ax.plot(t, c, color=COLORS["ratio"], lw=0.5, alpha=0.3)
    ax.plot(
        t,
        _running_median(c, w) if noisy else c,
        color=COLORS["ratio"],
        lw=1.8,
        label="c = R / g(L)  (mean-field closure)",
    )
    if np.isfinite(c2).any():
        ax.plot(
            t,
            _running_median(c2, w) if noisy else c2,
            color=COLORS["ratio2"],
            lw=1.3,
            ls="--",
            label="R / g₂(L, σ)  (σ-aware closure)",
        )
    ax.axhline(1.0, color="#888888", lw=0.9, ls=":", label="c = 1 (closure exact)")
    vals = np.concatenate([a[np.isfinite(a) & (a > 0)] for a in arrays])
    if vals.size and np.quantile(vals, 0.99) / np.quantile(vals, 0.01) > 8:
        _log_y(ax, arrays, low_quantile=0.01)
    elif vals.size:
        ax.set_ylim(0, 1.1 * max(float(np.quantile(vals, 0.995)), 1.05))
    cut_t = _t_at_step(traj, cut_step)
    _mark_cut(ax, cut_t)
    ax.set_xlabel(_time_label(traj))
    ax.set_ylabel("closure ratio c(t) = R / g")
    ax.set_title(title or _run_title(traj, f"closure ratio, g = {closure_label(closure)}"))
    _legend_below(fig, ax, ncols=2)
    return fig
