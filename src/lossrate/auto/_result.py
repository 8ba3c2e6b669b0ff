"""What ``auto`` returns: the pooled curve model and the fit result that explains it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from .._model import CurveModel, Param, RunData
from .._results import FitResult
from ..fitting.engine import Fit
from ._backtest import Backtest
from ._calibrate import Calibration
from ._combine import Combination

__all__ = ["AutoFit", "AutoModel"]


@dataclass(frozen=True, eq=False)
class AutoModel(CurveModel):
    """The weighted mean of member curves in ln L: ln L = sum_m w_m ln L_m(s; theta_m).

    Not fitted itself (it has no parameters): :func:`fit_auto` builds it.
    """

    name: ClassVar[str] = "auto"
    members: tuple[tuple[str, float, CurveModel, Mapping[str, float]], ...] = ()
    #: per member, the step from which its curve follows the fitted steps (see
    #: :func:`~lossrate.auto._members.joins`); before it the member carries no weight
    starts: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        weights: Mapping[str, float],
        members: Mapping[str, Fit],
        starts: Mapping[str, int] | None = None,
    ) -> AutoModel:
        """The pooled model of the fitted ``members`` at ``weights``, heaviest first."""
        return cls(
            tuple(
                (m, w, members[m].model, members[m].theta())
                for m, w in sorted(weights.items(), key=lambda kv: -kv[1])
            ),
            dict(starts or {}),
        )

    def params(self, run: RunData) -> Sequence[Param]:
        return ()

    def guesses(self, run: RunData) -> Sequence[Mapping[str, float]]:
        return ({},)

    def curve(self, theta: Mapping[str, float], run: RunData, steps: np.ndarray) -> np.ndarray:
        """The weighted mean of ln L_m, renormalised over the members finite at each step (a
        law in the lr sum is infinite at S = 0; the others still say what the loss is) and,
        where some do, over the members that follow the log there (``starts``: a power law
        in the lr sum fitted to the later steps starts far above the first ones). Where no
        member has started, every finite member counts."""
        steps = np.asarray(steps)
        total = np.zeros(steps.shape)
        weight = np.zeros(steps.shape)
        early_total = np.zeros(steps.shape)
        early_weight = np.zeros(steps.shape)
        with np.errstate(all="ignore"):
            for label, w, model, th in self.members:
                lm = np.log(np.asarray(model.curve(th, run, steps), dtype=float))
                ok = np.isfinite(lm)
                on = ok & (steps >= self.starts.get(label, -np.inf))
                total = total + np.where(on, w * lm, 0.0)
                weight = weight + np.where(on, w, 0.0)
                early_total = early_total + np.where(ok, w * lm, 0.0)
                early_weight = early_weight + np.where(ok, w, 0.0)
            total = np.where(weight > 0, total, early_total)
            weight = np.where(weight > 0, weight, early_weight)
            return np.where(weight > 0, np.exp(total / np.where(weight > 0, weight, 1.0)), np.inf)

    def describe(self) -> str:
        parts = " + ".join(f"{label} {w:.2f}" for label, w, _m, _t in self.members)
        return f"auto ({parts})"


@dataclass(frozen=True, eq=False)
class AutoFit(FitResult):
    """The result of :func:`fit_auto` (a :class:`~lossrate.FitResult`).

    Beyond the FitResult fields: ``run`` (the thinned prefix and the schedule), ``members``
    (every candidate's fit on the prefix), ``failed`` (candidates whose fit failed, with
    why), ``combination`` (weights, scores, rule), ``calibration``, ``ratio`` (the
    extrapolation ratio backtested), ``horizon`` (the step it reaches), ``noise_raw``
    (sd of a logged ln L around the smoothed curve), ``backtests``.
    """

    run: RunData | None = field(default=None, repr=False)
    members: Mapping[str, Fit] = field(default_factory=dict, repr=False)
    failed: Mapping[str, str] = field(default_factory=dict)
    combination: Combination | None = field(default=None, repr=False)
    calibration: Calibration | None = field(default=None, repr=False)
    ratio: float = 1.0
    horizon: int = 0
    noise_raw: float = 0.0
    backtests: tuple[Backtest, ...] = field(default=(), repr=False)
    lr_cut: float = 0.0
    decay_seen: bool = False
    floor: float = 0.0

    @property
    def weights(self) -> dict[str, float]:
        return dict(self.combination.weights) if self.combination else {}

    def why(self, *, rule_shown: bool = False) -> list[str]:
        """Plain-language lines: which models carry the weight, and why (``rule_shown``: the
        combination's rule is printed already, as :meth:`report` does)."""
        c = self.combination
        if c is None:
            return []
        lines = [f"weights: {_weights_text(c.weights)}"]
        ranked = sorted(c.scores.items(), key=lambda kv: kv[1])
        runs = [bt.run for bt in self.backtests if bt.run]
        origins = len(self.backtests) - len(runs)
        where = f"{origins} origins in the prefix" + (
            f" + {len(runs)} earlier runs cut at the same fraction" if runs else ""
        )
        if self.backtests:
            lines.append(
                f"backtests ({where}; extrapolation ratio {self.ratio:.2g}x): median "
                "|ln(pred/obs)| at the horizon, scaled to that ratio: "
                + ", ".join(f"{m} {_pct(v)}" for m, v in ranked)
            )
        elif not rule_shown:  # no score to show: say why the weights are what they are
            lines.append(f"no backtest ({c.why})")
        if self.failed:
            lines.append(
                "not used: " + "; ".join(f"{m} ({msg[:80]})" for m, msg in self.failed.items())
            )
        if self.calibration is not None:
            lines.append("interval: " + self.calibration.describe(self.level))
        return lines

    def report(self) -> str:
        head = (
            f"{self.model.describe()}  —  {'converged' if self.success else 'FAILED'}: "
            f"{self.message}"
        )
        lines = [head, *self.why(rule_shown=True)]
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        c = self.combination
        out["auto"] = {
            "weights": self.weights,
            "rule": c.rule if c else None,
            "why": c.why if c else None,
            "backtest_scores": dict(c.scores) if c else {},
            "cv_error": dict(c.cv_error) if c else {},
            "backtests": len(self.backtests),
            "earlier_runs": [bt.run for bt in self.backtests if bt.run],
            "ratio": self.ratio,
            "horizon": self.horizon,
            "calibration_scale": self.calibration.scale(self.level) if self.calibration else None,
            "calibration": self.calibration.describe(self.level) if self.calibration else None,
            "noise_sd_log": self.noise_raw,
            "failed": dict(self.failed),
            "floor": self.floor,
            "decay_seen": self.decay_seen,
            "members": {m: f.to_dict() for m, f in self.members.items() if m in self.weights},
        }
        return out


def _pct(v: float) -> str:
    return "failed" if not np.isfinite(v) else f"{100 * v:.2f} %"


def _weights_text(w: Mapping[str, float]) -> str:
    return ", ".join(f"{m} {v:.2f}" for m, v in sorted(w.items(), key=lambda kv: -kv[1]))
