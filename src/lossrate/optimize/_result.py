"""What :func:`optimize_schedule` returns: the best schedule of each family, its predicted
final loss with the interval, and its predicted gain over the run's current schedule and
over a standard cosine, with the interval of each gain."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._results import Prediction
from ..schedule import Schedule
from ._check import EarlierCheck
from ._family import Budget

__all__ = ["FamilyOptimum", "Gain", "ScheduleOptimum"]


@dataclass(frozen=True)
class Gain:
    """Predicted relative gain ``1 - L / L_ref`` over the reference schedule ``over`` at the
    final step, with the interval [lower, upper] of that gain (over the fit's members or
    parameter draws; widened to no gain and to the largest drop the interval allows when the
    decay gain is not identified)."""

    over: str
    reference_loss: float
    gain: float
    lower: float
    upper: float

    def text(self) -> str:
        return (
            f"{100 * self.gain:+.2f} % over {self.over} (interval {100 * self.lower:+.2f} % "
            f"to {100 * self.upper:+.2f} %)"
        )


@dataclass(frozen=True, eq=False)
class FamilyOptimum:
    """The best schedule of one family. ``prediction`` is the predicted curve on a coarse
    grid of steps ending at the budget (its last point is the final loss)."""

    family: str
    schedule: Schedule
    settings: Mapping[str, float | int | str]
    prediction: Prediction
    gains: tuple[Gain, ...]
    evaluations: int
    seconds: float

    @property
    def loss(self) -> float:
        return float(self.prediction.loss[-1])

    @property
    def lower(self) -> float:
        return float(self.prediction.lower[-1])

    @property
    def upper(self) -> float:
        return float(self.prediction.upper[-1])

    def gain(self, over: str) -> Gain:
        return next(g for g in self.gains if g.over == over)

    def to_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "settings": dict(self.settings),
            "final_loss": self.loss,
            "lower": self.lower,
            "upper": self.upper,
            "gains": {g.over: _gain_dict(g) for g in self.gains},
            "evaluations": self.evaluations,
            "seconds": self.seconds,
            "lr": self.schedule.lr,
        }


@dataclass(frozen=True, eq=False)
class ScheduleOptimum:
    """The result of :func:`lossrate.optimize_schedule` (module docstring).

    ``identified``: whether the decay gain is identified (the fitted steps or the earlier
    runs saw an lr decay); when it is not, the gains are the laws' guess and their
    intervals run from no gain up. ``references``: the predicted curves of the run's
    current schedule (``"current"``) and of a standard cosine (``"cosine"``).
    """

    budget: Budget
    model: str
    level: float
    identified: bool
    families: Mapping[str, FamilyOptimum]
    references: Mapping[str, tuple[Schedule, Prediction]]
    notes: tuple[str, ...] = ()
    peaks_seen: tuple[float, ...] = field(default=())
    checks: tuple[EarlierCheck, ...] = field(default=())
    kept: EarlierCheck | None = None
    kept_margin: float = 0.0

    @property
    def best(self) -> FamilyOptimum:
        """The family whose best schedule predicts the lowest final loss."""
        return min(self.families.values(), key=lambda f: f.loss)

    @property
    def recommended(self) -> Schedule:
        """The schedule to run: the earlier run's that ``kept`` names (the law misordered
        earlier runs by more than its pick's predicted gain over it; module
        ``lossrate.optimize._check``), else the best family's."""
        if self.kept is not None and self.kept.schedule is not None:
            return Schedule(self.kept.schedule.lr, f"kept-{self.kept.name}")
        return self.best.schedule

    def report(self) -> str:
        pct = f"{100 * self.level:.0f} %"
        b = self.budget
        lines = [
            f"schedule search for {b.n_steps} steps at peak lr {b.peak:.4g} "
            f"(warmup {b.warmup}, lr >= {b.min_lr:.3g}) with {self.model}:",
        ]
        for name, (_s, p) in self.references.items():
            lines.append(
                f"  {name:>8}: final loss {p.loss[-1]:.4g}  {pct} [{p.lower[-1]:.4g}, "
                f"{p.upper[-1]:.4g}]"
            )
        for f in sorted(self.families.values(), key=lambda f: f.loss):
            lines.append(
                f"  best {f.family:>4}: final loss {f.loss:.4g}  {pct} [{f.lower:.4g}, "
                f"{f.upper:.4g}]  ({f.evaluations} schedules, {f.seconds:.1f} s)"
            )
            lines.append("      " + _settings_text(f.settings))
            lines.extend(f"      gain {g.text()}" for g in f.gains)
        best = self.best
        if self.kept is not None:
            lines.append(
                f"recommendation: keep the schedule of the earlier run {self.kept.name} (it "
                f"reached {self.kept.realised:.4g}); the law misorders earlier runs by "
                f"{100 * self.kept_margin:.1f} %, more than its pick's predicted gain over it"
            )
        elif self.identified:
            g = best.gain("current")
            lines.append(
                f"recommendation: {best.family} ({_settings_text(best.settings)}); "
                f"predicted {g.text()}"
                + (
                    "; its interval includes no gain, so the run's current schedule is as good "
                    "as far as the fit can tell"
                    if g.lower <= 0
                    else ""
                )
            )
        else:
            lines.append(
                "no confident recommendation: the decay gain is not identified (neither the "
                "fitted steps nor any earlier run decayed its lr), so what a decay gains is the "
                f"laws' guess; the gain of the best ({best.family}) "
                f"{best.gain('current').text()}. Give earlier runs that decayed (--prior) "
                "to identify it."
            )
        if self.checks:
            lines.append(
                "earlier runs, the fit's prediction for their own schedule vs the smoothed loss "
                "they reached: "
                + "; ".join(
                    f"{c.name} {c.predicted:.4g} vs {c.realised:.4g} ({100 * c.log_error:+.1f} %)"
                    for c in self.checks
                )
            )
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget_steps": self.budget.n_steps,
            "peak_lr": self.budget.peak,
            "warmup": self.budget.warmup,
            "min_lr": self.budget.min_lr,
            "model": self.model,
            "level": self.level,
            "decay_gain_identified": self.identified,
            "best": self.best.family,
            "kept_earlier_run": None if self.kept is None else self.kept.name,
            "ranking_margin": self.kept_margin,
            "families": {k: f.to_dict() for k, f in self.families.items()},
            "references": {
                k: {
                    "final_loss": float(p.loss[-1]),
                    "lower": float(p.lower[-1]),
                    "upper": float(p.upper[-1]),
                }
                for k, (_s, p) in self.references.items()
            },
            "peaks_seen": list(self.peaks_seen),
            "earlier_checks": [
                {
                    "run": c.name,
                    "step": c.step,
                    "predicted": c.predicted,
                    "law": c.law,
                    "realised": c.realised,
                }
                for c in self.checks
            ],
            "notes": list(self.notes),
        }


def _gain_dict(g: Gain) -> dict[str, float]:
    return {"gain": g.gain, "lower": g.lower, "upper": g.upper, "reference_loss": g.reference_loss}


def _settings_text(s: Mapping[str, float | int | str]) -> str:
    parts = []
    for k, v in s.items():
        key = k.replace("_", " ")
        parts.append(f"{key} {v:.4g}" if isinstance(v, float) else f"{key} {v}")
    return ", ".join(parts)


def relative(loss: float, reference: float) -> float:
    """1 - loss / reference (NaN where either is not a positive finite number)."""
    if not (np.isfinite(loss) and np.isfinite(reference) and reference > 0):
        return float("nan")
    return float(1.0 - loss / reference)
