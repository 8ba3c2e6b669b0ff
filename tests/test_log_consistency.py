"""Answers that never contradict the log: floors, targets the log reached, what-if decays,
and the caveats in the text a person reads (regressions of issue 14's list)."""

from __future__ import annotations

import numpy as np
import pytest

from lossrate import RunMeta, Schedule, Trajectory
from lossrate.cli import main
from lossrate.fit import fit, predict
from lossrate.metrics import smoothed
from lossrate.report.analysis import analyze
from test_report import synthetic_run


def _accelerating_run() -> Trajectory:
    """A run whose loss slows down early, then falls faster (a net memorising its data): a
    law fitted on the first 30 % puts its floor above where the run went."""
    steps = np.arange(1, 1001)
    slow = 0.5 + 2.0 * (steps / 10.0) ** -0.7
    late = np.where(steps > 400, np.exp(-(steps - 400) / 200.0), 1.0)
    loss = 0.02 + (slow - 0.02) * late
    noisy = loss * np.exp(np.random.default_rng(0).normal(0, 0.01, steps.size))
    meta = RunMeta(loss="ce", classes=10, name="accelerating")
    return Trajectory.from_arrays(noisy, step=steps, lr=np.full(steps.size, 0.1), meta=meta)


def test_a_floor_above_losses_the_log_reached_is_capped_and_said() -> None:
    traj = _accelerating_run()
    a = analyze(traj, model="power_S", until=0.3, bootstrap=0)
    lowest = float(np.min(smoothed(traj.loss)))
    h = a.headline
    assert h.floor_model is not None and h.floor_model > lowest
    assert h.floor == pytest.approx(lowest)
    assert "does not fit the later run" in a.text()


def test_a_target_the_log_already_reached_is_read_from_the_log() -> None:
    traj = _accelerating_run()
    target = 0.5
    a = analyze(traj, model="power_S", until=0.3, target=target, joules_per_step=2.0, bootstrap=0)
    hit = int(traj.step[np.flatnonzero(smoothed(traj.loss) <= target)[0]])
    h = a.headline
    assert h.target_source == "log"
    assert h.steps_to_target == hit - int(traj.step[0])
    assert h.time_to_target == pytest.approx(0.1 * (hit - int(traj.step[0])))
    assert h.energy_to_target_j == pytest.approx(2.0 * h.steps_to_target)
    assert "read from the log" in a.text()
    # reached after the fitted steps: the fit's own crossing is given beside it, the first
    # step where the prediction (the schedule's lr, 0.1, continued) is at or below the target
    cut = int(traj.prefix(0.3).step[-1])
    assert hit > cut
    steps = np.arange(cut + 1, 200_001)  # the law's floor, 0.497, lies just under the target
    curve = predict(a.fit, steps, schedule=Schedule.constant(0.1, 200_001)).loss
    first = int(steps[np.flatnonzero(curve <= target)[0]])
    assert h.predicted_steps_to_target == first - int(traj.step[0])
    assert f"predicted from the fitted steps: {first - 1:,} steps" in a.text()
    assert a.headline.to_dict()["predicted_steps_to_target"] == first - 1
    # a target reached inside the fitted steps is only read from the log
    early = analyze(traj, model="power_S", until=0.3, target=1.5, bootstrap=0).headline
    assert early.target_source == "log" and early.predicted_steps_to_target is None


def test_a_what_if_decay_never_predicts_a_higher_loss_than_no_decay() -> None:
    traj = synthetic_run()  # constant lr 0.05, 400 steps
    f = fit(traj.prefix(0.5), "ode", bootstrap=0)
    steps = np.arange(0, 601)
    flat = predict(f, steps, schedule=Schedule.constant(0.05, 601))
    decay = predict(f, steps, schedule=Schedule.wsd(0.05, 601, decay_start=300))
    assert np.all(decay.loss <= flat.loss * (1 + 1e-12))
    # gradient flow alone would predict more (less lr sum): the warnings say what was done
    assert any("no term for a decay's gain" in w for w in decay.warnings)
    assert any("not identified" in w for w in decay.warnings)
    assert not any("not identified" in w for w in flat.warnings)


def test_the_decay_caveat_is_in_the_text_output(tmp_path, capsys) -> None:
    path = tmp_path / "constant.csv"
    synthetic_run().write(path)
    code = main(
        [
            "predict",
            str(path),
            "--schedule",
            "wsd",
            "--decay-start",
            "450",
            "--steps",
            "600",
            "--model",
            "ode",
            "-q",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "not identified" in out and "warning:" in out


def test_an_unidentified_decay_gain_keeps_the_no_decay_curve_not_a_collapse() -> None:
    """ode_relax fitted on a constant-lr log put all of the loss into its drop term and
    predicted 1e-10 after a WSD decay (issue 14: 1e-8 where the real run ended at 0.008).
    Its drop is now bounded (at most 75 % of the excess over the floor), but a gain the
    fitted steps do not identify is still only a guess: the point keeps the no-decay curve
    and the guess is the interval's lower edge."""
    traj = synthetic_run()  # constant lr 0.05, 400 steps, loss 2.3 -> 0.04
    f = fit(traj, "ode_relax", bootstrap=0)
    steps = np.arange(0, 1501)
    flat = predict(f, steps, schedule=Schedule.constant(0.05, 1501))
    decay = predict(f, steps, schedule=Schedule.wsd(0.05, 1501, decay_start=1200))
    guess = f.model.curve(
        f.theta(), f.runs[0].with_schedule(Schedule.wsd(0.05, 1501, decay_start=1200)), steps[-1:]
    )
    assert guess[-1] < 0.5 * flat.loss[-1]  # the law's own guess: an unidentified large drop
    np.testing.assert_allclose(decay.loss, flat.loss, rtol=1e-12)  # the point keeps no decay
    assert decay.lower[-1] <= guess[-1] * (1 + 1e-9)  # the guess is the lower edge
    assert decay.upper[-1] == pytest.approx(flat.upper[-1], rel=1e-12)
    assert any("not identified" in w for w in decay.warnings)
    assert any("keeps the no-decay curve" in w for w in decay.warnings)


def test_a_what_if_from_step_0_is_another_run_and_is_not_clamped() -> None:
    """A cosine from step 0 has less lr sum than the constant run it is compared with and
    may end higher (MNIST, SGD: 0.322 with cosine vs 0.248 constant); the "a decay never
    raises the loss" rule holds only for a what-if that continues the fitted run."""
    traj = synthetic_run()  # constant lr 0.05, 400 steps
    f = fit(traj.prefix(0.5), "power_S", bootstrap=0)
    steps = np.arange(0, 801)
    flat = predict(f, steps, schedule=Schedule.constant(0.05, 801))
    other = predict(f, steps, schedule=Schedule.cosine(0.05, 801))
    assert other.loss[-1] > flat.loss[-1] * 1.01  # a law in the lr sum: less sum, higher loss
    assert not any("no-decay" in w for w in other.warnings)
    going_on = predict(f, steps, schedule=Schedule.wsd(0.05, 801, decay_start=300))
    assert np.all(going_on.loss <= flat.loss * (1 + 1e-12))  # a continuation is still clamped
