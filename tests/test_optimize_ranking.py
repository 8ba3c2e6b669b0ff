"""optimize's ranking check on the earlier runs (lossrate.optimize._check.keep_earlier): a law
that orders the earlier runs as measured is trusted; one that misorders them by more than its
pick's predicted gain recommends the best earlier run's schedule instead."""

from __future__ import annotations

import json

import numpy as np
import pytest

import lossrate as lr
from lossrate import RunMeta, Schedule, Trajectory
from lossrate._model import RunData
from lossrate.baselines import get_baseline
from lossrate.optimize import WSD, optimize_schedule
from lossrate.optimize._check import EarlierCheck, keep_earlier, misranked

N = 2000
PEAK = 0.01
TRUTH = dict(L0=1.0, A=3.0, alpha=0.5, B=100.0, C=2.0, beta=0.6, gamma=0.5)
META = RunMeta(loss="ce", classes=10, name="synthetic")


def _run(schedule: Schedule, scale: float = 1.0, seed: int = 0, name: str = "synthetic") -> RunData:
    """A run whose loss follows the multi-power law TRUTH under ``schedule`` (times
    ``scale``: a seed that ends lower or higher, as real seeds do)."""
    steps = np.arange(10, schedule.n_steps + 1, 10)
    dummy = Trajectory.from_arrays(np.ones(3), step=[1, 2, 3], lr=[PEAK] * 3, meta=META)
    clean = get_baseline("multipower").curve(TRUTH, RunData(dummy, schedule), steps)
    noisy = scale * clean * np.exp(np.random.default_rng(seed).normal(0, 0.002, steps.size))
    meta = RunMeta(loss="ce", classes=10, name=name)
    t = Trajectory.from_arrays(noisy, step=steps, lr=schedule.lr[steps - 1], meta=meta)
    return RunData(t, schedule)


EARLIER = {
    "cosine": Schedule.cosine(PEAK, N),
    "wsd20": Schedule.wsd(PEAK, N, decay_start=1600),
    "wsd50": Schedule.wsd(PEAK, N, decay_start=1000),
}


@pytest.fixture(scope="module")
def fit():
    """The known law (multi-power) fitted to a whole WSD run (its decay identifies the gain)."""
    sched = Schedule.wsd(PEAK, N, decay_start=1000)
    return lr.fit(_run(sched, seed=5).traj, "multipower", schedule=sched, bootstrap=0)


def _check(name: str, law: float, real: float) -> EarlierCheck:
    return EarlierCheck(name, N - 1, law, real, PEAK, law, Schedule.constant(PEAK, N))


def test_misranked_is_the_largest_error_on_a_pair_the_law_orders_wrong() -> None:
    checks = (_check("a", 0.30, 0.24), _check("b", 0.29, 0.285), _check("c", 0.33, 0.33))
    margin, pair = misranked(checks, N, PEAK)
    # a vs b: the law says b lower by ln(.30/.29), the runs a lower by ln(.285/.24)
    assert margin == pytest.approx(np.log(0.285 / 0.24) + np.log(0.30 / 0.29))
    assert pair == ("a", "b")
    ordered = (_check("a", 0.28, 0.24), _check("b", 0.29, 0.285), _check("c", 0.33, 0.33))
    assert misranked(ordered, N, PEAK) == (0.0, None)
    # runs of another budget or peak are not compared
    other = (checks[0], EarlierCheck("b", 999, 0.29, 0.285, PEAK, 0.29, None))
    assert misranked(other, N, PEAK) == (0.0, None)


def test_keep_earlier_needs_a_gain_beyond_the_margin() -> None:
    checks = (_check("a", 0.30, 0.24), _check("b", 0.29, 0.285))
    margin = misranked(checks, N, PEAK)[0]
    kept, gain, m, _pair = keep_earlier(checks, lambda _s: 0.29, N, PEAK)
    assert kept is not None and kept.name == "a" and m == margin
    assert gain == pytest.approx(np.log(0.30 / 0.29))
    big = 0.30 * np.exp(-1.5 * margin)  # a pick the law puts beyond the margin
    assert keep_earlier(checks, lambda _s: big, N, PEAK)[0] is None


def test_a_law_that_orders_the_earlier_runs_right_keeps_its_pick(fit) -> None:
    earlier = {k: _run(s, seed=i, name=k) for i, (k, s) in enumerate(EARLIER.items())}
    res = optimize_schedule(fit, N, WSD(("linear",)), earlier=earlier)
    assert res.kept is None and res.kept_margin == 0.0
    assert res.recommended is res.best.schedule
    laws = {c.name: c.law for c in res.checks}
    assert set(laws) == set(EARLIER) and all(np.isfinite(v) for v in laws.values())
    assert not any("against the losses" in n for n in res.notes)
    assert any("stands" in n for n in res.notes)


def test_a_misordered_earlier_run_is_kept_with_its_schedule(fit) -> None:
    # the law ranks wsd20 < wsd50 < cosine at this budget; a seed that ends 20 % lower
    # makes the cosine run the best measured, against the law
    scale = {"cosine": 0.8, "wsd20": 1.0, "wsd50": 1.0}
    earlier = {k: _run(s, scale[k], seed=i, name=k) for i, (k, s) in enumerate(EARLIER.items())}
    res = optimize_schedule(fit, N, WSD(("linear",)), earlier=earlier)
    assert res.kept is not None and res.kept.name == "cosine"
    assert res.kept_margin > 0.1
    np.testing.assert_array_equal(res.recommended.lr, EARLIER["cosine"].lr)
    assert "keep the schedule of the earlier run cosine" in res.report()
    assert res.to_dict()["kept_earlier_run"] == "cosine"
    assert any("against the losses" in n for n in res.notes)


def test_the_cli_writes_the_kept_schedule_as_the_recommendation(tmp_path, capsys) -> None:
    from lossrate.cli import main

    scale = {"cosine": 0.8, "wsd20": 1.0, "wsd50": 1.0}
    runs = tmp_path / "earlier"
    for i, (k, s) in enumerate(EARLIER.items()):
        (runs / k).mkdir(parents=True)
        _run(s, scale[k], seed=i, name=k).traj.write(runs / k / "trajectory.csv")
    log = tmp_path / "run.csv"
    wsd = Schedule.wsd(PEAK, N, decay_start=1000)
    _run(wsd, seed=5).traj.write(log)
    out = tmp_path / "plan" / "schedule.csv"
    argv = ["optimize", str(log), "--steps", str(N), "--model", "multipower", "--bootstrap", "0"]
    code = main([*argv, "--prior", str(runs), "--family", "wsd", "--out", str(out), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["kept_earlier_run"] == "cosine"
    # OUT is the run's schedule to train with: the kept one; the law's pick lies beside it
    kept, logged = Schedule.read(out), np.arange(10, N + 1, 10)  # rebuilt from the run's log
    np.testing.assert_allclose(kept.at(logged), EARLIER["cosine"].lr[logged - 1], rtol=1e-9)
    assert Schedule.read(out.with_suffix(".wsd.csv")).n_steps == N
    assert data["files"]["kept from cosine"] == str(out)
