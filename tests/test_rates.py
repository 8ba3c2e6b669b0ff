"""Rate models: Phi against quadrature of phi, inverses, broadcasting, the schedule rate's
step axis, measured rates (PCHIP never undershoots), and the SGD-noise closed form
against solve_ivp (theory §4.3, §4.4, §4.6)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import quad, solve_ivp
from scipy.interpolate import CubicSpline

from lossrate import InvalidArgumentError, Schedule
from lossrate.closures import get_closure
from lossrate.rates import (
    Constant,
    MeasuredRate,
    PowerLaw,
    ScheduleRate,
    SGDNoise,
    get_rate,
    power_noise_equilibrium,
    power_noise_path,
    solve_power_noise,
)
from lossrate.solve import solve, solve_ode
from problems import power_law_Phi, rel


# ----------------------------------------------------------------- constant
def test_constant() -> None:
    r = get_rate("constant", phi0=0.5)
    t = np.array([0.0, 1.0, 4.0])
    np.testing.assert_allclose(r.Phi(t), 0.5 * t)
    np.testing.assert_allclose(r.Phi_inv(r.Phi(t)), t)
    assert r.Phi_inf == np.inf
    assert Constant(0.0).Phi_inv(1.0) == np.inf and Constant(0.0).Phi_inf == 0.0
    assert r.phi(t).shape == (3,)
    with pytest.raises(InvalidArgumentError, match="phi0"):
        Constant(-1.0)


# ---------------------------------------------------------------- power law
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0 - 1e-9, 1.0, 1.0 + 1e-9, 1.5, 2.5])
def test_power_law_Phi_is_the_integral_of_phi(beta: float) -> None:
    r = PowerLaw(0.8, 5.0, beta)
    for t in (0.3, 7.0, 300.0):
        exact, _ = quad(lambda s: float(r.phi(s)), 0, t, epsabs=0, epsrel=1e-13, limit=200)
        assert rel(r.Phi(t), exact) < 1e-11
    t = np.geomspace(1e-3, 1e3, 30)
    np.testing.assert_allclose(r.Phi_inv(r.Phi(t)), t, rtol=1e-9)


def test_power_law_is_smooth_through_beta_one() -> None:
    t = np.geomspace(1e-2, 1e4, 50)
    log_case = power_law_Phi(t, 0.8, 5.0, 1.0)
    for d in (1e-12, 1e-8, -1e-8):
        assert rel(PowerLaw(0.8, 5.0, 1.0 + d).Phi(t), log_case) < 1e-6
    betas = np.array([[1.0 - 1e-10], [1.0], [1.0 + 1e-10]])
    many = PowerLaw(0.8, 5.0, betas)
    assert many.Phi(t).shape == (3, 50)
    assert rel(many.Phi(t), np.broadcast_to(log_case, (3, 50))) < 1e-8
    P = many.Phi(t)
    assert rel(many.Phi_inv(P), np.broadcast_to(t, (3, 50))) < 1e-8


def test_power_law_finite_budget() -> None:
    r = PowerLaw(0.8, 5.0, 1.5)
    assert r.Phi_inf == pytest.approx(0.8 * 5.0 / 0.5)
    assert r.Phi_inv(r.Phi_inf) == np.inf and r.Phi_inv(0.999 * r.Phi_inf) < np.inf
    assert PowerLaw(0.8, 5.0, 0.9).Phi_inf == np.inf
    many = PowerLaw(np.array([[1.0], [2.0]]), 5.0, np.array([[0.5], [3.0]]))
    np.testing.assert_allclose(many.Phi_inf, [[np.inf], [5.0]])


@pytest.mark.parametrize(
    ("field", "value"), [("phi0", -1.0), ("t0", 0.0), ("beta", -0.1), ("phi0", np.nan)]
)
def test_power_law_bad_parameters(field: str, value: float) -> None:
    params = {"phi0": 1.0, "t0": 1.0, "beta": 0.5, field: value}
    with pytest.raises(InvalidArgumentError, match=field):
        PowerLaw(**params)


# ----------------------------------------------------------------- schedule
def wsd() -> Schedule:
    return Schedule.wsd(0.05, 400, decay_start=300, warmup=20)


def test_schedule_rate_lives_in_step_time() -> None:
    sched = wsd()
    r = ScheduleRate(sched, 2.0, 3.0, 0.6)
    s = np.array([0.0, 10.5, 150.0, 333.3, 400.0])
    S = sched.S(s)
    np.testing.assert_allclose(r.Phi(s), PowerLaw(2.0, 3.0, 0.6).Phi(S), rtol=1e-14)
    # phi(s) = eta(s) rho(S(s)) integrates to Phi over step time
    exact, _ = quad(lambda x: float(r.phi(x)), 0, 333.3, points=np.arange(1, 334), limit=1000)
    assert rel(r.Phi(333.3), exact) < 1e-8
    np.testing.assert_allclose(r.Phi_inv(r.Phi(s)), s, rtol=1e-10, atol=1e-10)
    assert r.Phi_inf == pytest.approx(float(r.Phi(400.0)))
    assert r.time_axis == "step"
    with pytest.raises(InvalidArgumentError, match="steps must lie"):
        r.Phi(401.0)


def test_schedule_rate_depends_only_on_the_lr_sum() -> None:
    # two schedules with the same total lr reach the same Phi (gradient flow: LR-sum collapse)
    a = Schedule.constant(0.02, 500)
    b = Schedule(np.r_[np.full(250, 0.03), np.full(250, 0.01)])
    ra, rb = ScheduleRate(a, 1.0, 2.0, 0.5), ScheduleRate(b, 1.0, 2.0, 0.5)
    assert rel(ra.Phi(500.0), rb.Phi(500.0)) < 1e-13
    assert abs(float(ra.Phi(250.0)) - float(rb.Phi(250.0))) > 1e-3


# ----------------------------------------------------------------- measured
def spiky() -> tuple[np.ndarray, np.ndarray]:
    t = np.arange(12.0)
    return t, np.array([1.0, 1.0, 1.0, 0.0, 0.0, 3.0, 3.0, 0.0, 0.0, 0.0, 0.5, 0.5])


def test_pchip_never_undershoots_where_a_cubic_spline_does() -> None:
    t, y = spiky()
    fine = np.linspace(0, 11, 5001)
    assert CubicSpline(t, y)(fine).min() < -0.1  # the spline overshoots below 0
    for method in ("pchip", "trapezoid"):
        r = MeasuredRate(t, y, method=method)
        assert r.phi(fine).min() >= 0.0
        assert np.all(np.diff(r.Phi(fine)) >= 0.0)


def test_measured_Phi_is_exact_for_its_interpolant() -> None:
    t = np.linspace(0, 10, 41)
    phi = 0.8 * (1 + t / 5.0) ** -0.7
    trap = MeasuredRate(t, phi, method="trapezoid")
    trap_sum = np.concatenate([[0], np.cumsum(np.diff(t) * (phi[1:] + phi[:-1]) / 2)])
    np.testing.assert_allclose(trap.Phi(t), trap_sum, rtol=1e-13)
    pchip = MeasuredRate(t, phi)
    assert rel(pchip.Phi(10.0), power_law_Phi(10.0)) < 1e-5
    P = np.linspace(0, float(pchip.Phi(10.0)), 30)
    np.testing.assert_allclose(pchip.Phi(pchip.Phi_inv(P)), P, rtol=1e-12, atol=1e-14)


def test_measured_clips_negatives_and_guards_its_range() -> None:
    t, y = spiky()
    y = y - 0.2
    r = MeasuredRate(t, y)
    assert r.n_clipped == int((y < 0).sum()) and r.phi_grid.min() == 0.0
    with pytest.raises(InvalidArgumentError, match="extrapolate"):
        r.Phi(12.0)
    with pytest.raises(InvalidArgumentError, match="extrapolate"):
        r.Phi_inf  # noqa: B018
    with pytest.raises(InvalidArgumentError, match="extrapolate"):
        r.Phi_inv(1e6)
    held = MeasuredRate(t, y, extrapolate="constant")
    end = float(held.Phi(11.0))
    assert float(held.Phi(13.0)) == pytest.approx(end + 2 * 0.3)
    assert float(held.Phi_inv(end + 0.6)) == pytest.approx(13.0)
    stopped = MeasuredRate(t, y, extrapolate="zero")
    assert stopped.Phi_inf == pytest.approx(end) and stopped.Phi_inv(end + 1) == np.inf
    with pytest.raises(InvalidArgumentError, match="starts at"):
        MeasuredRate(t + 1, y)
    late = MeasuredRate(t + 1, np.abs(y), extrapolate="constant")
    assert float(late.Phi(1.0)) == pytest.approx(abs(y[0]))


@pytest.mark.parametrize(
    ("t", "phi", "match"),
    [
        ([0.0], [1.0], "at least 2"),
        ([0.0, 1.0], [1.0], "shape"),
        ([0.0, 0.0], [1.0, 1.0], "strictly increasing"),
        ([0.0, 1.0], [1.0, np.nan], "NaN"),
    ],
)
def test_measured_bad_grids(t, phi, match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        MeasuredRate(t, phi)
    with pytest.raises(InvalidArgumentError, match="method"):
        MeasuredRate([0.0, 1.0], [1.0, 1.0], method="cubic")


# -------------------------------------------------------------------- noise
def reference_path(sched: Schedule, p: dict) -> np.ndarray:
    """dx/dS = -a rho x^k + c eta^p rho^gamma x by solve_ivp, one optimizer step at a time."""
    x, S, out = p["L0"] - p["floor"], 0.0, [p["L0"] - p["floor"]]
    for eta in sched.lr:

        def f(s, y, eta=eta):
            rho = p["rho0"] * (1 + s / p["S0"]) ** -p["beta"]
            return [
                -p["a"] * rho * y[0] ** p["k"] + p["c"] * eta ** p["p"] * rho ** p["gamma"] * y[0]
            ]

        x = solve_ivp(f, (S, S + eta), [x], method="DOP853", rtol=1e-12, atol=1e-14).y[0, -1]
        S += eta
        out.append(x)
    return p["floor"] + np.array(out)


BASE = {
    "L0": 8.0,
    "k": 2.5,
    "a": 0.7,
    "rho0": 3.0,
    "S0": 0.5,
    "beta": 0.6,
    "c": 40.0,
    "p": 0.8,
    "gamma": 1.0,
    "floor": 1.5,
}


@pytest.mark.parametrize("gamma", [1.0, 0.5])
@pytest.mark.parametrize("k", [1.0, 2.5])
def test_bernoulli_solver_matches_solve_ivp_on_a_wsd_schedule(gamma: float, k: float) -> None:
    sched = Schedule.wsd(3e-3, 600, decay_start=450, warmup=30)
    p = {**BASE, "gamma": gamma, "k": k, "c": 40.0 if k > 1 else 0.5}
    fast = power_noise_path(sched, **p)
    assert fast.shape == (601,)
    assert rel(fast, reference_path(sched, p)) < 1e-6


def test_bernoulli_solver_through_the_objects_and_vectorised() -> None:
    sched = Schedule.wsd(3e-3, 300, decay_start=200)
    closure = get_closure("power", c=0.7, k=2.5, floor=1.5)
    rate = ScheduleRate(sched, 3.0, 0.5, 0.6)
    noise = SGDNoise(40.0, p=0.8, gamma=1.0, form="multiplicative")
    one = solve_power_noise(closure, rate, noise, 8.0)
    assert rel(one, power_noise_path(sched, **BASE)) < 1e-14
    cs = np.array([[0.0], [10.0], [40.0]])
    many = solve_power_noise(
        closure, rate, SGDNoise(cs, p=0.8, gamma=1.0, form="multiplicative"), 8.0
    )
    assert many.shape == (3, 301)
    for i, c in enumerate(cs[:, 0]):
        single = solve_power_noise(
            closure, rate, SGDNoise(c, p=0.8, gamma=1.0, form="multiplicative"), 8.0
        )
        assert rel(many[i], single) < 1e-13
    # c = 0 is gradient flow: the reparametrised solution of the power closure
    np.testing.assert_allclose(
        many[0], solve(closure, rate, 8.0, np.arange(301.0)).loss, rtol=1e-12
    )
    # more noise, higher loss
    assert np.all(many[2, 1:] > many[1, 1:]) and np.all(many[1, 1:] > many[0, 1:])
    picked = solve_power_noise(closure, rate, noise, 8.0, steps=[0, 150, 300])
    np.testing.assert_allclose(picked, one[[0, 150, 300]], rtol=1e-15)


def test_bernoulli_solver_survives_huge_decay_exponents() -> None:
    # thousands of e-folds toward equilibrium: the blocked sums must not overflow
    sched = Schedule.constant(0.01, 5000)
    p = {**BASE, "c": 5e4, "beta": 0.0, "p": 1.0}
    L = power_noise_path(sched, **p)
    assert np.isfinite(L).all()
    closure = get_closure("power", c=p["a"], k=p["k"], floor=p["floor"])
    noise = SGDNoise(p["c"], p=1.0, gamma=1.0, form="multiplicative")
    assert rel(L[-1], power_noise_equilibrium(closure, noise, 0.01)) < 1e-10


@pytest.mark.parametrize("gamma", [1.0, 0.5])
def test_equilibrium_at_constant_lr(gamma: float) -> None:
    # constant eta and rho (beta = 0): x_eq = (c eta^p rho^(gamma-1) / a)^(1/(k-1)),
    # (c eta^p / a)^(1/(k-1)) for gamma = 1; the loss falls onto it and it drops with eta
    p = {**BASE, "beta": 0.0, "gamma": gamma}
    closure = get_closure("power", c=p["a"], k=p["k"], floor=p["floor"])
    noise = SGDNoise(p["c"], p=p["p"], gamma=gamma, form="multiplicative")
    for eta in (3e-3, 1e-3):
        L = power_noise_path(Schedule.constant(eta, 100_000), **p)
        eq = power_noise_equilibrium(closure, noise, eta, rho=p["rho0"])
        assert rel(L[-1], eq) < 1e-9
    assert power_noise_equilibrium(closure, noise, 1e-3, p["rho0"]) < power_noise_equilibrium(
        closure, noise, 3e-3, p["rho0"]
    )


def test_general_noise_ode_agrees_with_the_closed_form() -> None:
    sched = Schedule.wsd(2e-2, 120, decay_start=80)
    closure = get_closure("power", c=0.7, k=2.5, floor=1.5)
    rate = ScheduleRate(sched, 3.0, 0.5, 0.6)
    noise = SGDNoise(8.0, p=0.8, gamma=1.0, form="multiplicative")
    steps = np.arange(121.0)
    ode = solve_ode(closure, rate, 8.0, steps, noise=noise, rtol=1e-10)
    assert rel(ode.loss, solve_power_noise(closure, rate, noise, 8.0)) < 1e-6
    # the same term in intrinsic time, with eta looked up from the schedule
    S = sched.S(steps)
    intr = solve_ode(
        closure,
        rate.rho,
        8.0,
        S,
        noise=SGDNoise(8.0, 0.8, 1.0, "multiplicative", sched),
        rtol=1e-10,
    )
    assert rel(intr.loss, ode.loss) < 1e-6


def test_additive_noise_equilibrium() -> None:
    # F3: dL/dS = -phi g(L) + c eta: g(L_eq) = c eta / phi
    sched = Schedule.constant(0.1, 2000)
    closure = get_closure("mse", a=0.5)
    noise = SGDNoise(0.05, form="additive", schedule=sched)
    sol = solve_ode(closure, Constant(2.0), 3.0, [0.0, 150.0], noise=noise)
    assert rel(closure.g(sol.loss[-1]), 0.05 * 0.1 / 2.0) < 1e-6


def test_noise_solver_refuses_what_it_cannot_solve() -> None:
    sched = Schedule.constant(0.01, 10)
    rate = ScheduleRate(sched, 1.0, 1.0, 0.5)
    mult = SGDNoise(1.0, form="multiplicative")
    with pytest.raises(InvalidArgumentError, match="power closure"):
        solve_power_noise(get_closure("ce"), rate, mult, 2.0)
    with pytest.raises(InvalidArgumentError, match="k >= 1"):
        solve_power_noise(get_closure("power", k=0.5), rate, mult, 2.0)
    with pytest.raises(InvalidArgumentError, match="additive"):
        solve_power_noise(get_closure("power"), rate, SGDNoise(1.0), 2.0)
    with pytest.raises(InvalidArgumentError, match="L0"):
        solve_power_noise(get_closure("power", floor=1.0), rate, mult, 0.5)
    with pytest.raises(InvalidArgumentError, match="steps"):
        solve_power_noise(get_closure("power"), rate, mult, 2.0, steps=[11])
    with pytest.raises(InvalidArgumentError, match="form"):
        SGDNoise(1.0, form="loud")
    with pytest.raises(InvalidArgumentError, match="schedule"):
        SGDNoise(1.0).drift(0.0, 1.0, 0.0, Constant(1.0))
