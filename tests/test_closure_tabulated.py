"""Tabulated closures: G and G^{-1} from a quadrature table against the closed forms."""

from __future__ import annotations

import numpy as np
import pytest

from lossrate import InvalidArgumentError
from lossrate.closures import (
    MSE,
    Closure,
    CrossEntropy,
    PowerFloor,
    SmoothedCE,
    Tabulated,
    get_closure,
)

CASES: dict[str, Closure] = {
    "ce": CrossEntropy(classes=10, alpha=1.5),
    "mse_floor": MSE(a=0.5, floor=0.1),
    "power_k3.5": PowerFloor(c=2.0, k=3.5, floor=0.2),
    "smoothed_ce": SmoothedCE(classes=10, epsilon=0.1),
}


@pytest.mark.parametrize("key", sorted(CASES))
def test_table_matches_closed_form(key: str) -> None:
    c = CASES[key]
    t = Tabulated.of(c)
    L = c.floor + np.logspace(-8, 2, 2001)
    top = c.floor + 100.0
    # G up to its constant: differences from the top of the table
    np.testing.assert_allclose(t.G(L[:-50]) - t.G(top), c.G(L[:-50]) - c.G(top), rtol=1e-6)
    # solutions L(Phi) = G^{-1}(G(L0) - Phi) over the whole table
    L0 = c.floor + 10.0
    Phi = c.G(L0) - c.G(L[L < L0])
    np.testing.assert_allclose(t.G_inv(t.G(L0) - Phi), L[L < L0], rtol=1e-6)
    np.testing.assert_allclose(t.G_inv(t.G(L)), L, rtol=1e-6)


def test_table_derivatives_fall_back_to_finite_differences() -> None:
    c = CrossEntropy()
    t = Tabulated(func=c.g)
    L = np.array([0.01, 0.5, 3.0])
    np.testing.assert_allclose(t.dg(L), c.dg(L), rtol=1e-7)
    np.testing.assert_allclose(t.d2g(L), c.d2g(L), rtol=1e-4)
    np.testing.assert_allclose(Tabulated.of(c).d2g(L), c.d2g(L), rtol=1e-15)


def test_registered_with_a_callable() -> None:
    t = get_closure("tabulated", func=lambda L: 2.0 * L, x_max=10.0)
    assert t.G_inv(t.G(3.0) - np.log(2.0) / 2.0) == pytest.approx(1.5, rel=1e-9)
    assert t.G_at_floor == -np.inf


def test_outside_the_table_is_an_error() -> None:
    t = Tabulated.of(CrossEntropy(), x_min=1e-4, x_max=20.0)
    with pytest.raises(InvalidArgumentError, match="widen x_min/x_max"):
        t.G(1e-5)
    with pytest.raises(InvalidArgumentError, match="widen x_min/x_max"):
        t.G(25.0)
    with pytest.raises(InvalidArgumentError, match="Lower x_min"):
        t.G_inv(t.G(1.0) - 1e6)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"func": 3.0}, "func must be a callable"),
        ({"func": lambda L: 1.0 - L}, "positive and finite"),
        ({"func": lambda L: 1.0}, "vectorised"),
        ({"func": np.exp, "x_min": 0.0}, "x_min"),
        ({"func": np.exp, "x_min": 1.0, "x_max": 0.5}, "x_max"),
        ({"func": np.exp, "points": 3}, "points"),
        ({"func": np.exp, "dfunc": "no"}, "dfunc"),
    ],
)
def test_bad_table_arguments(params: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        Tabulated(**params)  # type: ignore[arg-type]
