"""Reports of a fit: PNG figures, one self-contained HTML page, and the fit as JSON.

Everything here is a function of results (a :class:`~lossrate.Trajectory`, a
:class:`~lossrate._results.FitResult`, a :class:`~lossrate._results.Prediction`);
matplotlib is imported only when a figure is drawn.

The report folder written by :func:`write_report`::

    run_dir/
      trajectory.csv         the run (lossrate's lossless CSV)
      fit.json               fit, headline numbers, prediction summary, settings
      figures/loss.png       observed vs predicted loss with its interval
      figures/phi.png        rate phi(t): measured and fitted      (needs a closure)
      figures/closure_ratio.png  c(t) = R/g with its bracket       (needs residual_sq, loss_std)
      figures/residuals.png  log(observed / predicted)
      figures/peers.png      several models on the same prefix     (when peers are given)
      report.html            the page embedding all of the above
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import DataError, LossrateError
from .._folders import check_output_folder, kill_point, write_folder
from .._results import FitResult, Prediction, _nan_to_none
from ..closures import Closure
from ..trajectory import Trajectory, atomic_write
from .figures import (
    closure_ratio_figure,
    figure_png,
    loss_figure,
    peers_figure,
    phi_figure,
    residuals_figure,
    save_figure,
)
from .html import ReportFigure, render_html, write_html
from .summary import Headline

__all__ = [
    "FIGURE_NAMES",
    "Headline",
    "ReportFiles",
    "closure_ratio_figure",
    "cut_step_of",
    "loss_figure",
    "peers_figure",
    "phi_figure",
    "render_figures",
    "residuals_figure",
    "save_figure",
    "write_report",
]

#: Every figure file name :func:`write_report` may write (without ".png").
FIGURE_NAMES = ("loss", "phi", "closure_ratio", "residuals", "peers")


@dataclass(frozen=True)
class ReportFiles:
    """The paths :func:`write_report` wrote."""

    folder: Path
    html: Path
    fit_json: Path
    trajectory: Path | None
    figures: tuple[Path, ...]
    warnings: tuple[str, ...] = ()


def cut_step_of(fit: FitResult) -> int | None:
    """Last step the fit saw (of its first run), or None when the fit does not say."""
    for _first, last in fit.train_steps.values():
        return int(last)
    return None


def _closure_of(fit: FitResult) -> Closure | None:
    closure = getattr(fit.model, "closure", None)
    return closure if isinstance(closure, Closure) else None


def _noise_sd_of(fit: FitResult) -> float | None:
    for value in fit.noise_sd.values():
        return float(value)
    return None


def _measured_phi(traj: Trajectory, closure: Closure) -> np.ndarray | None:
    """phi_hat = pgrad_sq / g(L) per logged step (:mod:`lossrate.measured`), None when the run
    did not log the gradient and residual norms."""
    from ..measured import measured_rates

    try:
        return measured_rates(traj, closure).phi_hat
    except DataError:
        return None


def render_figures(
    traj: Trajectory,
    fit: FitResult,
    prediction: Prediction,
    *,
    closure: Closure | None = None,
    peers: Mapping[str, Prediction] | None = None,
    floor: float | None = None,
    target: float | None = None,
) -> tuple[list[ReportFigure], list[str]]:
    """Draw every figure that the data allows; returns the figures and why others were skipped."""
    closure = closure or _closure_of(fit)
    cut = cut_step_of(fit)
    name = fit.model.describe()
    figs: list[ReportFigure] = []
    skipped: list[str] = []
    pct = f"{100 * prediction.level:.0f} %"
    figs.append(
        ReportFigure(
            "loss",
            figure_png(
                loss_figure(
                    traj, prediction, cut_step=cut, floor=floor, target=target, model_label=name
                )
            ),
            f"Observed training loss and the {name} prediction with its {pct} interval (log scale). "
            "The shaded prefix is what the model was fitted on; everything right of the dashed line "
            "is predicted.",
        )
    )
    if closure is not None:
        measured = _measured_phi(traj, closure)
        figs.append(
            ReportFigure(
                "phi",
                figure_png(
                    phi_figure(
                        traj,
                        closure,
                        prediction,
                        measured=measured,
                        cut_step=cut,
                    )
                ),
                "The rate φ(t) in intrinsic time: "
                + (
                    "measured from the logged gradient norms (one mini-batch each, so biased "
                    "upward by tr Σ/B where the gradient is small), and "
                    if measured is not None
                    else ""
                )
                + "implied by the fitted curve, −(dL/dt)/g(L).",
            )
        )
        if traj.has("residual_sq") and traj.has("loss_std"):
            try:
                png = figure_png(closure_ratio_figure(traj, closure, cut_step=cut))
            except LossrateError as exc:
                skipped.append(f"closure-ratio figure skipped: {exc}")
            else:
                figs.append(
                    ReportFigure(
                        "closure_ratio",
                        png,
                        "Closure ratio c(t) = R/g(L) (R = mean ‖∂ℓ/∂z‖² measured per batch) with the "
                        "rigorous bracket [g_lo, g_hi]/g from the batch loss mean and spread.",
                    )
                )
        else:
            skipped.append(
                "closure-ratio figure skipped: the run has no 'residual_sq' and 'loss_std' columns "
                "(record them with lossrate's torch Recorder)."
            )
    else:
        skipped.append(
            "rate and closure-ratio figures skipped: the fitted model has no closure g(L)."
        )
    figs.append(
        ReportFigure(
            "residuals",
            figure_png(
                residuals_figure(traj, prediction, cut_step=cut, noise_sd=_noise_sd_of(fit))
            ),
            "Residuals log(observed/predicted); the band is the fitted observation noise. A trend in "
            "the held-out part means the model bends away from the run.",
        )
    )
    if peers:
        figs.append(
            ReportFigure(
                "peers",
                figure_png(
                    peers_figure(traj, {fit.model.name or name: prediction, **peers}, cut_step=cut)
                ),
                "Models fitted on the same prefix: their predictions and their final-loss errors.",
            )
        )
    return figs, skipped


def write_report(
    run_dir: str | Path,
    traj: Trajectory,
    fit: FitResult,
    prediction: Prediction,
    *,
    headline: Headline | None = None,
    closure: Closure | None = None,
    peers: Mapping[str, Prediction] | None = None,
    settings: Mapping[str, Any] | None = None,
    title: str | None = None,
    write_trajectory: bool = True,
    warnings: Sequence[str] = (),
    notes: Sequence[str] = (),
    copies: Mapping[str, str | Path] | None = None,
) -> ReportFiles:
    """Write the report folder (see the module docstring) and return its paths.

    Every figure and the page are rendered in memory first; the files are then written to a
    new folder beside ``run_dir``, which replaces it with one rename (:mod:`lossrate._folders`):
    a failure or a kill leaves the old folder or the new one, whole. Entries of the old folder
    the report does not write (a run's checkpoint and config, ``trajectory.csv`` when
    ``write_trajectory`` is False) are carried over.

    Args:
        run_dir: the folder (created if needed; refused when it holds files lossrate did not
            write, or is the current folder).
        traj: the observed run.
        fit: the fit (its ``train_steps`` mark the cut; its model's ``closure``, if any,
            is used for the rate figures unless ``closure`` is given).
        prediction: the model over the run's steps.
        headline: the headline numbers (default: observed vs predicted final loss only).
        closure: the closure g(L) for the rate and closure-ratio figures.
        peers: other models' predictions on the same prefix, by name.
        settings: how the report was made (e.g. command-line options), saved in fit.json.
        title: page and figure title.
        write_trajectory: also write ``trajectory.csv``.
        warnings: extra warnings listed on the page.
        notes: extra notes listed on the page (facts, not warnings: e.g. the gradient noise
            scale of a run recorded with gradient groups), and saved in fit.json.
        copies: files copied into the folder, by the name they get there (the run's
            ``gradient_noise.csv`` beside its ``trajectory.csv``, so that ``lossrate replay``
            works on the folder).
    """
    folder = Path(run_dir)
    check_output_folder(folder, flag="run_dir")
    headline = headline or Headline.from_prediction(traj, prediction, cut_step=cut_step_of(fit))
    figs, skipped = render_figures(
        traj,
        fit,
        prediction,
        closure=closure,
        peers=peers,
        # a floor the laws put decades apart is no line to draw (the page says so)
        floor=None if headline.floor_unidentified else headline.floor,
        target=headline.target,
    )
    all_warnings = [*warnings, *skipped]
    page = render_html(
        traj,
        fit,
        headline,
        figs,
        prediction=prediction,
        title=title,
        warnings=all_warnings,
        settings=settings,
        notes=notes,
    )
    doc = {
        "fit": fit.to_dict(),
        "headline": headline.to_dict(),
        "prediction": {
            "level": prediction.level,
            "step": prediction.step.tolist(),
            "loss": prediction.loss.tolist(),
            "lower": prediction.lower.tolist(),
            "upper": prediction.upper.tolist(),
            "warnings": list(prediction.warnings),
        },
        "peers": {
            k: {"final_loss": float(np.interp(traj.step[-1], p.step, p.loss))}
            for k, p in (peers or {}).items()
        },
        "settings": dict(settings or {}),
        "warnings": all_warnings,
        "notes": list(notes),
        "figures": [f"figures/{f.name}.png" for f in figs],
    }
    text = json.dumps(_nan_to_none(doc), indent=2, sort_keys=True, default=_json_default)

    def build(tmp: Path) -> ReportFiles:
        fig_dir = tmp / "figures"
        written = []
        for f in figs:
            written.append(save_figure(f.png, fig_dir / f"{f.name}.png"))
            kill_point()
        traj_path = None
        if write_trajectory:
            traj_path = traj.write(tmp / "trajectory.csv")
            kill_point()
        for name, src in (copies or {}).items():
            shutil.copyfile(src, tmp / name)
            kill_point()
        atomic_write(tmp / "fit.json", lambda f: f.write(text + "\n"))
        kill_point()
        html_path = write_html(tmp / "report.html", page)
        kill_point()
        return ReportFiles(
            folder,
            folder / html_path.relative_to(tmp),
            folder / "fit.json",
            None if traj_path is None else folder / "trajectory.csv",
            tuple(folder / p.relative_to(tmp) for p in written),
            tuple(all_warnings),
        )

    return write_folder(folder, build)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")
