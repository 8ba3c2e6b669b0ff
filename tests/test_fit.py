"""The fitting engine: parameter recovery, interval coverage, extrapolation, joint fits,
priors, prediction and bad input. Synthetic curves come from the core solver with noise."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pytest

from lossrate import DataError, InvalidArgumentError, RunMeta, Schedule, Trajectory
from lossrate._model import CurveModel, Param, RunData
from lossrate.closures import get_closure
from lossrate.fit import fit, fit_many, predict
from lossrate.rates.schedule import ScheduleRate
from lossrate.solve import solve


class PowerInS(CurveModel):
    """A 3-parameter toy law L = L_inf + A (1 + S)^-a with bounds far from the truth."""

    name = "toy"

    def params(self, run: RunData) -> Sequence[Param]:
        return (Param("A", 1e-3, 1e3, "log"), Param("a", 0.01, 3.0), Param("L_inf", 0.0, 5.0))

    def guesses(self, run: RunData) -> Sequence[Mapping[str, float]]:
        return ({"A": 1.0, "a": 0.5, "L_inf": 0.5 * float(run.traj.loss.min())},)

    def curve(self, theta: Mapping[str, float], run: RunData, steps: np.ndarray) -> np.ndarray:
        S = run.schedule.S(steps)
        return theta["L_inf"] + theta["A"] * (1.0 + S) ** (-theta["a"])


TOY = {"A": 2.0, "a": 0.6, "L_inf": 0.8}


def toy_run(
    seed: int, n: int = 200, sd: float = 0.01, name: str = "toy"
) -> tuple[Trajectory, Schedule]:
    sch = Schedule.constant(0.5, n + 1)
    steps = np.arange(1, n + 1)
    run = RunData(Trajectory.from_arrays(np.ones(n), step=steps, lr=sch.lr[steps]), sch)
    clean = PowerInS().curve(TOY, run, steps)
    y = clean * np.exp(np.random.default_rng(seed).normal(0.0, sd, n))
    return Trajectory.from_arrays(y, step=steps, lr=sch.lr[steps], meta=RunMeta(name=name)), sch


# ------------------------------------------------------------- synthetic ODE curves
RHO0, S0, BETA, K, FLOOR, L0 = 0.9, 2.0, 0.6, 2.0, 0.5, 3.0


def ode_curve(schedule: Schedule, steps: np.ndarray) -> np.ndarray:
    """Gradient flow with g = (L - 0.5)^2 and rho = 0.9 (1 + S/2)^-0.6, by the core solver."""
    closure = get_closure("power", c=1.0, k=K, floor=FLOOR)
    rate = ScheduleRate(schedule, RHO0, S0, BETA)
    return solve(closure, rate, L0, steps.astype(float), t0=float(steps[0])).loss


def ode_truth(S_ref: float = 1.0) -> dict[str, float]:
    return {
        "rho_ref": RHO0 * (1 + S_ref / S0) ** (-BETA),
        "S0": S0,
        "beta": BETA,
        "L_inf": FLOOR,
        "L0": L0,
        "k": K,
    }


def ode_run(seed: int, n: int = 400, sd: float = 0.005, schedule: Schedule | None = None):
    sch = schedule or Schedule.cosine(0.05, n + 1, final=0.005, warmup=10)
    steps = np.arange(10, n + 1)
    y = ode_curve(sch, steps) * np.exp(np.random.default_rng(seed).normal(0.0, sd, steps.size))
    meta = RunMeta(loss="power", name=f"ode{seed}")
    return Trajectory.from_arrays(y, step=steps, lr=sch.lr[steps], meta=meta), sch


# ------------------------------------------------------------- recovery and intervals
def test_recovers_toy_parameters_within_intervals() -> None:
    traj, sch = toy_run(0)
    res = fit(traj, PowerInS(), schedule=sch, bootstrap=100)
    assert res.success, res.message
    for name, true in TOY.items():
        lo, hi = res.ci[name]
        assert lo <= true <= hi, (name, true, res.ci[name])
        assert res.params[name] == pytest.approx(true, rel=0.1)
    assert res.samples is not None and res.samples.shape[1] == 3
    assert res.metrics["durbin_watson"] == pytest.approx(2.0, abs=0.4)
    assert res.noise_sd["toy"] == pytest.approx(0.01, rel=0.25)


@pytest.mark.parametrize("bootstrap", [60, 0])
def test_interval_coverage_over_seeds(bootstrap: int) -> None:
    """The 90 % interval of every parameter covers the truth in 75-100 % of 40 seeds."""
    hits = dict.fromkeys(TOY, 0)
    for seed in range(40):
        traj, sch = toy_run(seed, n=120, sd=0.02)
        res = fit(traj, PowerInS(), schedule=sch, bootstrap=bootstrap, seed=seed)
        for name, true in TOY.items():
            lo, hi = res.ci[name]
            hits[name] += lo <= true <= hi
    for name, h in hits.items():
        assert 30 <= h <= 40, (name, h)


def test_block_bootstrap_widens_intervals_for_autocorrelated_noise() -> None:
    """AR(1) noise (rho = 0.8): the block bootstrap picks blocks > 1 and its interval is wider
    than the i.i.d. Gauss-Newton one would be without the autocorrelation inflation."""
    n = 300
    sch = Schedule.constant(0.5, n + 1)
    steps = np.arange(1, n + 1)
    run = RunData(Trajectory.from_arrays(np.ones(n), step=steps, lr=sch.lr[steps]), sch)
    rng = np.random.default_rng(1)
    e = np.zeros(n)
    for i in range(1, n):
        e[i] = 0.8 * e[i - 1] + rng.normal(0, 0.01)
    y = PowerInS().curve(TOY, run, steps) * np.exp(e)
    traj = Trajectory.from_arrays(y, step=steps, lr=sch.lr[steps])
    res = fit(traj, PowerInS(), schedule=sch, bootstrap=100)
    assert res.metrics["lag1_autocorr"] > 0.5
    assert any("block length" in n and "block length 1)" not in n for n in res.notes)


def test_intervals_do_not_depend_on_the_machine_speed(monkeypatch) -> None:
    """Refit or linearised bootstrap is chosen from the model's cost estimate, not a timing:
    the same data and seed give the same intervals when every clock reading is a minute
    later than the last (a loaded machine)."""
    import time

    traj, sch = ode_run(0, n=300)
    first = fit(traj, "ode", schedule=sch, bootstrap=30, seed=3)
    clock = iter(np.arange(1e6, 1e9, 60.0))
    monkeypatch.setattr(time, "perf_counter", lambda: float(next(clock)))
    again = fit(traj, "ode", schedule=sch, bootstrap=30, seed=3)
    assert again.ci == first.ci
    assert [n for n in again.notes if "bootstrap" in n] == [
        n for n in first.notes if "bootstrap" in n
    ]


def test_model_cost_estimates_grow_with_the_work() -> None:
    """eval_seconds: a drop sum over every lr change of a cosine costs more than a closed
    form, and more points cost more."""
    from lossrate.fitting.registry import get_model

    traj, sch = ode_run(0, n=300)
    run = RunData(traj, sch)
    closed = get_model("power_steps").eval_seconds(run, 300)
    relax = get_model("ode_relax").eval_seconds(run, 300)
    multi = get_model("multipower").eval_seconds(run, 300)
    assert closed < relax < multi  # multipower sums every change (block 1), ode_relax lumps 16
    assert get_model("ode").eval_seconds(run, 3000) > get_model("ode").eval_seconds(run, 30)


def test_recovers_ode_parameters_from_the_core_solver() -> None:
    """Theory §4.5/§7.8: CE closure, F1 truth (rho0, S0, beta) = (0.8, 20, 0.7), 1.5 % noise:
    recovered within 10 % and inside the 90 % intervals (the floor held at 0, alpha at 1.5)."""
    sch = Schedule.constant(0.1, 3001)
    steps = np.arange(0, 3001, 3)
    ce = get_closure("ce", classes=10, alpha=1.5)
    clean = solve(ce, ScheduleRate(sch, 0.8, 20.0, 0.7), 2.3, steps.astype(float)).loss
    y = clean * np.exp(np.random.default_rng(0).normal(0.0, 0.015, steps.size))
    traj = Trajectory.from_arrays(
        y, step=steps, lr=sch.lr[steps], meta=RunMeta(loss="ce", classes=10)
    )
    res = fit(traj, "ode", schedule=sch, fix={"L_inf": 0.0}, bootstrap=100)
    assert res.success, res.message
    truth = {"rho_ref": 0.8 * (1 + 1 / 20) ** -0.7, "S0": 20.0, "beta": 0.7, "L0": 2.3}
    for name, true in truth.items():
        lo, hi = res.ci[name]
        assert lo <= true <= hi, (name, true, res.ci[name])
        assert res.params[name] == pytest.approx(true, rel=0.1), name
    assert any("alpha fixed at 1.5" in n for n in res.notes)


def test_noise_free_round_trip_is_only_a_consistency_check() -> None:
    """Theory §4.1: refitting a curve the model made reproduces it (the tautology trap). This
    checks the solver/fitter plumbing, it validates nothing; the tests below extrapolate."""
    sch = Schedule.cosine(0.05, 401, final=0.005, warmup=10)
    steps = np.arange(10, 401)
    traj = Trajectory.from_arrays(
        ode_curve(sch, steps), step=steps, lr=sch.lr[steps], meta=RunMeta(loss="power")
    )
    res = fit(traj, "ode", schedule=sch, bootstrap=0)
    assert res.metrics["rmse"] < 1e-4


def test_extrapolates_the_rest_of_a_curve_from_a_prefix() -> None:
    """Fit on the first 30 % of a noisy cosine-schedule curve, predict the last 70 %."""
    traj, sch = ode_run(3, n=1000, sd=0.005)
    pre = traj.prefix(0.3)
    res = fit(pre, "ode", schedule=sch, bootstrap=60)
    rest = traj.step > pre.step[-1]
    truth = ode_curve(sch, traj.step)[rest]
    pr = predict(res, traj.step[rest])
    assert np.max(np.abs(pr.loss / truth - 1)) < 0.01
    cover = np.mean((pr.mean_lower <= truth * 1.002) & (truth <= pr.mean_upper * 1.002))
    assert cover > 0.8
    obs_cover = np.mean((pr.lower <= traj.loss[rest]) & (traj.loss[rest] <= pr.upper))
    assert obs_cover > 0.8


def test_predict_under_another_schedule() -> None:
    """A what-if: fit under a cosine schedule, predict the same run under a constant one."""
    traj, sch = ode_run(4, n=600)
    res = fit(traj, "ode", schedule=sch, bootstrap=0)
    other = Schedule.constant(0.05, 601, warmup=10)
    pr = predict(res, np.arange(10, 601, 10), schedule=other)
    truth = ode_curve(other, np.arange(10, 601, 10))
    assert np.max(np.abs(pr.loss / truth - 1)) < 0.01
    assert np.all(pr.lower <= pr.loss) and np.all(pr.loss <= pr.upper)
    np.testing.assert_allclose(pr.t, other.S(np.arange(10, 601, 10)))


def test_predict_beyond_the_schedule_continues_its_last_lr() -> None:
    traj, sch = ode_run(4, n=600)
    res = fit(traj, "ode", schedule=sch, bootstrap=0)
    steps = np.arange(10, 901, 10)
    pr = predict(res, steps)
    longer = sch.extend(900)  # the same schedule, its last lr held to step 900
    np.testing.assert_allclose(pr.loss, predict(res, steps, schedule=longer).loss, rtol=1e-12)
    assert any("last lr" in w for w in pr.warnings)
    with pytest.raises(InvalidArgumentError, match="schedule= covering"):
        predict(res, steps, schedule=Schedule.constant(0.05, 601))  # an explicit plan must cover


# ------------------------------------------------------------- joint fits and priors
def test_fit_many_shares_parameters_and_names_per_run_ones() -> None:
    runs = {}
    for i, sd in enumerate((0.01, 0.01)):
        traj, sch = toy_run(10 + i, sd=sd, name=f"r{i}")
        # a per-run offset of the floor
        runs[f"r{i}"] = RunData(traj.replace(loss=traj.loss + 0.1 * i), sch)
    res = fit_many(runs, PowerInS(), per_run=("L_inf",), bootstrap=0)
    assert set(res.params) == {"A", "a", "L_inf[r0]", "L_inf[r1]"}
    assert res.params["L_inf[r1]"] - res.params["L_inf[r0]"] == pytest.approx(0.1, abs=0.03)
    assert res.params["a"] == pytest.approx(TOY["a"], rel=0.1)
    pr = predict(res, np.arange(1, 201), run="r1")
    assert pr.loss[-1] == pytest.approx(runs["r1"].traj.loss[-1], rel=0.03)
    with pytest.raises(InvalidArgumentError, match="per-run"):
        predict(res, np.arange(1, 201), run=runs["r0"])
    with pytest.raises(InvalidArgumentError, match="run="):
        predict(res, np.arange(1, 201))
    pinned = fit_many(runs, PowerInS(), fix={"L_inf": 0.8, "L_inf[r1]": 0.9}, bootstrap=0)
    assert (pinned.theta("r0")["L_inf"], pinned.theta("r1")["L_inf"]) == (0.8, 0.9)
    assert set(pinned.params) == {"A", "a"}


def test_shared_fit_predicts_a_new_run() -> None:
    a, sch = toy_run(20, name="a")
    b, _ = toy_run(21, name="b")
    res = fit_many([(a, sch), (b, sch)], PowerInS(), bootstrap=0)
    new, _ = toy_run(22, name="new")
    pr = predict(res, new.step, run=RunData(new, sch))
    assert np.mean(np.abs(pr.loss / new.loss - 1)) < 0.02


def test_prior_pins_a_parameter_and_law_follows_a_covariate() -> None:
    traj, sch = toy_run(5)
    res = fit(traj, PowerInS(), schedule=sch, bootstrap=0, prior={"a": (0.9, 1e-4)})
    assert res.params["a"] == pytest.approx(0.9, rel=1e-3)
    runs = []
    for i, size in enumerate((1e6, 1e7, 1e8)):
        t, s = toy_run(30 + i, name=f"m{i}")
        floor = 0.8 * (size / 1e7) ** -0.1
        t = t.replace(loss=t.loss - 0.8 + floor, meta=RunMeta(name=f"m{i}", model_size=size))
        runs.append(RunData(t, s))
    res = fit_many(runs, PowerInS(), depends={"L_inf": "model_size"}, bootstrap=0)
    assert res.params["L_inf~model_size"] == pytest.approx(-0.08, abs=0.03)


# ------------------------------------------------------------- bad input
def test_bad_inputs_raise_clear_errors() -> None:
    traj, sch = toy_run(0, n=40)
    with pytest.raises(DataError, match="too few"):
        fit(traj.select(slice(0, 4)), PowerInS(), schedule=sch)
    with pytest.raises(DataError, match="constant"):
        fit(traj.replace(loss=np.ones(40)), PowerInS(), schedule=sch)
    with pytest.raises(DataError, match="does not fall"):
        fit(traj.replace(loss=traj.loss[::-1].copy()), PowerInS(), schedule=sch)
    no_lr = Trajectory.from_arrays(traj.loss, step=traj.step)
    with pytest.raises(InvalidArgumentError, match="learning rate"):
        fit(no_lr, "ode")
    with pytest.raises(InvalidArgumentError, match="loss="):
        fit(traj, PowerInS(), schedule=sch, loss="cauchy2")
    with pytest.raises(InvalidArgumentError, match="unknown parameter"):
        fit(traj, PowerInS(), schedule=sch, fix={"nope": 1.0})
    with pytest.raises(InvalidArgumentError, match="prior"):
        fit(traj, PowerInS(), schedule=sch, prior={"a": (0.5, -1.0)})
    with pytest.raises(InvalidArgumentError, match="level"):
        fit(traj, PowerInS(), schedule=sch, level=1.5)
    with pytest.raises(InvalidArgumentError, match="not known"):
        fit(traj, "no_such_model", schedule=sch)
    with pytest.raises(InvalidArgumentError, match="every parameter is fixed"):
        fit(traj, PowerInS(), schedule=sch, fix={"A": 1.0, "a": 0.5, "L_inf": 0.1})


def test_fixed_parameters_are_reported_and_held() -> None:
    traj, sch = toy_run(2)
    res = fit(traj, PowerInS(), schedule=sch, fix={"L_inf": 0.8}, bootstrap=0)
    assert res.fixed == {"L_inf": 0.8}
    assert "L_inf" not in res.params
    assert res.theta()["L_inf"] == 0.8
    assert "fixed" in res.report()


def test_an_instrumented_log_gives_every_peer_the_plain_csv_fit(tmp_path) -> None:
    """The recorder's trajectory.csv (with loss_std, batch_size) and a plain CSV of the same
    curve give each law the same fit: the spread of per-sample losses does not reweight
    the fit by default (late in a run sigma_L / L grows tenfold, and weighting by it handed
    the fit to the first steps: power_steps +147 % instead of +66 % on the demo run)."""
    from lossrate import read_log

    n = 600
    steps = np.arange(1, n + 1)
    clean = 0.05 + 2.0 * (1 + steps / 20.0) ** -0.8
    rng = np.random.default_rng(3)
    loss = clean * np.exp(rng.normal(0, 0.02, n) * np.linspace(1, 5, n))
    cv = np.linspace(0.3, 2.7, n)
    meta = RunMeta(loss="ce", classes=10, name="run")
    traj = Trajectory.from_arrays(
        loss,
        step=steps,
        lr=np.full(n, 0.1),
        meta=meta,
        loss_std=cv * loss,
        batch_size=np.full(n, 128.0),
    )
    traj.write(tmp_path / "trajectory.csv")
    rows = ["step,lr,train_loss"] + [f"{s},0.1,{float(v)!r}" for s, v in zip(steps, loss)]
    (tmp_path / "plain.csv").write_text("\n".join(rows) + "\n")
    instrumented = read_log(tmp_path / "trajectory.csv")
    plain = read_log(tmp_path / "plain.csv")
    assert instrumented.has("loss_std") and not plain.has("loss_std")
    for model in ("power_steps", "power_S", "exponential", "momentum", "multipower"):
        a = fit(instrumented.prefix(0.3), model, bootstrap=0)
        b = fit(plain.prefix(0.3), model, bootstrap=0)
        for name, value in a.params.items():
            assert value == pytest.approx(b.params[name], rel=1e-6, abs=1e-12), (model, name)
    # the measured-noise weighting stays available, and changes the fit
    m = fit(instrumented.prefix(0.3), "power_steps", bootstrap=0, weights="measured")
    assert any("sigma_L" in note for note in m.notes)
    assert m.params["alpha"] != pytest.approx(
        fit(plain.prefix(0.3), "power_steps", bootstrap=0).params["alpha"], rel=1e-3
    )
