"""Per-sample and batch bounds behind the closures, and the constants of theory §8
(theory §2, §7 items 5 and 6)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lossrate import InvalidArgumentError
from lossrate.closures import (
    BCE,
    MAE,
    MSE,
    MU,
    X_STAR,
    CrossEntropy,
    D,
    Dhat,
    SmoothedCE,
    bce_per_sample,
    ce_per_sample,
    d2D,
    smoothed_entropy,
    smoothed_targets,
    soft_ce_per_sample,
)

GRID = np.concatenate([np.linspace(0.0, 5.0, 200_001), np.linspace(5.0, 60.0, 20_001)])


# ---- constants (theory §2, §8) ------------------------------------------------------------


def test_x_star_and_mu() -> None:
    assert X_STAR == pytest.approx(1.256431, abs=5e-7)
    assert MU == pytest.approx(0.4072644, abs=5e-8)
    assert abs(np.expm1(X_STAR) - 2 * X_STAR) < 1e-15
    assert MU == pytest.approx(float(np.max(D(GRID[1:]) / GRID[1:])), rel=1e-9)  # sup D/l


def test_dhat_is_the_least_concave_majorant_below_tanh() -> None:
    Dh = Dhat(GRID)
    assert np.all(Dh >= D(GRID))
    assert np.max(Dh - np.tanh(GRID / 2)) <= 1e-15
    even = np.linspace(0.0, 20.0, 200_001)
    assert np.all(np.diff(Dhat(even), 2) <= 1e-15)  # concave, up to rounding of O(1) values
    assert Dhat(X_STAR) == pytest.approx(float(D(X_STAR)), rel=1e-15)  # continuous at x*
    assert np.all(Dh[GRID > X_STAR] == D(GRID[GRID > X_STAR]))  # touches D beyond x*


def test_D_second_derivative_range_and_sign_change() -> None:
    d2 = d2D(GRID)
    assert d2.min() == pytest.approx(-0.25, abs=1e-10) and d2.max() == pytest.approx(2.0)
    assert d2D(np.log(4)) == pytest.approx(-0.25, rel=1e-15)  # the minimum
    assert np.all(d2 >= -0.25) and np.all(d2 <= 2.0)
    assert d2D(np.log(2)) == pytest.approx(0.0, abs=1e-16)
    assert d2D(np.log(2) - 1e-9) > 0 > d2D(np.log(2) + 1e-9)
    assert np.all(D(GRID) <= GRID**2)


# ---- per-sample bounds (property tests) ---------------------------------------------------


def _logits(seed: int, n: int, classes: int, scale: float) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, classes)) * scale


@settings(max_examples=300, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    classes=st.integers(2, 50),
    scale=st.floats(1e-3, 30.0),
)
def test_ce_per_sample_bounds(seed: int, classes: int, scale: float) -> None:
    z = _logits(seed, 16, classes, scale)
    y = np.random.default_rng(seed + 1).integers(0, classes, 16)
    loss, r_sq = ce_per_sample(z, y)
    d = D(loss)
    assert np.all(classes / (classes - 1) * d <= r_sq * (1 + 1e-8))
    assert np.all(r_sq <= 2 * d * (1 + 1e-8))


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), scale=st.floats(1e-3, 40.0))
def test_bce_gradient_is_exactly_one_minus_exp_minus_loss(seed: int, scale: float) -> None:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=64) * scale
    t = rng.integers(0, 2, 64).astype(float)
    loss, r_sq = bce_per_sample(z, t)
    np.testing.assert_allclose(r_sq, D(loss), rtol=4e-15, atol=3e-16)


@settings(max_examples=200, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    classes=st.integers(2, 50),
    scale=st.floats(1e-2, 30.0),
    concentration=st.floats(0.05, 20.0),
)
def test_soft_target_bounds(seed: int, classes: int, scale: float, concentration: float) -> None:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(16, classes)) * scale
    q = rng.dirichlet(np.full(classes, concentration), size=16)
    q = q / q.sum(axis=1, keepdims=True)
    _, r_sq, kl = soft_ce_per_sample(z, q)
    p_min = np.exp(z - z.max(axis=1, keepdims=True))
    p_min = (p_min / p_min.sum(axis=1, keepdims=True)).min(axis=1)
    upper = np.minimum(kl, -2 * np.expm1(-kl))
    assert np.all(r_sq <= upper * (1 + 1e-9) + 1e-13)
    assert np.all(r_sq >= p_min * kl * (1 - 1e-9) - 1e-13)


def test_ce_per_sample_is_stable_for_confident_logits() -> None:
    z = np.array([[40.0, 0.0, -3.0], [0.0, 0.0, 0.0]])
    loss, r_sq = ce_per_sample(z, np.array([0, 2]))
    assert loss[0] > 0 and r_sq[0] > 0  # naive 1 - p_y gives 0
    assert loss[1] == pytest.approx(np.log(3))
    assert r_sq[1] == pytest.approx((2 / 3) ** 2 + 2 / 9)


# ---- smoothed CE --------------------------------------------------------------------------


@pytest.mark.parametrize(("classes", "eps"), [(2, 0.05), (10, 0.1), (100, 0.3), (7, 0.9)])
def test_smoothed_floor_is_the_target_entropy(classes: int, eps: float) -> None:
    q = smoothed_targets(np.array([0, classes - 1]), classes, eps)
    H = -(q * np.log(q)).sum(axis=1)
    assert smoothed_entropy(classes, eps) == pytest.approx(H[0], rel=1e-14)
    c = SmoothedCE(classes=classes, epsilon=eps)
    assert c.floor == pytest.approx(H[1], rel=1e-14)
    # the loss at p = q is the floor, and no logits go below it
    loss, _, _ = soft_ce_per_sample(np.log(q), q)
    np.testing.assert_allclose(loss, c.floor, rtol=1e-14)
    z = np.random.default_rng(0).normal(size=(200, classes)) * 5
    loss, _, _ = soft_ce_per_sample(z, smoothed_targets(np.zeros(200, int), classes, eps))
    assert np.all(loss >= c.floor - 1e-12)


@settings(max_examples=200, deadline=None)
@given(
    classes=st.integers(2, 100),
    eps=st.floats(1e-3, 0.99),
    alpha=st.floats(1e-3, 2.0),
    kappa=st.floats(1e-3, 1.0) | st.none(),
)
def test_smoothed_model_never_exceeds_the_rigorous_upper_bound(
    classes: int, eps: float, alpha: float, kappa: float | None
) -> None:
    c = SmoothedCE(classes=classes, epsilon=eps, alpha=alpha, kappa=kappa)
    L = c.floor + np.concatenate([[0.0], np.logspace(-8, 2, 400)])
    assert np.all(c.g(L) <= c.upper(L) * (1 + 1e-12))


@pytest.mark.parametrize(("classes", "eps"), [(10, 0.1), (3, 0.3), (50, 0.05)])
def test_default_kappa_is_the_local_slope_on_the_symmetric_path(classes: int, eps: float) -> None:
    c = SmoothedCE(classes=classes, epsilon=eps)
    qy = 1 - eps + eps / classes
    p = np.full((1, classes), (1 - (qy - 1e-5)) / (classes - 1))
    p[0, 0] = qy - 1e-5  # wrong classes tied, close to the target
    _, r_sq, kl = soft_ce_per_sample(np.log(p), smoothed_targets(np.array([0]), classes, eps))
    assert r_sq[0] / kl[0] == pytest.approx(c.kappa, rel=1e-3)
    assert 2 * eps / classes <= c.kappa <= min(1.0, 2 * qy)


# ---- batch bracket (theory §2.4 item 3) ---------------------------------------------------


def _random_ce_batches(count: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        n = int(rng.integers(1, 65))
        C = int(rng.integers(2, 51))
        scale = float(10 ** rng.uniform(-2, 1.5))
        z = rng.normal(size=(n, C)) * scale
        if rng.random() < 0.5:  # a trained-looking batch: logit bonus on the label
            y = rng.integers(0, C, n)
            z[np.arange(n), y] += rng.uniform(0, 20) * rng.random(n)
        else:
            y = rng.integers(0, C, n)
        yield C, *ce_per_sample(z, y)


def test_ce_batch_bracket_holds_on_random_batches() -> None:
    ratios = []
    for C, loss, r_sq in _random_ce_batches(3000):
        L, sigma, R = loss.mean(), loss.std(), r_sq.mean()
        c = CrossEntropy(classes=C, alpha=2.0)
        lo, hi = c.bracket(L, sigma, loss.max())
        lo_free, _ = c.bracket(L, sigma)
        assert lo_free <= lo * (1 + 1e-12)
        assert lo <= R * (1 + 1e-9) + 1e-300
        assert R <= hi * (1 + 1e-9)
        assert R <= c.upper(L) * (1 + 1e-9)
        ratios.append(R / D(L))
    assert min(ratios) < 1.2 and max(ratios) > 2.5  # the mean-field ratio really does vary


def test_bce_batch_bracket_holds_on_random_batches() -> None:
    rng = np.random.default_rng(1)
    for _ in range(2000):
        n = int(rng.integers(1, 200))
        z = rng.normal(size=n) * 10 ** rng.uniform(-2, 1.5) + rng.normal() * 5
        loss, r_sq = bce_per_sample(z, rng.integers(0, 2, n).astype(float))
        L, sigma, R = loss.mean(), loss.std(), r_sq.mean()
        lo, hi = BCE().bracket(L, sigma, loss.max())
        assert lo <= R * (1 + 1e-9) and R <= hi * (1 + 1e-9)
        assert R <= MU * L * (1 + 1e-12)  # the sigma-free linear bound


def test_mae_and_mse_brackets() -> None:
    rng = np.random.default_rng(2)
    for _ in range(2000):
        n = int(rng.integers(1, 100))
        loss = np.abs(rng.normal(size=n)) * (rng.random(n) < rng.random())  # some fitted
        R = (loss > 0).mean()
        lo, hi = MAE().bracket(loss.mean(), loss.std(), loss.max())
        assert lo <= R * (1 + 1e-12) and R <= hi
    lo, hi = MSE(a=0.5, floor=0.1).bracket(np.array([0.5, 2.0]), 0.3)
    np.testing.assert_allclose(lo, [1.0, 4.0])
    np.testing.assert_allclose(hi, lo)


def test_two_point_law_attains_the_first_lower_term_and_is_never_beaten() -> None:
    rng = np.random.default_rng(3)
    L = 10 ** rng.uniform(-3, 1.5, 20_000)
    sigma = L * 10 ** rng.uniform(-2, 1.5, 20_000)
    kappa = L**2 / (L**2 + sigma**2)
    x = L / kappa  # two-point law on {0, x} with P(x) = kappa has mean L and std sigma
    mean_q = kappa * -np.expm1(-x)
    bound = kappa * -np.expm1(-L / kappa)
    np.testing.assert_allclose(mean_q, bound, rtol=1e-14)
    lo, _ = BCE().bracket(L, sigma)
    np.testing.assert_allclose(lo, bound**2, rtol=1e-13)
    # random discrete laws: mean(1 - e^{-l}) >= kappa (1 - e^{-L/kappa})
    for _ in range(20_000 // 50):
        ls = rng.exponential(size=(50, 8)) * 10 ** rng.uniform(-2, 1, (50, 1))
        w = rng.dirichlet(np.ones(8), size=50)
        Lm = (w * ls).sum(axis=1)
        var = (w * (ls - Lm[:, None]) ** 2).sum(axis=1)
        k = Lm**2 / (Lm**2 + var)
        assert np.all((w * -np.expm1(-ls)).sum(axis=1) >= k * -np.expm1(-Lm / k) * (1 - 1e-12))


def test_delta_method_remainder_and_bhatia_davis() -> None:
    rng = np.random.default_rng(4)
    for _ in range(2000):
        n = int(rng.integers(2, 64))
        loss = rng.gamma(rng.uniform(0.2, 5), 10 ** rng.uniform(-2, 0.5), n)
        L, s2 = loss.mean(), loss.var()
        remainder = abs(D(loss).mean() - D(L) - 0.5 * d2D(L) * s2)
        assert remainder <= (np.abs(loss - L) ** 3).mean() * (1 + 1e-9) + 1e-15
        assert s2 <= (loss.max() - L) * (L - loss.min()) * (1 + 1e-12) + 1e-300


def test_g2_tracks_R_better_than_mean_field_on_spread_batches() -> None:
    c = BCE()
    rng = np.random.default_rng(5)
    loss = rng.gamma(0.5, 0.1, 4096)  # small losses, CV ~ 1.4
    R = D(loss).mean()
    assert abs(c.g2(loss.mean(), loss.std()) / R - 1) < abs(c.g(loss.mean()) / R - 1) / 3


def test_bracket_rejects_bad_batch_statistics() -> None:
    with pytest.raises(InvalidArgumentError, match="sigma"):
        CrossEntropy().bracket(1.0, -0.1)
    with pytest.raises(InvalidArgumentError, match="loss_max"):
        CrossEntropy().bracket(1.0, 0.1, loss_max=0.5)
    with pytest.raises(InvalidArgumentError, match="L >= 0"):
        MAE().bracket(-1.0, 0.1)
    lo, hi = CrossEntropy().bracket(0.0, 0.0)
    assert lo == 0.0 and hi == 0.0
