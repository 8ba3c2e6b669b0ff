"""Solvers: closed forms against solve_ode, invariants, vectorisation, sigma and the
tautology of noise-free round trips (theory §7 items 1, 3, 8)."""

from __future__ import annotations

import numpy as np
import pytest

from lossrate import InvalidArgumentError
from lossrate.closures import get_closure
from lossrate.rates import Constant, MeasuredRate, PowerLaw
from lossrate.solve import Solution, solve, solve_ode
from problems import CASES, FINITE_HIT, Case, case, power_law_Phi, rel

IDS = [c.id for c in CASES]


@pytest.mark.parametrize("c", CASES, ids=IDS)
def test_reparametrised_solution_matches_closed_form(c: Case) -> None:
    sol = solve(c.closure, c.rate, c.L0, c.t)
    assert rel(sol.loss, c.exact(c.t)) < 1e-12
    assert sol.status == ("floor_reached" if c.id in FINITE_HIT else "success")


@pytest.mark.parametrize("c", CASES, ids=IDS)
def test_solve_ode_matches_closed_form(c: Case) -> None:
    sol = solve_ode(c.closure, c.rate, c.L0, c.t, rtol=1e-11)
    assert sol.success, sol.message
    assert rel(sol.loss, c.exact(c.t)) < 1e-8


@pytest.mark.parametrize("method", ["LSODA", "Radau"])
def test_solve_ode_methods_agree_on_ce(method: str) -> None:
    c = case("ce_wright_omega")
    sol = solve_ode(c.closure, c.rate, c.L0, c.t, rtol=1e-11, method=method)
    assert rel(sol.loss, c.exact(c.t)) < 1e-8


def test_mae_finite_time_hit_by_event() -> None:
    c = case("mae")
    # exact hit: Phi(T) = L0, i.e. T = Phi^{-1}(L0) for the shared F1 rate
    T = c.rate.Phi_inv(c.L0)
    assert abs(power_law_Phi(T) - c.L0) < 1e-10
    sol = solve_ode(c.closure, c.rate, c.L0, c.t, rtol=1e-11, targets=[1.0])
    assert sol.status == "floor_reached"
    assert abs(sol.hit_times[0.0] / T - 1) < 1e-8
    assert np.all(sol.loss[c.t > T] == 0.0)
    assert abs(sol.hit_times[1.0] / c.rate.Phi_inv(2.0) - 1) < 1e-8


def test_power_below_one_hits_a_positive_floor() -> None:
    c = case("power_k0.5")
    sol = solve_ode(c.closure, c.rate, c.L0, c.t, rtol=1e-11)
    T = c.rate.Phi_inv((c.L0 - 0.1) ** 0.5 / (0.5 * 1.2))
    assert sol.status == "floor_reached"
    # the approach to a positive floor is resolved in L - floor itself (round-off of the floor)
    assert abs(sol.hit_times[0.1] / T - 1) < 1e-5
    assert np.all(sol.loss >= 0.1)


@pytest.mark.parametrize("c", CASES, ids=IDS)
def test_monotone_and_floor_never_crossed(c: Case) -> None:
    t = np.linspace(0, 4 * c.t_end, 400)
    for sol in (solve(c.closure, c.rate, c.L0, t), solve_ode(c.closure, c.rate, c.L0, t)):
        assert np.all(np.diff(sol.loss) <= 1e-15 * sol.loss[:-1])
        assert np.all(sol.loss >= c.closure.floor)


@pytest.mark.parametrize("name", ["ce_wright_omega", "power_k2.0", "linear_floor"])
def test_semigroup(name: str) -> None:
    c = case(name)
    t1, t2 = 7.0, 30.0
    whole = solve_ode(c.closure, c.rate, c.L0, [t1, t2], rtol=1e-11).loss
    first = solve_ode(c.closure, c.rate, c.L0, [t1], rtol=1e-11).loss[-1]
    second = solve_ode(c.closure, c.rate, first, [t2], t0=t1, rtol=1e-11).loss[-1]
    assert rel(second, whole[-1]) < 1e-9
    closed = solve(c.closure, c.rate, solve(c.closure, c.rate, c.L0, [t1]).loss[0], [t2], t0=t1)
    assert rel(closed.loss[0], c.exact(np.array([t2]))[0]) < 1e-12


@pytest.mark.parametrize("scale", [0.1, 3.0, 250.0])
def test_time_rescaling_leaves_the_loss_unchanged(scale: float) -> None:
    c = case("ce_wright_omega")
    base = solve_ode(c.closure, c.rate, c.L0, c.t, rtol=1e-11).loss
    # t -> scale t, phi -> phi / scale: phi0 / scale and t0 * scale for the power law
    slow = PowerLaw(c.rate.phi0 / scale, c.rate.t0 * scale, c.rate.beta)
    stretched = solve_ode(c.closure, slow, c.L0, scale * c.t, rtol=1e-11).loss
    assert rel(stretched, base) < 1e-8


def test_solution_is_the_universal_curve_at_Phi() -> None:
    c = case("ce_wright_omega")
    # U(tau): dU/dtau = -g(U), U(0) = L0, tabulated once with unit rate; L(t) = U(Phi(t))
    taus = power_law_Phi(c.t)
    U = solve_ode(c.closure, Constant(1.0), c.L0, taus, rtol=1e-11).loss
    L = solve_ode(c.closure, c.rate, c.L0, c.t, rtol=1e-11).loss
    assert rel(L, U) < 1e-8


def test_vectorised_solve_equals_per_curve() -> None:
    rng = np.random.default_rng(1)
    m = 25
    phi0, t0, beta = (
        rng.uniform(0.1, 2, (m, 1)),
        rng.uniform(1, 50, (m, 1)),
        rng.uniform(0, 2, (m, 1)),
    )
    L0 = rng.uniform(1, 8, (m, 1))
    t = np.geomspace(1e-3, 1e4, 60)
    ce = get_closure("ce")
    many = solve(ce, PowerLaw(phi0, t0, beta), L0, t, targets=[0.5])
    assert many.loss.shape == (m, 60)
    for i in range(m):
        one = solve(ce, PowerLaw(phi0[i, 0], t0[i, 0], beta[i, 0]), L0[i, 0], t, targets=[0.5])
        np.testing.assert_array_equal(many.loss[i], one.loss)
        assert many.hit_times[0.5][i, 0] == one.hit_times[0.5]


def test_sigma_zero_gives_the_mean_field_and_data_equals_callable() -> None:
    c = case("ce_wright_omega")
    zero = solve_ode(c.closure, c.rate, c.L0, c.t, sigma=lambda s: 0.0, rtol=1e-11).loss
    assert rel(zero, c.exact(c.t)) < 1e-8
    grid = np.linspace(0, c.t_end, 401)
    sig = 0.3 * np.exp(-grid / 10)
    from_data = solve_ode(c.closure, c.rate, c.L0, c.t, sigma=(grid, sig), rtol=1e-10)
    from_call = solve_ode(
        c.closure, c.rate, c.L0, c.t, sigma=lambda s: 0.3 * np.exp(-s / 10), rtol=1e-10
    )
    assert rel(from_data.loss, from_call.loss) < 1e-6
    # for L > ln 2 the variance term is a brake (g'' < 0): the loss stays higher early on
    early = c.t <= 2.0
    assert np.all(from_call.loss[early][1:] > zero[early][1:])


def test_bracket_hi_is_below_and_lo_above_the_mean_field() -> None:
    c = case("ce_wright_omega")
    sig = lambda s: 0.5  # noqa: E731
    hi = solve_ode(c.closure, c.rate, c.L0, c.t, sigma=sig, bracket="hi").loss
    lo = solve_ode(c.closure, c.rate, c.L0, c.t, sigma=sig, bracket="lo").loss
    assert np.all(hi[1:] < lo[1:])


def test_noise_free_round_trip_is_a_tautology() -> None:
    """Theory §4.1: phi estimated as -dL/dt / g and integrated back reproduces L for ANY g.

    CE data are round-tripped through the (wrong) MSE closure g = 2L; the curve comes back,
    so a round trip only checks the solver, never the closure."""
    c = case("ce_wright_omega")
    t = np.linspace(0.0, c.t_end, 2001)
    L = c.exact(t)
    dLdt = -c.rate.phi(t) * c.closure.g(L)  # exact derivative of the CE curve
    wrong = get_closure("mse", a=0.5)
    phi_hat = -dLdt / wrong.g(L)
    back = solve(wrong, MeasuredRate(t, phi_hat), c.L0, t).loss
    assert rel(back, L) < 1e-6
    ode = solve_ode(wrong, MeasuredRate(t, phi_hat), c.L0, t[::50], rtol=1e-10).loss
    assert rel(ode, L[::50]) < 1e-6


def test_solution_report_and_statuses() -> None:
    c = case("mae")
    sol = solve(c.closure, c.rate, c.L0, c.t, targets=[1.0])
    text = sol.report()
    assert "floor_reached" in text and "hits L = 1" in text
    with pytest.raises(InvalidArgumentError, match="status"):
        Solution(c.t, c.t, "done", "")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"L0": 0.0}, "L0"),
        ({"L0": np.nan}, "L0"),
        ({"t": [0.0, 2.0, 1.0]}, "t must be sorted"),
        ({"t": [-1.0, 2.0]}, "t must start"),
        ({"t": [0.0, np.inf]}, "t holds a non-finite"),
        ({"t": [[0.0, 1.0]]}, "1-D"),
        ({"closure": "nope"}, "closure="),
        ({"rate": "nope"}, "rate="),
    ],
)
def test_bad_inputs_name_the_argument(kwargs: dict, match: str) -> None:
    args = {"closure": get_closure("ce"), "rate": Constant(1.0), "L0": 2.0, "t": [0.0, 1.0]}
    args.update(kwargs)
    for fn in (solve, solve_ode):
        with pytest.raises(InvalidArgumentError, match=match):
            fn(args["closure"], args["rate"], args["L0"], args["t"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rtol": 0.0}, "rtol"),
        ({"method": "Euler"}, "method"),
        ({"bracket": "mid"}, "bracket"),
        ({"bracket": "lo"}, "needs sigma"),
        ({"order": 3}, "order"),
        ({"sigma": (np.array([0.0, 0.5]), np.array([0.1, 0.1]))}, "sigma is given on"),
        ({"sigma": 3.0}, "sigma must be"),
        ({"max_step": -1.0}, "max_step"),
        ({"noise": "loud"}, "noise"),
    ],
)
def test_bad_ode_options_name_the_argument(kwargs: dict, match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        solve_ode(get_closure("ce"), Constant(1.0), 2.0, [0.0, 1.0], **kwargs)


def test_solve_ode_refuses_many_curves_and_bad_shapes() -> None:
    with pytest.raises(InvalidArgumentError, match="one curve"):
        solve_ode(get_closure("ce"), Constant(np.array([[1.0], [2.0]])), 2.0, [0.0, 1.0])
    with pytest.raises(InvalidArgumentError, match="broadcast"):
        solve(get_closure("ce"), Constant(np.array([[1.0], [2.0]])), np.ones(3), [0.0, 1.0])
