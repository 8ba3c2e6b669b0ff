"""Closures: closed-form G, G^{-1} against direct integration of dL/dPhi = -g(L), round
trips, derivatives, asymptotics and argument errors (theory §3, §7 items 1, 2, 9)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from lossrate import InvalidArgumentError
from lossrate.closures import (
    BCE,
    MAE,
    MSE,
    Closure,
    CrossEntropy,
    PowerFloor,
    SmoothedCE,
    available_closures,
    get_closure,
)

# closures with a closed-form G (floor hit at finite Phi only where G_at_floor is finite)
CLOSED_FORM: dict[str, Closure] = {
    "mse": MSE(a=0.5),
    "mse_floor": MSE(a=0.25, floor=0.3),
    "power_k0.5": PowerFloor(c=0.7, k=0.5, floor=0.2),
    "power_k0.9": PowerFloor(c=1.3, k=0.9, floor=0.1),
    "power_k1": PowerFloor(c=1.3, k=1.0, floor=0.2),
    "power_k1.1": PowerFloor(c=0.8, k=1.1),
    "power_k2": PowerFloor(c=0.5, k=2.0, floor=0.05),
    "power_k3.5": PowerFloor(c=2.0, k=3.5, floor=1.0),
    "ce": CrossEntropy(classes=10, alpha=1.5),
    "ce_binary": CrossEntropy(classes=2, alpha=2.0),
    "bce": BCE(),
    "smoothed_ce": SmoothedCE(classes=10, epsilon=0.1),
    "smoothed_ce_kappa": SmoothedCE(classes=5, epsilon=0.3, alpha=1.2, kappa=0.6),
}


def _numeric_solution(c: Closure, L0: float, Phi: np.ndarray) -> np.ndarray:
    """L(Phi) from solve_ivp on u = ln(L - floor): du/dPhi = -g(L) / (L - floor)."""

    def rhs(_: float, u: np.ndarray) -> np.ndarray:
        x = np.exp(u)
        return -c.g(c.floor + x) / x

    sol = solve_ivp(
        rhs,
        (0.0, Phi[-1]),
        [np.log(L0 - c.floor)],
        method="DOP853",
        t_eval=Phi,
        rtol=1e-13,
        atol=1e-13,
    )
    assert sol.success, sol.message
    return c.floor + np.exp(sol.y[0])


@pytest.mark.parametrize("key", sorted(CLOSED_FORM))
def test_closed_form_matches_ode(key: str) -> None:
    c = CLOSED_FORM[key]
    L0 = c.floor + 3.0
    # stop where L - floor = 1e-6 (before any finite hitting time, and while L - floor is
    # still resolved in floating point next to the floor)
    Phi_end = min(50.0, float(c.G(L0) - c.G(c.floor + 1e-6)))
    Phi = np.linspace(0.0, Phi_end, 41)
    closed = c.G_inv(c.G(L0) - Phi)
    numeric = _numeric_solution(c, L0, Phi)
    np.testing.assert_allclose(closed, numeric, rtol=1e-8, atol=0)
    assert np.all(np.diff(closed) <= 0)
    assert np.all(closed >= c.floor)


def test_ce_closed_form_matches_ode_far_into_the_tail() -> None:
    c = CrossEntropy(classes=10, alpha=1.5)
    Phi = np.concatenate([[0.0], np.logspace(-2, 5, 30)])
    np.testing.assert_allclose(
        c.G_inv(c.G(2.3) - Phi), _numeric_solution(c, 2.3, Phi), rtol=1e-8, atol=0
    )


@pytest.mark.parametrize("key", ["mse", "mse_floor", "power_k1"])
def test_exponential_families_are_exponential(key: str) -> None:
    c = CLOSED_FORM[key]
    rate = c.dg(1.0)  # g = rate (L - floor)
    L0, Phi = c.floor + 2.0, np.linspace(0, 20, 11)
    expected = c.floor + 2.0 * np.exp(-rate * Phi)
    np.testing.assert_allclose(c.G_inv(c.G(L0) - Phi), expected, rtol=1e-12)


@pytest.mark.parametrize("k", [0.5, 2.0, 3.5])
def test_power_family_formulas(k: float) -> None:
    c = PowerFloor(c=1.7, k=k, floor=0.4)
    x0, Phi = 2.5, np.linspace(0.0, 0.5, 6)
    expected = c.floor + (x0 ** (1 - k) + (k - 1) * c.c * Phi) ** (-1 / (k - 1))
    np.testing.assert_allclose(c.G_inv(c.G(c.floor + x0) - Phi), expected, rtol=1e-12)
    if k < 1:  # the floor is hit at Phi* = x0^{1-k} / ((1-k) c), and held after it
        hit = x0 ** (1 - k) / ((1 - k) * c.c)
        assert c.G(c.floor + x0) - c.G_at_floor == pytest.approx(hit, rel=1e-13)
        np.testing.assert_array_equal(c.G_inv(c.G(c.floor + x0) - [hit * 1.0001, 1e6]), 0.4)
    else:
        assert c.G_at_floor == -np.inf


def test_mae_hits_zero_at_phi_equal_to_L0() -> None:
    c, L0 = MAE(), 1.7

    def hit(_: float, L: np.ndarray) -> float:
        return float(L[0])

    hit.terminal = True  # type: ignore[attr-defined]
    sol = solve_ivp(lambda _, L: -c.g(L), (0.0, 10.0), [L0], events=hit, rtol=1e-12, atol=1e-14)
    assert sol.t_events[0][0] == pytest.approx(L0, rel=1e-12)
    assert c.G(L0) - c.G_at_floor == L0
    np.testing.assert_array_equal(
        c.G_inv(c.G(L0) - np.array([0.0, 0.7, L0, 5.0])), [L0, L0 - 0.7, 0.0, 0.0]
    )
    assert c.g(0.0) == 0.0 and c.g(1e-300) == 1.0


@pytest.mark.parametrize("key", sorted(CLOSED_FORM))
def test_round_trip_over_wide_ranges(key: str) -> None:
    c = CLOSED_FORM[key]
    L = c.floor + np.logspace(-8, 2.5, 500)
    np.testing.assert_allclose(c.G_inv(c.G(L)), L, rtol=1e-10, atol=0)


def test_ce_round_trip_extremes_without_overflow() -> None:
    c = CrossEntropy(classes=100, alpha=1.9)
    L = np.logspace(-8, np.log10(50), 300)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow / invalid-value RuntimeWarnings
        np.testing.assert_allclose(c.G_inv(c.G(L)), L, rtol=1e-10, atol=0)
        L_big = np.array([100.0, 700.0, 1e4])
        np.testing.assert_allclose(c.G_inv(c.G(L_big)), L_big, rtol=1e-12)
        tail = c.G_inv(c.G(2.0) - np.array([1e6, 1e9, 1e12]))
        assert np.all(np.isfinite(tail)) and np.all(tail > 0)
        np.testing.assert_allclose(tail * c.alpha * np.array([1e6, 1e9, 1e12]), 1.0, rtol=2e-5)
        assert c.G(0.0) == -np.inf and c.G_inv(-np.inf) == 0.0 and c.G_inv(np.inf) == np.inf


@pytest.mark.parametrize("key", sorted(CLOSED_FORM))
def test_G_prime_is_one_over_g(key: str) -> None:
    c = CLOSED_FORM[key]
    L = c.floor + np.array([0.05, 0.3, 1.0, 2.5, 7.0])
    h = 1e-6 * (L - c.floor)
    fd = (c.G(L + h) - c.G(L - h)) / (2 * h)
    np.testing.assert_allclose(fd, 1.0 / c.g(L), rtol=1e-6)


@pytest.mark.parametrize("key", sorted(CLOSED_FORM))
def test_dg_and_d2g_by_finite_differences(key: str) -> None:
    c = CLOSED_FORM[key]
    L = c.floor + np.array([0.05, 0.3, 1.0, 2.5, 7.0])
    h = 1e-5 * (L - c.floor)
    np.testing.assert_allclose((c.g(L + h) - c.g(L - h)) / (2 * h), c.dg(L), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(
        (c.dg(L + h) - c.dg(L - h)) / (2 * h), c.d2g(L), rtol=1e-5, atol=1e-9
    )


def test_g2_is_the_jensen_gap_closure() -> None:
    c = CrossEntropy(classes=10, alpha=1.5)
    L, s = np.array([0.2, np.log(2), 2.0]), 0.3
    np.testing.assert_allclose(c.g2(L, s), 1.5 * (c.g(L) / 1.5 + 0.5 * c.d2g(L) / 1.5 * s**2))
    gap = c.g2(L, s) - c.g(L)
    assert gap[0] > 0 and abs(gap[1]) < 1e-15 and gap[2] < 0  # accelerant below ln 2, brake above


def test_ce_early_slope_is_minus_alpha() -> None:
    c = CrossEntropy(classes=10, alpha=1.5)
    Phi = np.array([1.0, 5.0, 10.0])
    L = c.G_inv(c.G(50.0) - Phi)
    np.testing.assert_allclose((50.0 - L) / Phi, 1.5, rtol=1e-12)


def test_ce_tail_is_one_over_alpha_phi() -> None:
    c = CrossEntropy(classes=10, alpha=1.5)
    L = c.G_inv(c.G(np.log(10.0)) - 1e6)
    assert L * 1.5 * 1e6 == pytest.approx(1.0, abs=2e-5)
    assert L * 1.5 * 1e6 > 1.0  # theory §8: 1.00001 at Phi = 1e6


def test_bce_is_ce_with_alpha_one() -> None:
    L = np.logspace(-4, 1.5, 50)
    np.testing.assert_allclose(BCE().g(L), np.expm1(-L) ** 2, rtol=1e-15)
    np.testing.assert_allclose(BCE().G(L), CrossEntropy(classes=2, alpha=2.0).G(L) * 2.0)


def test_mse_from_torch_mse_and_scale() -> None:
    c = MSE.from_torch_mse(outputs=4)
    assert c.a == 0.25 and c.g(2.0) == pytest.approx(2.0)
    assert MSE(a=0.5).g(3.0) == pytest.approx(6.0)  # the original code's g = 2L


def test_smoothed_ce_linear_tail_and_floor() -> None:
    c = SmoothedCE(classes=10, epsilon=0.1)
    assert c.kappa == pytest.approx(2 * 0.1 * (1 - 0.1 + 0.01))
    L0 = c.floor + 2.0
    Phi = np.array([50.0, 60.0])
    x = c.G_inv(c.G(L0) - Phi) - c.floor
    # exponential approach: x(Phi + 10) / x(Phi) -> e^{-10 kappa} (up to O(b x) = 3e-5)
    assert x[1] / x[0] == pytest.approx(np.exp(-10 * c.kappa), rel=1e-4)
    # closed form: e^{b x} - 1 = (e^{b x0} - 1) e^{-kappa Phi}
    b = c.kappa / c.alpha
    np.testing.assert_allclose(
        np.expm1(b * x), np.expm1(b * 2.0) * np.exp(-c.kappa * Phi), rtol=1e-9
    )


def test_registry_names_and_instances() -> None:
    assert set(available_closures()) >= {
        "mse",
        "power",
        "mae",
        "ce",
        "bce",
        "smoothed_ce",
        "tabulated",
    }
    assert get_closure("ce", classes=3, alpha=1.6) == CrossEntropy(classes=3, alpha=1.6)
    inst = PowerFloor(k=1.5)
    assert get_closure(inst) is inst


def test_from_alpha_eff_clips_with_a_warning() -> None:
    assert CrossEntropy.from_alpha_eff(1.7, classes=10).alpha == 1.7
    with pytest.warns(UserWarning, match="alpha_eff=2.3"):
        assert CrossEntropy.from_alpha_eff(2.3, classes=10).alpha == 2.0
    with pytest.warns(UserWarning, match="clipped"):
        assert CrossEntropy.from_alpha_eff(1.0, classes=4).alpha == pytest.approx(4 / 3)


@pytest.mark.parametrize(
    ("name", "params", "field"),
    [
        ("ce", {"alpha": -1.0}, "alpha"),
        ("ce", {"classes": 10, "alpha": 1.05}, r"alpha must lie in \[C/\(C-1\), 2\]"),
        ("ce", {"classes": 10, "alpha": 2.5}, "alpha"),
        ("ce", {"classes": 1}, "classes"),
        ("ce", {"classes": 2.5}, "classes"),
        ("smoothed_ce", {"epsilon": 1.0}, "epsilon"),
        ("smoothed_ce", {"epsilon": -0.1}, "epsilon"),
        ("smoothed_ce", {"epsilon": 0.0}, "epsilon=0"),
        ("smoothed_ce", {"classes": 1}, "classes"),
        ("smoothed_ce", {"kappa": 1.5}, "kappa"),
        ("smoothed_ce", {"alpha": 3.0}, "alpha"),
        ("mse", {"a": 0.0}, "a must"),
        ("mse", {"floor": -1.0}, "floor"),
        ("mse", {"a": float("nan")}, "a must"),
        ("power", {"k": -0.5}, "k must"),
        ("power", {"c": 0.0}, "c must"),
        ("power", {"typo": 1.0}, "typo"),
        ("nope", {}, "closure='nope'"),
    ],
)
def test_bad_arguments_name_the_argument(name: str, params: dict[str, float], field: str) -> None:
    with pytest.raises(InvalidArgumentError, match=field):
        get_closure(name, **params)


def test_bad_alpha_eff_and_outputs() -> None:
    with pytest.raises(InvalidArgumentError, match="alpha_eff"):
        CrossEntropy.from_alpha_eff(-1.0, classes=10)
    with pytest.raises(InvalidArgumentError, match="outputs"):
        MSE.from_torch_mse(outputs=0)


def test_no_bracket_or_upper_says_which_closures_have_one() -> None:
    with pytest.raises(InvalidArgumentError, match="closures with one: bce, ce, mae, mse"):
        PowerFloor().bracket(1.0, 0.1)
    with pytest.raises(InvalidArgumentError, match="smoothed_ce"):
        PowerFloor().upper(1.0)


def test_closures_broadcast() -> None:
    c = CrossEntropy()
    L = np.linspace(0.1, 3, 12).reshape(3, 4)
    for f in (c.g, c.dg, c.d2g, c.G, c.upper):
        assert f(L).shape == (3, 4)
    lo, hi = c.bracket(L, np.array([0.1, 0.2, 0.3, 0.4]))
    assert lo.shape == hi.shape == (3, 4)


@pytest.mark.parametrize("key", [*sorted(CLOSED_FORM), "mae"])
def test_floor_and_extremes_without_warnings(key: str) -> None:
    c = CLOSED_FORM.get(key, MAE())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert c.g(c.floor) == 0.0 and c.g(c.floor - 1.0) == 0.0
        assert c.G(c.floor) == c.G_at_floor
        assert c.G_inv(c.G_at_floor) == c.floor and c.G_inv(-np.inf) == c.floor
        big = np.array([1e3, 1e6])
        assert np.all(np.isfinite(c.g(big))) and np.all(np.isfinite(c.dg(big)))
        assert np.all(np.isfinite(c.G(big)))
