"""The headline numbers of a report: one frozen :class:`Headline` per fitted run.

``observed_final`` is the observed loss at the last logged step smoothed as every score is
(:func:`lossrate.metrics.smoothed`: Savitzky–Golay of order 1 on ln L over 5 % of the
rows, 5-51), because a single batch loss is noisy and a trailing mean lags a falling curve;
``predicted_final`` is the model at the last logged step with its interval at the
prediction's level.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._results import Prediction
from ..metrics import smooth_window, smoothed
from ..trajectory import Trajectory

__all__ = ["Headline", "observed_final", "observed_window", "predicted_at"]


def observed_window(n: int) -> int:
    """Rows in the smoothing window of the observed final loss (:func:`smooth_window`)."""
    return smooth_window(n)


def observed_final(traj: Trajectory) -> float:
    """The observed loss at the last logged step, smoothed (module docstring)."""
    if not np.all(traj.loss > 0):
        return float(traj.loss[-1])
    return float(smoothed(traj.loss)[-1])


def predicted_at(prediction: Prediction, step: float) -> tuple[float, float, float]:
    """(loss, lower, upper) of the prediction at ``step`` (linear interpolation)."""
    xs = prediction.step
    return (
        float(np.interp(step, xs, prediction.loss)),
        float(np.interp(step, xs, prediction.lower)),
        float(np.interp(step, xs, prediction.upper)),
    )


#: the weighted laws' floors further apart than this factor: the floor is not identified
_FLOOR_DECADE = 10.0


@dataclass(frozen=True)
class Headline:
    """What a reader wants first. None means "not computed"; inf means "never reached".

    Attributes:
        final_step: last logged step of the run.
        observed_final: the observed loss at ``final_step``, smoothed over ``observed_rows``.
        observed_rows: rows in the smoothing window of ``observed_final``.
        predicted_final: model loss at ``final_step``.
        predicted_lower, predicted_upper: its interval at ``level``.
        level: interval level (e.g. 0.9).
        cut_step: last step the model was fitted on (None: the whole run).
        floor: predicted loss floor, never above the lowest smoothed loss the log reached.
        floor_model: the model's own floor when it lay above that (the model does not
            describe the later run), else None.
        floor_range: for ``auto``, the lowest and highest floor of the laws that carry weight
            (each capped at the lowest smoothed loss); more than a decade apart, the log does
            not identify the floor and the text says so. None for a single model.
        target: target loss of the time/energy estimates.
        target_source: "log" (the log already reached the target) or "model".
        time_to_target: intrinsic time (sum of learning rates) to reach ``target``.
        steps_to_target: optimizer steps to reach ``target`` under the run's schedule.
        predicted_steps_to_target: when the log reached ``target`` after the fitted steps,
            the steps the fit predicted (inf: not within the planning cap), to compare with
            ``steps_to_target`` read from the log; else None.
        energy_to_target_j: energy to reach ``target``, joules.
        energy_source: where the per-step energy came from ("rapl", "nvml", "estimate", ...).
        energy_is_estimate: True unless the energy was measured by a meter.
    """

    final_step: int
    observed_final: float
    observed_rows: int
    predicted_final: float
    predicted_lower: float
    predicted_upper: float
    level: float
    cut_step: int | None = None
    floor: float | None = None
    floor_model: float | None = None
    floor_range: tuple[float, float] | None = None
    target: float | None = None
    target_source: str | None = None
    time_to_target: float | None = None
    steps_to_target: float | None = None
    predicted_steps_to_target: float | None = None
    energy_to_target_j: float | None = None
    energy_source: str | None = None
    energy_is_estimate: bool = True

    @classmethod
    def from_prediction(
        cls,
        traj: Trajectory,
        prediction: Prediction,
        *,
        cut_step: int | None = None,
        **numbers: Any,
    ) -> Headline:
        """Observed and predicted final loss from a run and its prediction, plus ``numbers``
        (floor, target, time/steps/energy to target, energy source)."""
        last = int(traj.step[-1])
        pred, lo, hi = predicted_at(prediction, last)
        return cls(
            final_step=last,
            observed_final=observed_final(traj),
            observed_rows=observed_window(traj.n),
            predicted_final=pred,
            predicted_lower=lo,
            predicted_upper=hi,
            level=float(prediction.level),
            cut_step=cut_step,
            **numbers,
        )

    @property
    def relative_error(self) -> float:
        """(predicted - observed) / observed at the final step."""
        return (self.predicted_final - self.observed_final) / self.observed_final

    @property
    def log_error(self) -> float:
        """ln(predicted / observed) at the final step (nan when either is not positive)."""
        if self.predicted_final <= 0 or self.observed_final <= 0:
            return float("nan")
        return float(np.log(self.predicted_final / self.observed_final))

    @property
    def floor_unidentified(self) -> bool:
        """The weighted laws' floors lie more than a decade apart (see ``floor_range``)."""
        if self.floor_range is None:
            return False
        lo, hi = self.floor_range
        return bool(hi > _FLOOR_DECADE * max(lo, 0.0))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict, with ``relative_error``, ``log_error`` and ``floor_unidentified``."""
        return {
            **dataclasses.asdict(self),
            "relative_error": self.relative_error,
            "log_error": self.log_error,
            "floor_unidentified": self.floor_unidentified,
        }

    def report(self) -> str:
        """A few plain-text lines for the terminal."""
        pct = f"{100 * self.level:.0f}%"
        lines = [
            f"final loss at step {self.final_step}: predicted {self.predicted_final:.4g} "
            f"({pct} interval [{self.predicted_lower:.4g}, {self.predicted_upper:.4g}]), "
            f"observed {self.observed_final:.4g} (smoothed over the last {self.observed_rows} "
            f"rows); error {100 * self.relative_error:+.2f} % "
            f"(log ratio {self.log_error:+.4f})",
        ]
        if self.floor is not None and self.floor_model is not None:
            lines.append(
                f"loss floor: at most {self.floor:.4g} (the log went there; the model's own "
                f"floor {self.floor_model:.4g} lies above it: it does not fit the later run)"
            )
        elif self.floor is not None and self.floor_unidentified:
            lo, hi = self.floor_range  # type: ignore[misc]
            lines.append(
                f"loss floor: not identified by this log: the fitted laws put it between "
                f"{lo:.3g} and {hi:.3g} (pooled as the prediction is: {self.floor:.4g})"
            )
        elif self.floor is not None:
            lines.append(f"loss floor: {self.floor:.4g}")
        if self.target is not None:
            lines.append(f"target loss {self.target:.4g}: {_target_text(self)}")
        return "\n".join(lines)


def _target_text(h: Headline) -> str:
    if h.time_to_target is None and h.steps_to_target is None:
        return "not computed"
    if h.time_to_target is not None and not np.isfinite(h.time_to_target):
        return "never reached (the target is at or below the floor)"
    parts = ["read from the log"] if h.target_source == "log" else []
    if h.time_to_target is not None:
        parts.append(f"intrinsic time {h.time_to_target:.4g}")
    if h.steps_to_target is not None:
        parts.append(
            f"{h.steps_to_target:,.0f} steps"
            if np.isfinite(h.steps_to_target)
            else "not within the schedule"
        )
    if h.predicted_steps_to_target is not None:
        p = h.predicted_steps_to_target
        parts.append(
            f"predicted from the fitted steps: {p:,.0f} steps"
            if np.isfinite(p)
            else "predicted from the fitted steps: not reached"
        )
    if h.energy_to_target_j is not None and np.isfinite(h.energy_to_target_j):
        kind = "estimate" if h.energy_is_estimate else "measured rate"
        parts.append(
            f"energy {format_energy(h.energy_to_target_j)} ({kind}, source: {h.energy_source or '?'})"
        )
    return ", ".join(parts)


def format_energy(joules: float) -> str:
    """Joules with an SI prefix, and kWh beyond 3.6 kJ."""
    if not np.isfinite(joules):
        return "∞"
    for scale, unit in ((1e9, "GJ"), (1e6, "MJ"), (1e3, "kJ")):
        if abs(joules) >= scale:
            text = f"{joules / scale:.3g} {unit}"
            break
    else:
        text = f"{joules:.3g} J"
    if abs(joules) >= 3600:
        text += f" ({joules / 3.6e6:.3g} kWh)"
    return text
