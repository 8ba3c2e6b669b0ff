"""The loss state-rate ODE as curve models: gradient flow ("ode"), gradient flow plus the
lr-dependent SGD-noise term ("ode_noise"), and gradient flow plus the linear relaxation of
the noise excess after lr changes ("ode_relax").

**ode** (theory §3, §4.3 F2). In intrinsic time S(s) = sum_{j<s} eta_j the loss obeys
dL/dS = -rho(S) g(L), rho(S) = rho0 (1 + S/S0)^-beta, so with G' = 1/g

    L(s) = G^{-1}( G(L0) - [P(S(s)) - P(S_a)] ),   P(S) = int_0^S rho   (closed form, F1),

anchored at the run's first logged step s_a, where the loss is the parameter L0 (fitted,
since the first logged point is as noisy as any other). The schedule enters only through
the lr sum S. Closures, all with a floor L_inf (x = L - L_inf):

* "ce":    g = alpha (1 - e^{-x})^2 (softmax CE shifted by its floor; alpha fixed, see below);
* "mse":   g = 4 a x (a from ``meta.mse_scale``, else 1);
* "power": g = x^k with the order k fitted;
* "auto" (default): "ce" for ``meta.loss == "ce"``, "mse" for "mse", else "power".

Identifiability (theory §4.5): g's scale (alpha, a or c) multiplies rho0 and only the
product is identified, so the scale is fixed (CE: the measured median ``alpha_eff`` when the
run logs it, else 1.5) and reported in the fit's notes. Parameters, on the scales §4.5
recommends: rho0, S0 searched in logs, beta in [0, 3], L_inf in [0, the lowest smoothed
loss), L0, and k for "power".

**ode_noise** (theory §4.3 F3, §4.6). With x = L - L_inf,

    dx/dS = -rho(S) x^k + c eta(S)^p rho(S)^gamma x,

gradient flow plus an lr-proportional noise term whose equilibrium
x_eq^{k-1} = c eta^p rho^{gamma-1} falls when eta falls: the loss drop at an lr decay.
The Bernoulli substitution u = x^{1-k} makes it linear, du/dS = (k-1)[rho - c eta^p rho^gamma u],
solved step by step by the exponential integrator of
:func:`lossrate.rates.noise.power_noise_path` over the per-step lr: O(steps), no ODE solver
in the fit loop. gamma is 1 unless given;
p is fitted when the fitted stretch of the run changes its lr (after warmup) by more than
10 %, otherwise it is not identified by the data and is held at ``p_default`` (noted).

**ode_relax** (gradient flow plus the relaxation of the noise excess after lr changes) lives
in :mod:`lossrate.fitting.ode_relax`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
from scipy.optimize import least_squares

from .._errors import InvalidArgumentError
from .._model import CurveModel, Param, RunData
from ..closures import Closure, Shifted, get_closure
from ..rates.noise import power_noise_path
from ..rates.power_law import PowerLaw, power_law_Phi
from ..schedule import decays_after_peak
from .registry import register_model

__all__ = ["ODE", "ODENoise"]

CLOSURES = ("auto", "ce", "mse", "power")
_CE_ALPHA = 1.5
_EQ_SHARE = 0.4  # ode_noise guess: the noise equilibrium holds this share of the lowest excess


# ------------------------------------------------------------------ helpers
def _smooth_min(y: np.ndarray, w: int = 5) -> float:
    """The lowest running median of ``w`` points: a noise-robust 'lowest loss'."""
    if y.size < w:
        return float(np.min(y))
    win = np.lib.stride_tricks.sliding_window_view(y, w)
    return float(np.min(np.median(win, axis=1)))


def intrinsic_time(run: RunData, steps: Any) -> np.ndarray:
    """S at ``steps``: exact table look-up for whole steps (the fit's hot path), else
    :meth:`Schedule.S`."""
    s = np.asarray(steps)
    cum = run.schedule.cumulative
    if np.issubdtype(s.dtype, np.integer) and (
        s.size == 0 or (s.min() >= 0 and s.max() < cum.size)
    ):
        return cum[s]
    return run.schedule.S(s)


def _rho0(theta: Mapping[str, float], S_ref: float) -> float:
    """rho at S = 0 of rho(S) = rho_ref ((1 + S/S0) / (1 + S_ref/S0))^-beta."""
    return theta["rho_ref"] * np.exp(theta["beta"] * np.log1p(S_ref / theta["S0"]))


def _rate(theta: Mapping[str, float], S_ref: float) -> PowerLaw:
    """rho(S) = rho_ref ((1 + S/S0) / (1 + S_ref/S0))^-beta as an F1 power law in S."""
    return PowerLaw(_rho0(theta, S_ref), theta["S0"], theta["beta"])


def _edge(y: np.ndarray, head: bool, m: int = 3) -> float:
    part = y[:m] if head else y[-m:]
    return float(np.median(part))


def _decays(run: RunData) -> bool:
    """The fitted steps see the lr fall after its peak by more than 10 %."""
    return decays_after_peak(run.schedule.at(np.clip(run.traj.step, 0, run.schedule.n_steps - 1)))


def _alpha_from_run(run: RunData, classes: int | None) -> tuple[float, str]:
    traj = run.traj
    lo = 1.0 + 1e-9 if classes is None else classes / (classes - 1)
    if traj.has("alpha_eff"):
        a = float(np.nanmedian(traj.alpha_eff))  # type: ignore[arg-type]
        a = float(np.clip(a, lo, 2.0))
        return a, f"CE alpha fixed at the measured median alpha_eff = {a:.4g}"
    return _CE_ALPHA, (
        f"CE alpha fixed at {_CE_ALPHA} (no alpha_eff logged); only alpha*rho0 is identified "
        "(theory §4.5), so rho0 is relative to this alpha"
    )


def _has_gradients(run: RunData) -> bool:
    return run.traj.has("pgrad_sq") or run.traj.has("grad_sq")


#: logged steps per bin of the debiased rate (at least; about this many bins in all)
_DEBIASED_BINS = 40


def _measured_phi(run: RunData, g: Any) -> tuple[np.ndarray, np.ndarray, str] | None:
    """(S, phi_hat) at which the rho family is started, and what they come from.

    The debiased grad L^T P grad L (gradient groups: ``pgrad_sq_debiased``) is unbiased for the
    full-data value but noisy, and may be negative on one step, so it is averaged over runs of
    consecutive logged steps (about ``_DEBIASED_BINS`` bins; the mean is unbiased) before the
    log is taken. Without it the mini-batch pgrad_sq (or grad_sq) is used per step: too large
    by tr(P Sigma_g) / B (theory §4.2), often 10-100x on small batches."""
    traj = run.traj
    S = run.schedule.S(traj.step)
    with np.errstate(all="ignore"):
        gl = np.asarray(g(traj.loss), dtype=float)
    if traj.has("pgrad_sq_debiased"):
        col = np.asarray(traj.pgrad_sq_debiased, dtype=float)
        ok = np.isfinite(col) & np.isfinite(gl) & (gl > 0)
        idx = np.flatnonzero(ok)
        if idx.size >= 5:
            bins = np.array_split(idx, min(_DEBIASED_BINS, idx.size // 5 or 1))
            pg = np.array([col[b].mean() for b in bins])
            gm = np.array([gl[b].mean() for b in bins])
            Sm = np.array([S[b].mean() for b in bins])
            keep = pg > 0
            if keep.sum() >= 5:
                return Sm[keep], pg[keep] / gm[keep], "debiased"
    col = traj.pgrad_sq if traj.has("pgrad_sq") else traj.grad_sq if traj.has("grad_sq") else None
    if col is None:
        return None
    with np.errstate(all="ignore"):
        phi = col / gl
    ok = np.isfinite(phi) & (phi > 0)
    if ok.sum() < 5:
        return None
    return S[ok], phi[ok], "raw"


def _measured_rho(run: RunData, g: Any) -> tuple[float, float, float] | None:
    """(rho0, S0, beta) from the measured rate phi_hat = pgrad_sq / g(L) (intrinsic time), the
    debiased one when the run has it (:func:`_measured_phi`); None without gradient norms."""
    measured = _measured_phi(run, g)
    if measured is None:
        return None
    S, lphi = measured[0], np.log(measured[1])

    def res(z: np.ndarray) -> np.ndarray:
        return z[0] - z[2] * np.log1p(S / np.exp(z[1])) - lphi

    z0 = np.array([float(np.median(lphi)), np.log(max(float(np.median(S)), 1e-12)), 0.5])
    try:
        r = least_squares(res, z0, bounds=([-50, -30, 0], [50, 30, 3]), loss="soft_l1")
    except ValueError:
        return None
    return float(np.exp(r.x[0])), float(np.exp(r.x[1])), float(r.x[2])


@dataclass(frozen=True)
class _Base(CurveModel):
    """Shared parameters (rho family, L_inf, L0) and guesses of the ODE models."""

    closure: str = "auto"
    classes: int | None = None
    S_ref: float = 1.0

    def __post_init__(self) -> None:
        if self.closure not in CLOSURES:
            raise InvalidArgumentError(
                f"closure={self.closure!r} is not known for {self.name!r}; choose one of "
                f"{', '.join(CLOSURES)}."
            )

    # -------------------------------------------------------- closure choice
    def _kind(self, run: RunData) -> str:
        if self.closure != "auto":
            return self.closure
        loss = (run.traj.meta.loss or "").lower()
        return loss if loss in ("ce", "mse") else "power"

    def _scale(self, run: RunData) -> tuple[float, str]:
        kind = self._kind(run)
        if kind == "ce":
            return _alpha_from_run(run, self.classes or run.traj.meta.classes)
        if kind == "mse":
            a = run.traj.meta.mse_scale or 1.0
            return float(a), f"MSE scale a fixed at {a:g}; only a*rho0 is identified (theory §4.5)"
        return 1.0, "power-family scale c fixed at 1; only c*rho0 is identified (theory §4.5)"

    def _closure(self, theta: Mapping[str, float], run: RunData) -> Any:
        kind = self._kind(run)
        scale = self._scale(run)[0]
        if kind == "ce":
            C = self.classes or run.traj.meta.classes or 1000
            return Shifted(get_closure("ce", classes=int(C), alpha=scale), theta["L_inf"])
        if kind == "mse":
            return get_closure("mse", a=scale, floor=theta["L_inf"])
        return get_closure("power", c=scale, k=theta["k"], floor=theta["L_inf"])

    def notes(self, run: RunData) -> list[str]:
        """Decisions this model takes for ``run`` (reported in the fit's notes)."""
        out = [self._scale(run)[1]]
        if run.traj.has("pgrad_sq_debiased"):
            out.append(
                "rho family also started from the measured phi_hat = pgrad_sq / g(L), with the "
                "debiased pgrad_sq of the run's gradient groups (gradient_noise.csv)"
            )
        elif _has_gradients(run):
            out.append(
                "rho family also started from the measured phi_hat = pgrad_sq / g(L), with the "
                "raw mini-batch pgrad_sq: too large by tr(P Sigma_g)/B; record gradient groups "
                "for the debiased one"
            )
        return out

    # -------------------------------------------------------- parameters
    def _common_names(self, run: RunData) -> tuple[str, ...]:
        """The names of :meth:`_common_params`, in order, without computing their bounds."""
        return ("rho_ref", "S0", "beta", "L_inf", "L0") + (
            ("k",) if self._kind(run) == "power" else ()
        )

    def _common_params(self, run: RunData) -> list[Param]:
        y = run.traj.loss
        env = _smooth_min(y)
        hi = float(np.max(y))
        ps = [
            Param("rho_ref", 1e-8, 1e8, "log", "rate rho at S = S_ref (intrinsic time)"),
            Param("S0", 1e-6, 1e8, "log", "time scale of rho (intrinsic time)"),
            Param("beta", 0.0, 3.0, doc="decay exponent of rho"),
            Param("L_inf", 0.0, max(env, 1e-12), doc="floor, below the lowest smoothed loss"),
            Param(
                "L0",
                max(env, 1e-12) * (1 + 1e-9),
                3.0 * hi + 1e-12,
                doc="loss at the first logged step",
            ),
        ]
        if self._kind(run) == "power":
            ps.append(Param("k", 1.01, 8.0, doc="order of g = (L - L_inf)^k"))
        return ps

    def _common_guesses(self, run: RunData) -> list[dict[str, float]]:
        y = run.traj.loss
        steps = run.traj.step
        env = _smooth_min(y)
        first, last = _edge(y, True), _edge(y, False)
        rng = max(first - last, 1e-3 * first)
        S = intrinsic_time(run, steps)
        Sa, Sb = float(S[0]), float(S[-1])
        S0s = [max(0.5 * (Sa + Sb), 1e-5), max(Sb, 1e-5) * 3]
        out = []
        for frac, beta, S0 in ((0.3, 0.5, S0s[0]), (1.0, 0.9, S0s[0]), (1.0, 0.3, S0s[1])):
            th = {"beta": beta, "S0": S0, "L_inf": max(env - frac * rng, 0.0)}
            th["L0"] = max(first, env * 1.0001)
            if self._kind(run) == "power":
                th["k"] = 2.0
            th["rho_ref"] = self._rho_for(th, run, S, first, last)
            out.append(th)
        meas = _measured_rho(run, self._closure(out[0], run).g)
        if meas is not None:
            th = dict(out[0])
            rho0, th["S0"], th["beta"] = meas
            th["rho_ref"] = rho0 * (1 + self.S_ref / th["S0"]) ** (-th["beta"])
            out.insert(0, th)
        return out

    # -------------------------------------------------------- gradient flow
    def _gradient_flow(
        self,
        theta: Mapping[str, float],
        run: RunData,
        steps: np.ndarray,
        *,
        times: np.ndarray | None = None,
        closure: Any = None,
    ) -> np.ndarray:
        """L = G^{-1}(G(L0) - [P(S) - P(S_a)]) at ``steps`` (module docstring). ``times``
        (S_a followed by S at ``steps``) and ``closure`` (for ``theta``'s floor and order)
        may be passed in when known: the same numbers, computed once for many thetas."""
        clo = self._closure(theta, run) if closure is None else closure
        S_shape = np.shape(steps)
        if times is None:
            S = intrinsic_time(run, steps)
            times = np.concatenate([intrinsic_time(run, run.traj.step[:1]), np.ravel(S)])
        P = power_law_Phi(_rho0(theta, self.S_ref), theta["S0"], theta["beta"], times)
        dP = np.reshape(P[1:] - P[0], S_shape)
        return np.asarray(clo.G_inv(clo.G(np.asarray(theta["L0"])) - dP), dtype=float)

    def _rho_for(
        self, th: dict[str, float], run: RunData, S: np.ndarray, first: float, last: float
    ) -> float:
        clo = self._closure(th, run)
        with np.errstate(all="ignore"):
            dG = float(clo.G(np.array(last)) - clo.G(np.array(first)))
        P1 = _rate({**th, "rho_ref": 1.0}, self.S_ref)
        dP = float(P1.Phi(S[-1]) - P1.Phi(S[0]))
        if not (np.isfinite(dG) and dG > 0 and dP > 0):
            return 1.0
        return float(np.clip(dG / dP, 1e-7, 1e7))


@register_model
@dataclass(frozen=True)
class ODE(_Base):
    """Gradient flow L = G^{-1}(G(L0) - [P(S) - P(S_a)]) (module docstring)."""

    name: ClassVar[str] = "ode"

    def params(self, run: RunData) -> Sequence[Param]:
        return self._common_params(run)

    def guesses(self, run: RunData) -> Sequence[Mapping[str, float]]:
        return self._common_guesses(run)

    def curve(self, theta: Mapping[str, float], run: RunData, steps: np.ndarray) -> np.ndarray:
        return self._gradient_flow(theta, run, steps)

    def components(
        self, theta: Mapping[str, float], run: RunData
    ) -> tuple[Closure, PowerLaw, float]:
        """(closure, rate, L0) of the fitted ODE, for :mod:`lossrate.bounds`.

        The rate is in intrinsic time tau counted from the run's first logged step S_a:
        rho(S_a + tau) = rho(S_a) (1 + tau/(S0 + S_a))^-beta, an F1 power law in tau; L0 is
        the fitted loss at that step. So floor / time_to_target / energy_to_target apply as is.
        """
        Sa = float(intrinsic_time(run, run.traj.step[:1])[0])
        rate = _rate(theta, self.S_ref)
        shifted = PowerLaw(float(rate.phi(Sa)), float(theta["S0"]) + Sa, float(theta["beta"]))
        return self._closure(theta, run), shifted, float(theta["L0"])

    def eval_seconds(self, run: RunData, n: int) -> float:
        return 8e-5 + 1e-7 * n  # the closure's inverse G^-1 at each point

    def describe(self) -> str:
        return f"ode (gradient flow, closure={self.closure})"


@register_model
@dataclass(frozen=True)
class ODENoise(_Base):
    """Gradient flow plus the SGD-noise term c eta^p rho^gamma x (module docstring).

    The noise term is fitted through two interpretable parameters: ``x_eq``, the equilibrium
    excess loss L_eq - L_inf at the reference lr eta_ref, and ``q``, its lr exponent
    (x_eq(eta) = x_eq (eta/eta_ref)^q); then c = x_eq^(k-1) eta_ref^-p with p = q (k-1).

    Args:
        q_default: equilibrium lr exponent used when the data cannot identify it (the lr is
            constant after warmup in every fitted step). 1 is the simple F3 term (x_eq ∝ eta).
        fit_q: True/False to force fitting / holding q; None decides from the data.
        eta_ref: reference lr of ``x_eq`` (None: the largest lr of the schedules fitted).
        gamma: exponent of rho in the noise term (held fixed).
        block: optimizer steps integrated as one (at their mean lr; the loss between block
            ends is interpolated linearly). 1 is the exact step-by-step solution.
    """

    name: ClassVar[str] = "ode_noise"
    closure: str = "power"
    q_default: float = 1.0
    fit_q: bool | None = None
    eta_ref: float | None = None
    gamma: float = 1.0
    block: int = 16

    def __post_init__(self) -> None:
        if self.closure != "power":
            raise InvalidArgumentError(
                "ode_noise solves the power family g = (L - L_inf)^k (the exponential integrator "
                f"of theory §4.6 needs it); got closure={self.closure!r}. Use closure='power'."
            )
        if int(self.block) != self.block or self.block < 1:
            raise InvalidArgumentError(f"block must be a whole number >= 1, got {self.block!r}.")

    def _fits_q(self, run: RunData) -> bool:
        if self.fit_q is not None:
            return bool(self.fit_q)
        return _decays(run)

    def _eta_ref(self, run: RunData) -> float:
        return float(self.eta_ref) if self.eta_ref else float(np.max(run.schedule.lr))

    def for_runs(self, runs: Sequence[RunData]) -> ODENoise:
        """The model for a joint fit: one eta_ref for all runs, and q fitted when any run's lr
        varies (so every run has the same parameters)."""
        eta_ref = self.eta_ref or max(float(np.max(r.schedule.lr)) for r in runs)
        fit_q = self.fit_q if self.fit_q is not None else any(self._fits_q(r) for r in runs)
        return replace(self, eta_ref=eta_ref, fit_q=fit_q)

    def params(self, run: RunData) -> Sequence[Param]:
        ps = self._common_params(run)
        hi = float(np.max(run.traj.loss))
        ps.append(Param("x_eq", 1e-6, hi, "log", "equilibrium excess loss at eta_ref"))
        if self._fits_q(run):
            ps.append(Param("q", 0.0, 3.0, doc="lr exponent of the equilibrium x_eq"))
        return ps

    def notes(self, run: RunData) -> list[str]:
        out = super().notes(run)
        if not self._fits_q(run):
            out.append(
                "the fitted steps hold the lr constant after warmup, so the lr exponent q of the "
                f"noise equilibrium is not identified: held at q={self.q_default:g} (theory §4.6: "
                "a prefix alone does not identify the decay gain; priors from other runs do)"
            )
        return out

    def guesses(self, run: RunData) -> Sequence[Mapping[str, float]]:
        env = _smooth_min(run.traj.loss)
        out = []
        for th in self._common_guesses(run):
            g = dict(th)
            g["x_eq"] = max(_EQ_SHARE * (env - th["L_inf"]), 1e-5)
            if self._fits_q(run):
                g["q"] = self.q_default
            out.append(g)
        return out

    def curve(self, theta: Mapping[str, float], run: RunData, steps: np.ndarray) -> np.ndarray:
        steps = np.asarray(steps)
        si = np.rint(steps).astype(np.int64)
        a = int(run.traj.step[0])
        b = int(si.max())
        if b > run.schedule.n_steps:
            raise InvalidArgumentError(
                f"steps reach {b} but the schedule covers {run.schedule.n_steps}; extend it."
            )
        if not theta["L0"] > theta["L_inf"]:
            return np.full(steps.shape, np.nan)
        k = theta["k"]
        p = theta.get("q", self.q_default) * (k - 1.0)
        c = theta["x_eq"] ** (k - 1.0) * self._eta_ref(run) ** (-p)
        # rho(S) re-anchored at S_a: rho0 (1 + S/S0)^-beta = rho0' (1 + (S - S_a)/(S0 + S_a))^-beta
        rate = _rate(theta, self.S_ref)
        Sa = float(run.schedule.cumulative[a])
        m = int(self.block)
        seg = run.schedule.lr[a:b]
        nb = -(-seg.size // m)
        if nb * m > seg.size:
            seg = np.concatenate([seg, np.full(nb * m - seg.size, seg[-1] if seg.size else 0.0)])
        blocks = seg.reshape(nb, m).sum(axis=1) if m > 1 else seg
        # a block of m steps at mean lr eta is one step of lr m*eta: c (m eta)^p m^-p = c eta^p
        L = power_noise_path(
            blocks,
            L0=theta["L0"],
            k=k,
            a=1.0,
            rho0=float(rate.phi(Sa)),
            S0=theta["S0"] + Sa,
            beta=theta["beta"],
            c=c * float(m) ** (-p),
            p=p,
            gamma=self.gamma,
            floor=theta["L_inf"],
        )
        out = np.full(steps.shape, np.nan)
        ok = si >= a
        out[ok] = np.interp((si[ok] - a) / m, np.arange(L.size, dtype=float), L)
        return out

    def eval_seconds(self, run: RunData, n: int) -> float:
        return 2e-4 + 3e-8 * run.schedule.n_steps + 1e-7 * n  # a path over every step

    def describe(self) -> str:
        return f"ode_noise (gradient flow + c eta^p rho^{self.gamma:g} x, power closure)"
