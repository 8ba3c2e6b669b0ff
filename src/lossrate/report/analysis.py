"""The fit-on-a-prefix pipeline shared by ``lossrate fit``, ``lossrate report`` and the demo.

Given a run, :func:`analyze` fits a curve model on the first ``until`` fraction of its
steps (under the run's whole learning-rate schedule, which is known in advance), predicts
every logged step, fits the peer models on the same prefix, and computes the headline
numbers: observed vs predicted final loss, the loss floor, and time and energy to a target.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._errors import InvalidArgumentError
from .._results import FitResult, Prediction
from ..closures import Closure
from ..schedule import Schedule
from ..trajectory import Trajectory
from .summary import Headline

__all__ = ["Analysis", "analyze", "fit_prefix"]


@dataclass(frozen=True, eq=False)
class Analysis:
    """Everything a report shows about one run."""

    traj: Trajectory
    fit: FitResult
    prediction: Prediction
    headline: Headline
    closure: Closure | None
    until: float
    peers: Mapping[str, Prediction] = field(default_factory=dict)
    peer_fits: Mapping[str, FitResult] = field(default_factory=dict)

    def text(self) -> str:
        """Plain-text summary for the terminal."""
        h = self.headline
        span = (
            f"steps {int(self.traj.step[0])}..{h.cut_step}"
            if h.cut_step is not None
            else "all steps"
        )
        lines = [
            f"fitted on {span} ({self.until:.0%} of the run), predicted to step {h.final_step}",
            "",
            self.fit.report(),
            "",
            h.report(),
        ]
        if self.peers:
            lines.append("")
            lines.append("peers fitted on the same prefix (final-loss error):")
            for name, p in self.peers.items():
                err = 100 * (float(p.loss[-1]) - h.observed_final) / h.observed_final
                ok = "" if self.peer_fits[name].success else "  (fit did not converge)"
                lines.append(f"  {name:<16} predicted {float(p.loss[-1]):.4g}  {err:+.2f} %{ok}")
        lines += [f"warning: {w}" for w in self.prediction.warnings]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (the fit, the headline numbers, the peers' final predictions)."""
        return {
            "fit": self.fit.to_dict(),
            "headline": self.headline.to_dict(),
            "until": self.until,
            "warnings": list(self.prediction.warnings),
            "peers": {
                k: {
                    "predicted_final": float(p.loss[-1]),
                    "success": self.peer_fits[k].success,
                    "params": dict(self.peer_fits[k].params),
                }
                for k, p in self.peers.items()
            },
        }


def _schedule_of(traj: Trajectory) -> Schedule | None:
    return None if traj.lr is None else Schedule.from_logged(traj.step, traj.lr)


def fit_prefix(
    traj: Trajectory,
    *,
    model: str = "ode",
    until: float = 0.3,
    level: float = 0.9,
    bootstrap: int = 200,
    seed: int = 0,
) -> FitResult:
    """Fit ``model`` on the first ``until`` of the run's steps, under the whole run's schedule.

    The ODE models choose their closure from the run's metadata (``meta.loss``,
    ``meta.classes``), so set those on the trajectory.
    """
    from ..fit import fit

    if not 0 < until <= 1:
        raise InvalidArgumentError(
            f"until must lie in (0, 1], got {until!r}; e.g. 0.3 for the first 30 %."
        )
    part = traj.prefix(until) if until < 1 else traj
    if part.n < 8:
        raise InvalidArgumentError(
            f"the first {until:.0%} of the run holds {part.n} logged steps; a fit needs at least 8. "
            "Fit on a larger fraction (--until) or log more often."
        )
    return fit(
        part, model, schedule=_schedule_of(traj), level=level, bootstrap=bootstrap, seed=seed
    )


def analyze(
    traj: Trajectory,
    *,
    closure: Closure | None = None,
    model: str = "ode",
    until: float = 0.3,
    peers: Sequence[str] = (),
    target: float | None = None,
    joules_per_step: float | None = None,
    level: float = 0.9,
    bootstrap: int = 200,
    seed: int = 0,
    on_stage: Callable[[str], None] | None = None,
) -> Analysis:
    """Fit on a prefix, predict the run, fit the peers, and compute the headline numbers.

    Args:
        traj: the run.
        closure: the closure g(L) of the rate figures and the floor (None: from metadata).
        model: the main curve model (a registered name).
        until: fraction of the steps to fit on (1: the whole run).
        peers: further models fitted on the same prefix, for comparison.
        target: target loss of the time and energy estimates.
        joules_per_step: energy of a step when the run has no ``energy_j`` column.
        level, bootstrap, seed: as in :func:`lossrate.fit`.
        on_stage: called with a stage name after each stage (progress bars).
    """
    from ..fit import get_model, predict

    for name in (model, *peers):
        get_model(name)  # an unknown name fails now, not after the first fit
    done = on_stage or (lambda _name: None)
    f = fit_prefix(traj, model=model, until=until, level=level, bootstrap=bootstrap, seed=seed)
    done("fit")
    pred = predict(f, traj.step)
    done("predict")
    peer_preds: dict[str, Prediction] = {}
    peer_fits: dict[str, FitResult] = {}
    for name in peers:
        if name == model:
            continue
        pf = fit_prefix(traj, model=name, until=until, level=level, bootstrap=0, seed=seed)
        peer_fits[name] = pf
        peer_preds[name] = predict(pf, traj.step)
        done(f"peer {name}")
    cut = _cut(f)
    numbers = _target_numbers(f, traj, closure, target, joules_per_step)
    headline = Headline.from_prediction(traj, pred, cut_step=cut, **numbers)
    return Analysis(traj, f, pred, headline, closure, until, peer_preds, peer_fits)


def _cut(f: FitResult) -> int | None:
    for _first, last in f.train_steps.values():
        return int(last)
    return None


def _target_numbers(
    f: FitResult,
    traj: Trajectory,
    closure: Closure | None,
    target: float | None,
    joules_per_step: float | None,
) -> dict[str, Any]:
    """Floor, and time / steps / energy to ``target`` (filled in by :mod:`lossrate.bounds`)."""
    return {"target": target}
