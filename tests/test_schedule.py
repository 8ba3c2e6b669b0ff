"""Schedule shapes and intrinsic time S = sum of learning rates."""

from __future__ import annotations

import numpy as np
import pytest

from lossrate import InvalidArgumentError, Schedule


def test_constant_with_warmup_and_cumulative_sum() -> None:
    s = Schedule.constant(0.3, 10, warmup=3)
    np.testing.assert_allclose(s.lr, [0.1, 0.2, 0.3] + [0.3] * 7)
    np.testing.assert_allclose(s.S([0, 1, 3, 10]), [0.0, 0.1, 0.6, 0.6 + 2.1])


def test_cosine_endpoints() -> None:
    s = Schedule.cosine(1.0, 101, final=0.1)
    assert s.lr[0] == pytest.approx(1.0)
    assert s.lr[50] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * 50 / 101)))
    assert s.lr[-1] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * 100 / 101)))


@pytest.mark.parametrize("decay", ["linear", "geometric"])
def test_wsd_is_flat_then_decays_to_final(decay: str) -> None:
    s = Schedule.wsd(1.0, 100, decay_start=80, final=0.01, decay=decay)
    assert np.all(s.lr[:80] == 1.0)
    assert np.all(np.diff(s.lr[80:]) < 0)
    mid = s.lr[90]
    assert mid == pytest.approx(0.505 if decay == "linear" else 0.1)


def test_step_schedule() -> None:
    s = Schedule.make("step", peak=1.0, n_steps=10, milestones=[3, 6], factor=0.5)
    np.testing.assert_allclose(s.lr, [1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25])


def test_from_logged_interpolates_and_extend() -> None:
    s = Schedule.from_logged([0, 10], [1.0, 0.0])
    np.testing.assert_allclose(s.lr[:11], np.linspace(1, 0, 11))
    assert len(s.extend(20)) == 20 and s.extend(20).lr[-1] == 0.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(shape="triangle", peak=1, n_steps=5), "shape"),
        (dict(shape="constant", peak=-1, n_steps=5), "peak"),
        (dict(shape="constant", peak=1, n_steps=0), "n_steps"),
        (dict(shape="constant", peak=1, n_steps=5, warmup=5), "warmup"),
        (dict(shape="wsd", peak=1, n_steps=5), "decay_start"),
        (dict(shape="wsd", peak=1, n_steps=5, decay_start=9), "decay_start"),
        (dict(shape="wsd", peak=1, n_steps=5, decay_start=2, decay="cubic"), "decay"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        Schedule.make(**kwargs)


def test_steps_out_of_range() -> None:
    with pytest.raises(InvalidArgumentError, match="extend"):
        Schedule.constant(1.0, 5).S([6])


def test_held_from_keeps_the_lr_up_to_a_step_and_holds_it_after() -> None:
    from lossrate.schedule import decays_after_peak

    wsd = Schedule.wsd(0.1, 100, decay_start=60)
    flat = wsd.held_from(70)
    assert flat.n_steps == 100 and np.array_equal(flat.lr[:71], wsd.lr[:71])
    assert np.all(flat.lr[71:] == wsd.lr[70])
    assert np.all(wsd.held_from(30, 0.05).lr[31:] == 0.05)
    assert decays_after_peak(wsd.lr) and not decays_after_peak(flat.lr[:60])
    assert not decays_after_peak(Schedule.constant(0.1, 50, warmup=10).lr)
