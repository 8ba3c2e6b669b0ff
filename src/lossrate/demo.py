"""``lossrate demo``: train, record, fit 40 %, predict the rest, report.

1. trains the wide one-hidden-layer MLP on 4,000 real MNIST digits with SGD (the shipped
   config ``mnist_mlp_demo``, lr 0.02), recording the per-step trajectory (loss, its spread, the
   residual norm R and the gradient norms);
2. fits ``auto`` (the ODE models and the peer laws, weighed by backtests) on the first
   ``until`` (40 %) of the steps;
3. predicts the rest and compares it with what training actually did, next to the peer
   laws fitted on the same prefix;
4. prints and saves the fitted parameters, predicted vs observed final loss, the loss
   floor, and the time and energy to a target loss, in a run folder::

       runs/demo/  config.toml  trajectory.csv  checkpoint.pt  fit.json
                   figures/{loss,phi,closure_ratio,residuals,peers}.png  report.html

The run is built in a hidden sibling folder and moved into place only when complete, so
an earlier good demo folder is never replaced by a partial one.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._errors import InvalidArgumentError
from .report import ReportFiles, write_report
from .report.analysis import Analysis, analyze, run_closure

__all__ = ["DEMO_CONFIG", "DEMO_PEERS", "DemoResult", "run_demo"]

#: the shipped experiment the demo trains
DEMO_CONFIG = "mnist_mlp_demo"
#: peer laws fitted on the same prefix for the comparison figure (those that are installed)
DEMO_PEERS = ("power_steps", "exponential")
#: the marker files of a folder the demo may replace
_DEMO_FILES = ("report.html", "trajectory.csv", "fit.json")


@dataclass(frozen=True)
class DemoResult:
    """What the demo did and where it put it."""

    run_dir: Path
    config: str
    steps: int
    analysis: Analysis
    files: ReportFiles
    seconds: dict[str, float] = field(default_factory=dict)

    def text(self) -> str:
        """The demo's printout."""
        secs = ", ".join(f"{k} {v:.0f} s" for k, v in self.seconds.items())
        return "\n".join(
            [
                f"lossrate demo: {self.config}, {self.steps} SGD steps ({secs})",
                "",
                self.analysis.text(),
                "",
                f"run folder: {self.run_dir}",
                f"open {self.files.html} in a browser for the figures.",
            ]
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "run_dir": str(self.run_dir),
            "config": self.config,
            "steps": self.steps,
            "seconds": dict(self.seconds),
            **self.analysis.to_dict(),
            "report": str(self.files.html),
            "figures": [str(p) for p in self.files.figures],
        }


def default_target(observed_final: float) -> float:
    """Half the observed final loss, rounded to two significant digits: "how long to halve it"."""
    half = observed_final / 2
    digits = 1 - math.floor(math.log10(half))
    return round(half, digits)


def run_demo(
    out: str | Path = "runs/demo",
    *,
    steps: int | None = None,
    until: float = 0.4,
    target: float | None = None,
    device: str = "auto",
    seed: int | None = None,
    bootstrap: int = 100,
    threads: int | None = 1,
    progress: bool = True,
) -> DemoResult:
    """Train, fit, predict and report (module docstring); returns what was written.

    Args:
        out: the run folder; an earlier demo folder there is replaced once the new one is
            complete; a folder holding anything else is refused.
        steps: training steps (default: the config's).
        until: fraction of the steps to fit on.
        target: target loss for time and energy (default: half the observed final loss).
        device: torch device ("auto", "cpu", "cuda", ...).
        seed: training seed (default: the config's).
        bootstrap: bootstrap refits for the intervals.
        threads: CPU threads for torch during the demo (restored after); None keeps torch's
            setting. One thread is the default: the MLP is small, and with more threads than
            free cores OpenMP spin-waiting made steps 20x slower on a busy 2-core machine.
        progress: show progress bars.

    Raises:
        InvalidArgumentError: ``out`` exists and is not a demo folder, or bad options.
    """
    from .experiments import load_config

    out = Path(out)
    _check_out(out)
    cfg = load_config(DEMO_CONFIG)
    changes: dict[str, Any] = {}
    if steps is not None:
        changes["train.steps"] = int(steps)
    if seed is not None:
        changes["train.seed"] = int(seed)
    if changes:
        cfg = cfg.override(changes)
    work = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    seconds: dict[str, float] = {}
    with torch_threads(threads):
        analysis, files = _run(cfg, work, out, until, target, device, bootstrap, progress, seconds)
    return DemoResult(
        out, DEMO_CONFIG, cfg.train.steps, analysis, _moved(files, work, out), seconds
    )


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op CPU threads set to ``threads`` inside the block (None: unchanged)."""
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _run(
    cfg: Any,
    work: Path,
    out: Path,
    until: float,
    target: float | None,
    device: str,
    bootstrap: int,
    progress: bool,
    seconds: dict[str, float],
) -> tuple[Analysis, ReportFiles]:
    """Train into ``work``, analyse, write the report there, then move ``work`` to ``out``."""
    from .experiments import run_experiment
    from .fit import available_models
    from .report.summary import observed_final

    try:
        t0 = time.perf_counter()
        traj = run_experiment(cfg, work, device=device, progress=progress)
        seconds["training"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        closure = run_closure(traj)
        peers = [p for p in DEMO_PEERS if p in available_models()]
        analysis = analyze(
            traj,
            closure=closure,
            model="auto",
            until=until,
            peers=peers,
            target=target if target is not None else default_target(observed_final(traj)),
            bootstrap=bootstrap,
        )
        seconds["fit"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        settings = {
            "config": DEMO_CONFIG,
            "steps": cfg.train.steps,
            "until": until,
            "model": "auto",
            "peers": ",".join(peers),
            "target": analysis.headline.target,
            "loss": "ce",
            "classes": traj.meta.classes,
            "bootstrap": bootstrap,
        }
        files = write_report(
            work,
            traj,
            analysis.fit,
            analysis.prediction,
            headline=analysis.headline,
            closure=closure,
            peers=analysis.peers,
            warnings=analysis.notes,
            settings=settings,
            write_trajectory=False,
        )
        seconds["report"] = time.perf_counter() - t0
        _replace(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return analysis, files


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise InvalidArgumentError(f"--out {str(out)!r} is a file; name a folder for the demo run.")
    if out.is_dir() and any(out.iterdir()) and not any((out / f).exists() for f in _DEMO_FILES):
        raise InvalidArgumentError(
            f"--out {str(out)!r} holds files that are not a lossrate run; the demo will not replace "
            "them. Choose another folder, e.g. --out runs/demo."
        )


def _replace(work: Path, out: Path) -> None:
    """Move the finished ``work`` folder to ``out``, replacing an earlier demo only now."""
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        out.rename(old)
    try:
        work.rename(out)
    except BaseException:
        if old.exists():
            old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _moved(files: ReportFiles, work: Path, out: Path) -> ReportFiles:
    """The same files, at their places under ``out``."""
    return ReportFiles(
        folder=out,
        html=out / files.html.relative_to(work),
        fit_json=out / files.fit_json.relative_to(work),
        trajectory=out / "trajectory.csv",
        figures=tuple(out / p.relative_to(work) for p in files.figures),
        warnings=files.warnings,
    )
