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
"""

from __future__ import annotations

import functools
import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._errors import InvalidArgumentError
from .._results import Prediction
from ..closures import Closure
from ..trajectory import Trajectory, atomic_write
from .summary import observed_final, predicted_at

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "COLORS",
    "DPI",
    "closure_ratio_figure",
    "figure_png",
    "loss_figure",
    "peers_figure",
    "phi_figure",
    "residuals_figure",
    "save_figure",
]

DPI = 150

#: One colour per role, the same in every figure.
COLORS = {
    "observed": "#4d4d4d",
    "test": "#7b3294",
    "model": "#1f5fa8",
    "interval": "#9ecae1",
    "measured": "#e6730f",
    "ratio": "#2c8c4a",
    "ratio2": "#88b04b",
    "bracket": "#c7e9c0",
    "floor": "#c0392b",
    "target": "#16a085",
    "cut": "#222222",
    "prefix": "#f0f0f0",
}
#: Peer models, in order (the first model of a comparison takes COLORS["model"]).
PEER_COLORS = (
    "#1f5fa8",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
)

_RC: dict[str, Any] = {
    "font.size": 9.5,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.labelsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.35,
    "grid.linewidth": 0.6,
    "legend.fontsize": 8.5,
    "legend.frameon": True,
    "legend.framealpha": 0.9,
    "legend.edgecolor": "#cccccc",
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
}


# ----------------------------------------------------------------------- helpers
def _new_figure(size: tuple[float, float] = (8.0, 4.6)) -> tuple[Figure, Axes]:
    """A one-axes figure (call inside :func:`_styled` functions so the rc settings apply)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    return fig, fig.subplots()


def _styled(func: Any) -> Any:
    """Run a drawing function under the report's rc settings (fonts, grid, spines)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from matplotlib import rc_context

        with rc_context(_RC):  # type: ignore[arg-type]
            return func(*args, **kwargs)

    return wrapper


def _run_title(traj: Trajectory, what: str) -> str:
    """ "run name — what", the run named by meta.name, else by its data set, model and optimizer."""
    m = traj.meta
    head = m.name or " · ".join(p for p in (m.dataset, m.model, m.optimizer) if p)
    return f"{head} — {what}" if head else what


def _mark_cut(ax: Axes, x: float | None, *, label: bool = True) -> None:
    if x is None:
        return
    ax.axvline(x, color=COLORS["cut"], ls="--", lw=1.0, alpha=0.8, zorder=1)
    if label:
        ax.annotate(
            "fit ◀ │ ▶ predict",
            xy=(x, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(0, -2),
            textcoords="offset points",
            ha="center",
            va="top",
            fontsize=8,
            color=COLORS["cut"],
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.85},
        )


def _shade_prefix(ax: Axes, x0: float, x1: float | None, fraction: float | None) -> None:
    if x1 is None:
        return
    what = f"fitted prefix ({fraction:.0%} of steps)" if fraction else "fitted prefix"
    ax.axvspan(x0, x1, color=COLORS["prefix"], zorder=0, label=what)


def _cut_fraction(traj: Trajectory, cut_step: float | None) -> float | None:
    if cut_step is None or traj.step[-1] == traj.step[0]:
        return None
    return float((cut_step - traj.step[0]) / (traj.step[-1] - traj.step[0]))


def _t_at_step(traj: Trajectory, step: float | None) -> float | None:
    if step is None:
        return None
    return float(np.interp(step, traj.step, traj.t))


def _running_median(y: np.ndarray, window: int) -> np.ndarray:
    """Centred running median ignoring NaN (window clipped at the ends)."""
    n = y.size
    half = max(window // 2, 0)
    out = np.full(n, np.nan)
    for i in range(n):
        seg = y[max(0, i - half) : i + half + 1]
        seg = seg[np.isfinite(seg)]
        if seg.size:
            out[i] = np.median(seg)
    return out


def _smooth_window(n: int) -> int:
    return int(np.clip(n // 40, 1, 101)) | 1


def closure_label(closure: Closure) -> str:
    """``ce(classes=10, alpha=1.26)``: the closure's name and its numeric parameters."""
    import dataclasses

    parts: list[str] = []
    if dataclasses.is_dataclass(closure):
        for f in dataclasses.fields(closure):
            value = getattr(closure, f.name, None)
            if f.init and isinstance(value, int | float) and not isinstance(value, bool):
                parts.append(f"{f.name}={value:.4g}")
    return f"{closure.name}({', '.join(parts)})" if parts else closure.name


def _time_label(traj: Trajectory) -> str:
    if traj.meta.time_unit == "step":
        return "time t (optimizer steps; no learning rate logged)"
    return "intrinsic time t = Σ learning rate"


def _pct(level: float) -> str:
    return f"{100 * level:.0f} %"


def _observed_line(ax: Axes, traj: Trajectory, *, label: str = "observed (batch loss)") -> None:
    n = traj.n
    style: dict[str, Any] = {"marker": "o", "ms": 3.0} if n <= 80 else {}
    ax.plot(
        traj.step,
        traj.loss,
        color=COLORS["observed"],
        lw=0.8,
        alpha=0.55 if n > 80 else 0.9,
        label=label,
        zorder=2,
        **style,
    )
    if n > 80:
        ax.plot(
            traj.step,
            _running_median(traj.loss, _smooth_window(n)),
            color=COLORS["observed"],
            lw=1.4,
            alpha=0.95,
            zorder=3,
            label="observed, running median",
        )
    if traj.has("test_loss"):
        assert traj.test_loss is not None
        ok = np.isfinite(traj.test_loss)
        ax.plot(
            traj.step[ok],
            traj.test_loss[ok],
            ls="none",
            marker="o",
            ms=4,
            mfc="white",
            mec=COLORS["test"],
            mew=1.1,
            label="test loss (held-out data)",
            zorder=4,
        )


def _legend_below(fig: Figure, ax: Axes, ncols: int = 3) -> None:
    """The axes' legend in a row under the plot, where it hides no data."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(ncols, len(handles)))


def _plain_log_axis(ax: Axes) -> None:
    """Decimal tick labels (0.05, 0.1, 1) on a log y axis; minor labels at 2 and 5 x 10^k when
    the axis spans less than about two decades."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    lo, hi = ax.get_ylim()
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    if hi / lo < 150:
        ax.yaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
        ax.yaxis.set_minor_formatter(plain)
    else:
        ax.yaxis.set_minor_formatter(NullFormatter())


def _log_y(ax: Axes, arrays: list[np.ndarray], *, low_quantile: float = 0.002) -> None:
    """Log y axis with decimal labels, limits from the positive finite values of ``arrays``."""
    ax.set_yscale("log")
    vals = np.concatenate([np.asarray(a, float).ravel() for a in arrays])
    vals = vals[np.isfinite(vals) & (vals > 0)]
    if vals.size:
        lo, hi = np.quantile(vals, low_quantile), np.quantile(vals, 1 - low_quantile / 4)
        ax.set_ylim(lo / 1.25, hi * 1.25)
    _plain_log_axis(ax)


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


def _percent_axis(ax: Axes) -> None:
    """A right-hand axis in percent for an axis of log ratios: 100 (e^x - 1)."""

    def to_pct(x: Any) -> Any:
        return 100 * np.expm1(x)

    def to_log(p: Any) -> Any:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log1p(np.asarray(p) / 100)

    ax.secondary_yaxis("right", functions=(to_pct, to_log)).set_ylabel("error (%)")


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


# ------------------------------------------------------------------------- output
def figure_png(fig: Figure) -> bytes:
    """The figure as PNG bytes at :data:`DPI` dots per inch."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
    return buf.getvalue()


def save_figure(fig: Figure | bytes, path: str | Path) -> Path:
    """Write a figure (or PNG bytes) to ``path`` atomically; returns the path."""
    data = fig if isinstance(fig, bytes) else figure_png(fig)
    p = Path(path)
    atomic_write(p, lambda f: f.write(data), binary=True)
    return p
