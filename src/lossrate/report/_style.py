"""The look shared by every report figure: colours, rc settings, axes helpers, PNG output.

matplotlib is imported inside the functions, never at import time.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..closures import Closure
from ..trajectory import Trajectory, atomic_write

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

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
    "axes.titlepad": 15,  # room for the "fit | predict" label above the plot (_mark_cut)
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
        # above the plot, on the cut, where no data, legend or info box can hide it
        ax.annotate(
            "fit ◀ │ ▶ predict",
            xy=(x, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(0, 2),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=8,
            color=COLORS["cut"],
            annotation_clip=False,
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


#: legend labels longer than this wrap onto further lines
_LABEL_WIDTH = 56


def _legend_below(fig: Figure, ax: Axes, ncols: int = 3) -> None:
    """The axes' legend in rows under the plot, where it hides no data: long labels wrap,
    and the columns drop from ``ncols`` until the legend fits the figure's width."""
    import textwrap

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    labels = [textwrap.fill(label, _LABEL_WIDTH) for label in labels]
    renderer = FigureCanvasAgg(fig).get_renderer()
    for n in range(min(ncols, len(handles)), 0, -1):
        legend = fig.legend(handles, labels, loc="outside lower center", ncols=n)
        if n == 1 or legend.get_window_extent(renderer).width <= 0.98 * fig.bbox.width:
            return
        legend.remove()


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


def _percent_axis(ax: Axes) -> None:
    """A right-hand axis in percent for an axis of log ratios: 100 (e^x - 1)."""

    def to_pct(x: Any) -> Any:
        return 100 * np.expm1(x)

    def to_log(p: Any) -> Any:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log1p(np.asarray(p) / 100)

    ax.secondary_yaxis("right", functions=(to_pct, to_log)).set_ylabel("error (%)")


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
