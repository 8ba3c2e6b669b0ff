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

from .._errors import InvalidArgumentError, LossrateError
from .._model import CurveModel
from .._results import FitResult, Prediction
from ..closures import Closure
from ..schedule import Schedule
from ..trajectory import Trajectory
from .summary import Headline

__all__ = ["Analysis", "analyze", "binned_note", "fit_prefix", "run_closure"]

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
        binned = binned_note(self.traj)
        lines += [f"note: {n}" for n in ([binned] if binned else []) + list(self.notes)]
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
            "binned": binned_note(self.traj),
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
    model: str | CurveModel = "auto",
    until: float = 0.3,
    level: float = 0.9,
    bootstrap: int = 200,
    seed: int = 0,
    prior: Any = None,
    ahead: Schedule | None = None,
    fix: Mapping[str, float] | None = None,
    jobs: int = 1,
) -> FitResult:
    """Fit ``model`` on the first ``until`` of the run's steps, under the whole run's schedule.

    The ODE models choose their closure from the run's metadata (``meta.loss``,
    ``meta.classes``), so set those on the trajectory. With ``prior`` (a
    :class:`lossrate.prior.Prior`) the fit is the MAP fit of :func:`lossrate.fit_with_prior`,
    whose model is the prior's (``model`` is then ignored); with ``model="auto"``, ``prior``
    is instead a mapping of earlier runs' trajectories (their tests join auto's backtests).
    ``ahead``: the schedule a what-if
    prediction will follow (``auto`` backtests at its horizon and weighs the laws with a decay
    gain when it decays). ``fix``: parameters held at a value (not with ``model="auto"``).
    ``jobs``: worker processes for auto's fits (1: none; 0: every core).
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
            "Fit on a larger fraction (until) or log more often.",
            cli=f"the first {until:.0%} of the run holds {part.n} logged steps; a fit needs at "
            "least 8. Fit on a larger fraction (--until, --until-step) or log more often.",
        )
    held: dict[str, Any] = {"fix": dict(fix)} if fix else {}
    if isinstance(model, str) and model == "auto":
        if fix:
            raise InvalidArgumentError(
                f"fix={dict(fix)} holds parameters of one model, but model='auto' weighs several "
                "models; name the model whose parameters to hold (e.g. model='ode_relax').",
                cli="--fix holds parameters of one model, but --model auto weighs several "
                "models; name the model whose parameters to hold, e.g. --model ode_relax.",
            )
        extra: dict[str, Any] = {} if ahead is None else {"ahead": ahead}
        if prior is not None:  # auto takes the earlier runs themselves
            extra["earlier"] = prior
        return fit(
            part, "auto", schedule=_schedule_of(traj), level=level, seed=seed, jobs=jobs, **extra
        )
    if prior is not None:
        from ..prior import fit_with_prior

        return fit_with_prior(
            part,
            prior,
            schedule=_schedule_of(traj),
            level=level,
            bootstrap=bootstrap,
            seed=seed,
            **held,
        )
    return fit(
        part,
        model,
        schedule=_schedule_of(traj),
        level=level,
        bootstrap=bootstrap,
        seed=seed,
        **held,
    )


def binned_note(traj: Trajectory) -> str | None:
    """The note of a log the reader binned by step (``meta.extra['thinned']``), else None."""
    thinned = traj.meta.extra.get("thinned")
    return f"fitted on a binned log: {thinned}" if thinned else None


def analyze(
    traj: Trajectory,
    *,
    closure: Closure | None = None,
    model: str | CurveModel = "auto",
    until: float = 0.3,
    peers: Sequence[str] = (),
    target: float | None = None,
    joules_per_step: float | None = None,
    level: float = 0.9,
    bootstrap: int = 200,
    seed: int = 0,
    on_stage: Callable[[str], None] | None = None,
    prior: Any = None,
    fix: Mapping[str, float] | None = None,
    jobs: int = 1,
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
        fix: parameters of the main model held at a value (:func:`fit_prefix`).
        jobs: worker processes for auto's fits (1: none; 0: every core).

    With ``model="auto"`` the peers are its members (each candidate's fit on the prefix),
    so nothing is fitted twice; a peer it does not hold is fitted as usual.
    """
    from ..auto import AutoFit
    from ..fit import get_model, predict

    for name in (model, *peers):
        if not (isinstance(name, str) and name == "auto"):
            get_model(name)  # an unknown name fails now, not after the first fit
    done = on_stage or (lambda _name: None)
    f = fit_prefix(
        traj,
        model=model,
        until=until,
        level=level,
        bootstrap=bootstrap,
        seed=seed,
        prior=prior,
        fix=fix,
        jobs=jobs,
    )
    done("fit")
    if prior is not None and not isinstance(f, AutoFit):
        from ..prior import predict_with_prior

        pred = predict_with_prior(f, traj.step, warn=False)  # type: ignore[arg-type]
    else:
        pred = predict(f, traj.step)
    done("predict")
    peer_preds: dict[str, Prediction] = {}
    peer_fits: dict[str, FitResult] = {}
    members = dict(f.members) if isinstance(f, AutoFit) else {}
    for name in [*members, *(p for p in peers if p not in members)]:
        if name == model and prior is None:
            continue
        if name in members:
            pf: FitResult = members[name]
        else:
            pf = fit_prefix(traj, model=name, until=until, level=level, bootstrap=0, seed=seed)
        peer_fits[name] = pf
        peer_preds[name] = predict(pf, traj.step)
        if name in peers:
            done(f"peer {name}")
    cut = _cut(f)
    numbers, notes = _target_numbers(f, traj, target, joules_per_step)
    headline = Headline.from_prediction(traj, pred, cut_step=cut, **numbers)
    return Analysis(traj, f, pred, headline, closure, until, peer_preds, peer_fits, tuple(notes))


def _cut(f: FitResult) -> int | None:
    for _first, last in f.train_steps.values():
        return int(last)
    return None


def model_floor(f: FitResult) -> float | None:
    """The loss floor a fit implies: ``auto``'s floor (its members' floors, pooled as its
    prediction is), an ODE model's budget floor (:func:`lossrate.floor` of its rate), else its
    ``L_inf``, or a peer law's asymptote ``L0``; None when the model has none."""
    from ..auto import AutoFit
    from ..auto._members import member_floor

    if isinstance(f, AutoFit):
        return float(f.floor)
    theta = getattr(f, "theta", None)
    if not callable(theta) or not getattr(f, "runs", ()):
        return None
    try:
        return member_floor(f)  # type: ignore[arg-type]
    except LossrateError:
        return None


def _floor_range(f: FitResult, lowest: float) -> tuple[float, float] | None:
    """For ``auto``: the lowest and highest floor of the members that carry weight (of every
    fitted member when only one carries it), each capped at ``lowest`` (the lowest smoothed
    loss of the log); None for a single model or when fewer than two members name a floor."""
    from ..auto import AutoFit
    from ..auto._members import member_floor

    if not isinstance(f, AutoFit):
        return None
    names = list(f.weights) if len(f.weights) > 1 else list(f.members)
    floors = []
    for m in names:
        try:
            v = member_floor(f.members[m])
        except LossrateError:
            continue
        if v is not None and np.isfinite(v):
            floors.append(min(max(float(v), 0.0), lowest))
    if len(floors) < 2:
        return None
    return (min(floors), max(floors))


def _target_numbers(
    f: FitResult,
    traj: Trajectory,
    target: float | None,
    joules_per_step: float | None,
) -> tuple[dict[str, Any], list[str]]:
    """Floor, and time / steps / energy to ``target``: from the log where it already tells.

    * The floor is the model's (:func:`model_floor`), but never above the lowest smoothed
      loss the log reached (:func:`lossrate.metrics.smoothed`): a model whose floor lies
      above it does not describe the later run, which the notes say plainly.
    * A target the smoothed log already reached is read from the log: the first step where
      the smoothed loss is at or below it, the lr sum to there and the energy logged to
      there. When it reached it after the fitted steps (a prediction checked against the
      rest of the log), the fit's own crossing is given beside it.
    * Otherwise the fitted curve is followed past the log (its schedule continued at the
      last lr, up to 10 million steps) to the first step where it reaches the target; a
      target at or below the floor is never reached.

    Steps and intrinsic time count from the run's first logged step. Energy per step: the
    run's ``energy_j`` column (its meter in ``meta.energy_source``), else
    ``joules_per_step`` (an estimate).
    """
    from ..metrics import smoothed

    out: dict[str, Any] = {"target": target}
    notes: list[str] = []
    obs = smoothed(traj.loss) if np.all(traj.loss > 0) else traj.loss
    i_low = int(np.argmin(obs))
    lowest = float(obs[i_low])
    floor = model_floor(f)
    if floor is None:
        notes.append(f"no floor: model {f.model.describe()!r} has no asymptote.")
    elif floor > lowest:
        out["floor"] = lowest
        out["floor_model"] = floor
        notes.append(
            f"the model's floor {floor:.4g} lies above losses the log already reached (smoothed "
            f"{lowest:.4g} at step {int(traj.step[i_low])}): the fitted law does not describe the "
            f"later run, so the floor is reported as at most {lowest:.4g}."
        )
    else:
        out["floor"] = floor
    spread = _floor_range(f, lowest)
    if spread is not None:
        out["floor_range"] = spread
    if target is None:
        return out, notes
    first = int(traj.step[0])
    sched = _schedule_of(traj)
    reached = np.flatnonzero(obs <= target)
    energy, source = _energy_per_step(traj, joules_per_step, notes)
    if reached.size:
        s_hit = int(traj.step[reached[0]])
        out["target_source"] = "log"
        out["steps_to_target"] = float(s_hit - first)
        out["time_to_target"] = (
            float(sched.S(s_hit) - sched.S(first)) if sched is not None else None
        )
        notes.append(
            f"the log already reached the target {target:.4g} (smoothed loss) at step {s_hit}: "
            "steps, time and energy to it are read from the log."
        )
        fitted = _fitted(f)
        if fitted is not None and s_hit > int(fitted[2].traj.step[-1]):
            s_pred = _crossing(f, target, first)
            out["predicted_steps_to_target"] = s_pred - first if math.isfinite(s_pred) else math.inf
    elif out.get("floor") is not None and target <= out["floor"]:
        out["target_source"] = "model"
        out["steps_to_target"] = math.inf
        out["time_to_target"] = math.inf
        return out, notes
    else:
        out["target_source"] = "model"
        s_hit_f = _crossing(f, target, first)
        out["steps_to_target"] = s_hit_f - first if math.isfinite(s_hit_f) else math.inf
        if not math.isfinite(s_hit_f):
            notes.append(
                f"the prediction does not reach {target:.4g} within {_MAX_PLAN_STEPS:,} steps "
                "(schedule continued at its last lr)."
            )
            out["time_to_target"] = math.inf
        elif sched is not None:
            ext = sched.extend(max(int(s_hit_f), sched.n_steps))
            out["time_to_target"] = float(ext.S(int(s_hit_f)) - ext.S(first))
    steps = out.get("steps_to_target")
    if energy is not None and steps is not None and math.isfinite(steps):
        out["energy_to_target_j"] = _energy_to(traj, energy, first, int(steps))
        out["energy_source"] = source
        out["energy_is_estimate"] = "estimate" in source or "given" in source
    return out, notes


def _energy_per_step(
    traj: Trajectory, joules_per_step: float | None, notes: list[str]
) -> tuple[Any, str]:
    if traj.has("energy_j"):
        return traj, traj.meta.energy_source or "unknown meter"
    if joules_per_step is not None:
        return float(joules_per_step), f"{joules_per_step:g} J per step (given)"
    notes.append("energy to target not computed: the run logs no energy_j; pass --joules-per-step.")
    return None, ""


def _energy_to(traj: Trajectory, energy: Any, first: int, steps: int) -> float:
    """Joules of the ``steps`` steps after ``first``: the logged per-step energy where the log
    holds every one of them, else its mean per logged step times the steps."""
    if not isinstance(energy, Trajectory):
        return float(energy) * steps
    col = np.asarray(energy.energy_j, dtype=float)
    ok = np.isfinite(col)
    inside = (traj.step >= first) & (traj.step < first + steps)
    if ok[inside].all() and inside.sum() == steps:
        return float(col[inside].sum())
    return float(np.mean(col[ok])) * steps


def _fitted(f: FitResult) -> tuple[Any, dict[str, float], Any] | None:
    """The model, parameters and (first) run of a fit (None when it carries no run)."""
    from ..auto import AutoFit

    if isinstance(f, AutoFit) and f.run is not None:
        return f.model, {}, f.run
    runs = getattr(f, "runs", ())
    return (f.model, f.theta(), runs[0]) if runs else None  # type: ignore[attr-defined]


def _crossing(f: FitResult, target: float, first: int) -> float:
    """The first step at which the fitted curve reaches ``target`` (the schedule continued at
    its last lr; inf beyond the planning cap)."""
    fitted = _fitted(f)
    if fitted is None:
        return math.inf
    model, theta, run = fitted
    start = int(run.traj.step[-1])
    cap = int(min(_MAX_PLAN_STEPS, max(1000 * max(start, 1), run.schedule.n_steps)))
    ext = run.with_schedule(run.schedule.extend(max(cap, run.schedule.n_steps)))
    grid = np.unique(np.geomspace(max(start, 1), cap, 400).astype(np.int64))

    def at(steps: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            return np.asarray(model.curve(theta, ext, steps), dtype=float)

    vals = at(grid)
    hit = np.flatnonzero(np.isfinite(vals) & (vals <= target))
    if not hit.size:
        return math.inf
    j = int(hit[0])
    if j == 0:
        return float(grid[0])
    lo, hi = int(grid[j - 1]), int(grid[j])
    while hi - lo > 1:  # the curve falls: bisect on whole steps
        mid = (lo + hi) // 2
        if at(np.array([mid]))[0] <= target:
            hi = mid
        else:
            lo = mid
    return float(hi)
