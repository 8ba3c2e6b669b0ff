"""The fit-on-a-prefix pipeline shared by ``lossrate fit``, ``lossrate report`` and the demo.

Given a run, :func:`analyze` fits a curve model on the first ``until`` fraction of its
steps (under the run's whole learning-rate schedule, which is known in advance), predicts
every logged step, fits the peer models on the same prefix, and computes the headline
numbers: observed vs predicted final loss, the loss floor, and time and energy to a target.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._errors import InvalidArgumentError
from .._model import CurveModel
from .._results import FitResult, Prediction
from ..closures import Closure
from ..schedule import Schedule
from ..trajectory import Trajectory
from .summary import Headline

__all__ = ["Analysis", "analyze", "fit_prefix", "run_closure"]

#: steps beyond which the energy to a target is not planned (the schedule would not fit in memory)
_MAX_PLAN_STEPS = 10_000_000


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
    notes: tuple[str, ...] = ()

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
        lines += [f"note: {n}" for n in self.notes]
        lines += [f"warning: {w}" for w in self.prediction.warnings]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (the fit, the headline numbers, the peers' final predictions)."""
        return {
            "fit": self.fit.to_dict(),
            "headline": self.headline.to_dict(),
            "until": self.until,
            "warnings": list(self.prediction.warnings),
            "notes": list(self.notes),
            "peers": {
                k: {
                    "predicted_final": float(p.loss[-1]),
                    "success": self.peer_fits[k].success,
                    "params": dict(self.peer_fits[k].params),
                }
                for k, p in self.peers.items()
            },
        }


def run_closure(traj: Trajectory, name: str | None = None, **params: Any) -> Closure:
    """The closure g(L) of the run's loss, for its rate and closure-ratio figures and floor.

    ``name`` defaults to ``meta.loss`` (else "ce"); ``classes`` to ``meta.classes`` where the
    closure takes it. For CE without an ``alpha``, the run's measured median ``alpha_eff`` is
    used, clipped into [C/(C-1), 2] (the choice the ODE model makes), else the default 1.5.
    """
    import dataclasses

    from ..closures import get_closure

    name = name or traj.meta.loss or "ce"
    default = get_closure(name)  # an unknown name fails here, listing the known ones
    fields: set[str] = set()
    if dataclasses.is_dataclass(default):
        fields = {f.name for f in dataclasses.fields(default)}
    if "classes" in fields and "classes" not in params and traj.meta.classes is not None:
        params["classes"] = int(traj.meta.classes)
    if "alpha" in fields and "alpha" not in params and name == "ce" and traj.has("alpha_eff"):
        C = int(params.get("classes", getattr(default, "classes", 10)))
        params["alpha"] = float(np.clip(np.nanmedian(np.asarray(traj.alpha_eff)), C / (C - 1), 2.0))
    return get_closure(name, **params) if params else default


def _schedule_of(traj: Trajectory) -> Schedule | None:
    return None if traj.lr is None else Schedule.from_logged(traj.step, traj.lr)


def fit_prefix(
    traj: Trajectory,
    *,
    model: str | CurveModel = "ode",
    until: float = 0.3,
    level: float = 0.9,
    bootstrap: int = 200,
    seed: int = 0,
    prior: Any = None,
) -> FitResult:
    """Fit ``model`` on the first ``until`` of the run's steps, under the whole run's schedule.

    The ODE models choose their closure from the run's metadata (``meta.loss``,
    ``meta.classes``), so set those on the trajectory. With ``prior`` (a
    :class:`lossrate.prior.Prior`) the fit is the MAP fit of :func:`lossrate.fit_with_prior`,
    whose model is the prior's (``model`` is then ignored).
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
    if prior is not None:
        from ..prior import fit_with_prior

        return fit_with_prior(
            part, prior, schedule=_schedule_of(traj), level=level, bootstrap=bootstrap, seed=seed
        )
    return fit(
        part, model, schedule=_schedule_of(traj), level=level, bootstrap=bootstrap, seed=seed
    )


def analyze(
    traj: Trajectory,
    *,
    closure: Closure | None = None,
    model: str | CurveModel = "ode",
    until: float = 0.3,
    peers: Sequence[str] = (),
    target: float | None = None,
    joules_per_step: float | None = None,
    level: float = 0.9,
    bootstrap: int = 200,
    seed: int = 0,
    on_stage: Callable[[str], None] | None = None,
    prior: Any = None,
) -> Analysis:
    """Fit on a prefix, predict the run, fit the peers, and compute the headline numbers.

    Args:
        traj: the run.
        closure: the closure g(L) of the rate figures and the floor (None: from metadata).
        model: the main curve model (a registered name or an instance).
        until: fraction of the steps to fit on (1: the whole run).
        peers: further models fitted on the same prefix, for comparison.
        target: target loss of the time and energy estimates.
        joules_per_step: energy of a step when the run has no ``energy_j`` column.
        level, bootstrap, seed: as in :func:`lossrate.fit`.
        on_stage: called with a stage name after each stage (progress bars).
        prior: a :class:`lossrate.prior.Prior` from earlier runs: the main fit is then the
            MAP fit of :func:`lossrate.fit_with_prior` with the prior's model; the peers are
            fitted on the prefix alone.
    """
    from ..fit import get_model, predict

    for name in (model, *peers):
        get_model(name)  # an unknown name fails now, not after the first fit
    done = on_stage or (lambda _name: None)
    f = fit_prefix(
        traj, model=model, until=until, level=level, bootstrap=bootstrap, seed=seed, prior=prior
    )
    done("fit")
    if prior is not None:
        from ..prior import predict_with_prior

        pred = predict_with_prior(f, traj.step, warn=False)  # type: ignore[arg-type]
    else:
        pred = predict(f, traj.step)
    done("predict")
    peer_preds: dict[str, Prediction] = {}
    peer_fits: dict[str, FitResult] = {}
    for name in peers:
        if name == model and prior is None:
            continue
        pf = fit_prefix(traj, model=name, until=until, level=level, bootstrap=0, seed=seed)
        peer_fits[name] = pf
        peer_preds[name] = predict(pf, traj.step)
        done(f"peer {name}")
    cut = _cut(f)
    numbers, notes = _target_numbers(f, traj, target, joules_per_step)
    headline = Headline.from_prediction(traj, pred, cut_step=cut, **numbers)
    return Analysis(traj, f, pred, headline, closure, until, peer_preds, peer_fits, tuple(notes))


def _cut(f: FitResult) -> int | None:
    for _first, last in f.train_steps.values():
        return int(last)
    return None


def _target_numbers(
    f: FitResult,
    traj: Trajectory,
    target: float | None,
    joules_per_step: float | None,
) -> tuple[dict[str, Any], list[str]]:
    """Floor, and time / steps / energy to ``target``, from :mod:`lossrate.bounds`.

    Needs the fitted model's ODE components: ``model.components(theta, run)`` returns
    (closure, rate, L0) with the rate in intrinsic time counted from the run's first logged
    step and L0 the loss there. Steps count from that step, under the run's schedule
    continued at its last learning rate. Energy per step: the run's ``energy_j`` column
    (its meter in ``meta.energy_source``), else ``joules_per_step`` (an estimate).
    Returns the numbers and notes on what could not be computed.
    """
    from .. import bounds

    out: dict[str, Any] = {"target": target}
    components = getattr(f.model, "components", None)
    runs = getattr(f, "runs", ())
    if components is None or not runs:
        return out, [
            f"floor, time and energy to target not computed: model {f.model.describe()!r} does "
            "not expose its ODE components (closure, rate, L0)."
        ]
    run = runs[0]
    closure, rate, L0 = components(f.theta(), run)  # type: ignore[attr-defined]
    out["floor"] = float(bounds.floor(closure, rate, L0))
    if target is None:
        return out, []
    T = float(bounds.time_to_target(closure, rate, L0, target))
    out["time_to_target"] = T
    first = int(run.traj.step[0])
    sched = Schedule(run.schedule.lr[first:], run.schedule.name)
    out["steps_to_target"] = _steps_at(T, sched)
    notes: list[str] = []
    energy: Any = None
    if traj.has("energy_j"):
        energy = traj
        out["energy_source"] = traj.meta.energy_source or "unknown meter"
        out["energy_is_estimate"] = "estimate" in out["energy_source"]
    elif joules_per_step is not None:
        energy = float(joules_per_step)
        out["energy_source"] = f"{joules_per_step:g} J per step (given)"
        out["energy_is_estimate"] = True
    else:
        notes.append(
            "energy to target not computed: the run logs no energy_j; pass --joules-per-step."
        )
    steps = out["steps_to_target"]
    if energy is None or not math.isfinite(steps):
        pass  # no meter, or never reached: the headline says so
    elif steps > _MAX_PLAN_STEPS:
        notes.append(
            f"energy to target not computed: it takes more than {_MAX_PLAN_STEPS:,} steps."
        )
    else:
        est = bounds.energy_to_target(
            closure,
            rate,
            L0,
            target,
            sched.extend(max(int(steps), sched.n_steps)),
            energy_per_step=energy,
        )
        out["energy_to_target_j"] = float(est.energy_j)
        notes.extend(est.notes)
    return out, notes


def _steps_at(T: float, sched: Schedule) -> float:
    """Steps N with S(N) >= T under ``sched`` continued at its last learning rate (inf: never)."""
    if not math.isfinite(T):
        return math.inf
    end = float(sched.cumulative[-1])
    if T <= end:
        return float(np.searchsorted(sched.cumulative, T * (1 - 1e-12), side="left"))
    last = float(sched.lr[-1])
    if last <= 0:
        return math.inf
    return float(sched.n_steps + math.ceil((T - end) / last - 1e-9))
