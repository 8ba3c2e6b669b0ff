"""Prior: recovery of shared and per-run parameters from seeded multi-run data made by the
core's noise solver, the MAP fit, JSON round trips and bad inputs."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from _transfer_data import ETA_REF, TRUTH, make_run
from lossrate import DataError, InvalidArgumentError, RunMeta
from lossrate._model import RunData
from lossrate.fit import fit_many
from lossrate.prior import (
    VERSION,
    DecayNotIdentifiedWarning,
    ParamPrior,
    Prior,
    SourceRun,
    check_runs,
    decays,
    fit_with_prior,
    predict_with_prior,
    prior_model,
)

PER_RUN = ("L0", "L_inf", "rho_ref")


def _model():
    return dataclasses.replace(prior_model("ode_noise"), eta_ref=ETA_REF)


@pytest.fixture(scope="module")
def sources():
    out, l_inf = {}, {}
    for i, (eta, shape) in enumerate(
        [(e, s) for e in (0.1, 0.4) for s in ("constant", "cosine", "wsd")]
    ):
        name = f"{shape}_{eta:g}"
        out[name], l_inf[name] = make_run(name, eta, shape, seed=i)
    return out, l_inf


@pytest.fixture(scope="module")
def joint(sources):
    runs, _ = sources
    return fit_many(runs, _model(), per_run=PER_RUN, bootstrap=0, starts=1)


def test_joint_fit_recovers_shared_parameters_within_intervals(joint):
    # the lr exponent q, the equilibrium x_eq, the closure order k and rho's decay beta are
    # shared by every run. Four checks at the 90 % level would fail together about a third of
    # the time even for a perfect fit, so each uses a Bonferroni-corrected 99.5 % two-sided
    # band from the stated standard error (family-wise level about 98 %).
    for name in ("q", "x_eq", "k", "beta"):
        est, se = joint.params[name], joint.stderr[name]
        assert abs(est - TRUTH[name]) <= 2.81 * se, (name, est, se, joint.ci[name])
    assert joint.ci["q"][1] - joint.ci["q"][0] < 0.5  # q is identified, not just bounded


def test_joint_fit_recovers_per_run_floors(joint, sources):
    _, l_inf = sources
    for name, truth in l_inf.items():
        key = f"L_inf[{name}]"
        est, se = joint.params[key], joint.stderr[key]
        assert abs(est - truth) <= 3 * se + 1e-3, (key, est, truth, se)


def test_prior_from_fit_centres_and_spreads(joint, sources):
    runs, _ = sources
    prior = Prior.from_fit(joint)
    assert set(prior.params) == set(joint.pmap.order)
    q = prior.params["q"]
    assert q.kind == "shared" and q.centre == pytest.approx(joint.params["q"])
    assert q.spread >= 0.02
    x = prior.params["x_eq"]
    assert x.log and x.centre == pytest.approx(math.log(joint.params["x_eq"]))
    floors = [joint.params[f"L_inf[{n}]"] for n in runs]
    li = prior.params["L_inf"]
    assert li.kind == "per_run"
    assert li.centre == pytest.approx(np.mean(floors))
    assert li.spread == pytest.approx(max(np.std(floors, ddof=1), 0.02))
    assert prior.source_names == tuple(runs)
    assert prior.decayed  # cosine and wsd runs decay
    assert [s.decayed for s in prior.sources] == [decays(r) for r in runs.values()]


def test_law_prior_is_evaluated_at_the_new_runs_setting():
    p = ParamPrior(
        centre=math.log(2.0),
        spread=0.1,
        log=True,
        kind="law",
        covariate="peak_lr",
        slope=0.5,
        log_ref=math.log(0.1),
    )
    assert p.value_at(0.1) == pytest.approx(2.0)
    assert p.value_at(0.4) == pytest.approx(2.0 * 4**0.5)
    with pytest.raises(InvalidArgumentError, match="peak_lr"):
        p.value_at(None)


def test_map_fit_uses_prior_and_predicts_the_decay(joint):
    prior = Prior.from_fit(joint)
    target, _ = make_run("target", 0.2, "wsd", seed=99)
    prefix = RunData(target.traj.prefix(0.4), target.schedule)  # stable phase only
    f = fit_with_prior(prefix, prior, bootstrap=30)
    assert f.success
    assert f.extra["prior"]["sources"] == list(prior.source_names)
    assert any("resolved" in n for n in f.notes)
    pred = predict_with_prior(f, target.traj.step)
    err = abs(pred.loss[-1] / target.traj.loss[-1] - 1)
    assert err < 0.03, err
    rest = target.traj.step > prefix.traj.step[-1]
    inside = (target.traj.loss >= pred.lower) & (target.traj.loss <= pred.upper)
    assert inside[rest].mean() >= 0.7


def test_fixed_mode_holds_shared_parameters(joint):
    prior = Prior.from_fit(joint)
    target, _ = make_run("t2", 0.2, "cosine", seed=5)
    f = fit_with_prior(
        RunData(target.traj.prefix(0.5), target.schedule), prior, mode="fixed", bootstrap=0
    )
    assert f.fixed["q"] == pytest.approx(prior.params["q"].value_at())
    assert set(f.params) == set(PER_RUN)


# ---------------------------------------------------------------- files
def _small_prior(decayed: bool = True) -> Prior:
    params = {
        n: ParamPrior(
            math.log(v) if n in ("rho_ref", "S0", "x_eq") else v,
            0.05,
            n in ("rho_ref", "S0", "x_eq"),
            "shared",
        )
        for n, v in {**TRUTH, "L_inf": 1.0}.items()
    }
    src = (SourceRun("a", 0.1, "constant", decayed, "ce", 50),)
    return Prior("ode_noise", params, src, {"fit_q": True, "eta_ref": ETA_REF})


def test_json_round_trip(tmp_path):
    prior = _small_prior()
    path = prior.save(tmp_path / "p.json")
    back = Prior.load(path)
    assert back == prior
    assert json.loads(path.read_text())["version"] == VERSION
    assert not list(tmp_path.glob("*.tmp*"))
    assert Prior.from_runs(tmp_path, "ode_noise") == prior  # a folder holding one saved prior


def test_load_refuses_newer_version_and_other_files(tmp_path):
    data = _small_prior().to_dict()
    data["version"] = VERSION + 1
    (tmp_path / "new.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match="newer"):
        Prior.load(tmp_path / "new.json")
    (tmp_path / "other.json").write_text(json.dumps({"format": "x"}))
    with pytest.raises(DataError, match="not a lossrate-prior"):
        Prior.load(tmp_path / "other.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(DataError, match="not valid JSON"):
        Prior.load(tmp_path / "bad.json")


# ---------------------------------------------------------------- bad input
def test_different_losses_are_refused_naming_the_run():
    a, _ = make_run("a", 0.1, "constant", 1)
    b, _ = make_run("b", 0.1, "cosine", 2, loss="mse")
    with pytest.raises(InvalidArgumentError, match=r"'b'.*mse"):
        check_runs({"a": a, "b": b})
    with pytest.raises(InvalidArgumentError, match="loss"):
        Prior.from_runs({"a": a, "b": b}, "momentum")


def test_missing_covariate_is_refused_naming_run_and_field():
    a, _ = make_run("a", 0.1, "constant", 1)
    b, _ = make_run("b", 0.2, "cosine", 2)
    meta = dataclasses.replace(b.traj.meta, peak_lr=None)
    b = RunData(b.traj.replace(meta=meta), b.schedule)
    with pytest.raises(InvalidArgumentError, match=r"run 'b'.*peak_lr=None"):
        Prior.from_runs({"a": a, "b": b}, "momentum", depends={"C": "peak_lr"})


def test_prior_without_decay_warns_and_widens():
    prior = _small_prior(decayed=False)
    assert not prior.decayed
    target, _ = make_run("t", 0.2, "wsd", seed=3)
    prefix = RunData(target.traj.prefix(0.4), target.schedule)
    f = fit_with_prior(prefix, prior, bootstrap=0)
    with pytest.warns(DecayNotIdentifiedWarning, match="not identified"):
        pred = predict_with_prior(f, target.traj.step)
    assert any("not identified" in w for w in pred.warnings)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warn=False: no Python warning, the same prediction
        quiet = predict_with_prior(f, target.traj.step, warn=False)
    assert quiet.warnings == pred.warnings
    np.testing.assert_array_equal(quiet.upper, pred.upper)
    from lossrate.fit import predict

    plain = predict(f, target.traj.step)
    after = target.traj.step >= 840  # a few steps into the decay: the gain is > 0
    assert np.all(pred.upper >= plain.upper - 1e-12)
    assert np.all(pred.upper[after] - pred.lower[after] > plain.upper[after] - plain.lower[after])
    # a decayed prior, the same fit: no warning
    f2 = dataclasses.replace(f, extra={**f.extra, "prior": {**f.extra["prior"], "decayed": True}})
    pred2 = predict_with_prior(f2, target.traj.step)
    assert not any("not identified" in w for w in pred2.warnings)


def test_bad_arguments():
    with pytest.raises(InvalidArgumentError, match="Prior"):
        fit_with_prior(make_run("x", 0.1, "constant", 0)[0], {"q": (0.5, 0.1)})  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="mode"):
        fit_with_prior(make_run("x", 0.1, "constant", 0)[0], _small_prior(), mode="odd")
    r, _ = make_run("x", 0.1, "constant", 0, loss="mse")
    with pytest.raises(InvalidArgumentError, match="loss"):
        fit_with_prior(r, _small_prior())
    with pytest.raises(InvalidArgumentError, match="folder"):
        Prior.from_runs("/nonexistent/folder/xyz", "momentum")
    assert RunMeta  # imported for the type


def test_from_path_reads_run_folders_and_fit_files_and_excludes_the_target(tmp_path):
    """Prior.from_path: */trajectory.csv run folders (as `lossrate train` writes them), one
    fit JSON, and the exclusion of the run being fitted."""
    from lossrate.fit import fit

    runs = {}
    for i, (eta, shape) in enumerate(((0.2, "constant"), (0.4, "wsd"), (0.3, "cosine"))):
        r, _ = make_run(f"run{i}", eta, shape, seed=40 + i, every=25)
        (tmp_path / f"run{i}").mkdir()
        r.traj.write(tmp_path / f"run{i}" / "trajectory.csv")
        runs[f"run{i}"] = r
    target = tmp_path / "run2" / "trajectory.csv"
    prior = Prior.from_path(tmp_path, "momentum", exclude=[target], max_points=60)
    assert sorted(prior.source_names) == ["run0", "run1"]
    res = fit(runs["run0"], "momentum", bootstrap=0)
    one = tmp_path / "fit.json"
    one.write_text(res.to_json())
    from_file = Prior.from_path(one, "momentum")
    assert from_file.params["A"].centre == pytest.approx(np.log(res.params["A"]))
    with pytest.raises(InvalidArgumentError, match="the run being fitted"):
        Prior.from_path(one, "momentum", exclude=[one])


def test_wald_errors_equal_least_squares_errors_of_a_linear_model():
    """With A and alpha held, the momentum law on L (not ln L) is linear in L0 and C: the
    Wald errors must equal the ordinary least-squares standard errors."""
    from lossrate import Schedule, Trajectory
    from lossrate.fit import fit
    from lossrate.fitting.intervals import wald_se

    sched = Schedule.make("wsd", peak=0.1, n_steps=801, warmup=10, decay_start=600, final=0.0)
    steps = np.arange(10, 801, 5)
    S1 = sched.S(steps)
    base = Trajectory.from_arrays(np.ones(steps.size), step=steps, lr=sched.at(steps))
    run = RunData(base, sched)
    from lossrate.baselines.momentum import MomentumLaw

    S2 = MomentumLaw().areas(run, steps)[1]
    y = 1.0 + 2.0 * S1**-0.5 - 0.001 * S2 + np.random.default_rng(5).normal(0, 0.01, steps.size)
    res = fit(
        RunData(base.replace(loss=y), sched),
        "momentum",
        fix={"A": 2.0, "alpha": 0.5},
        log=False,
        weights="none",
        loss="linear",
        bootstrap=0,
    )
    X = np.column_stack([np.ones(steps.size), -S2])
    beta, *_ = np.linalg.lstsq(X, y - 2.0 * S1**-0.5, rcond=None)
    e = y - 2.0 * S1**-0.5 - X @ beta
    s2 = e @ e / (steps.size - 2)
    ols = np.sqrt(np.diag(s2 * np.linalg.inv(X.T @ X)))
    assert res.params["L0"] == pytest.approx(beta[0], rel=1e-6)
    np.testing.assert_allclose(wald_se(res), ols, rtol=1e-4)


def test_prior_falls_back_to_wald_errors_when_the_fit_has_no_intervals(joint):
    """A joint fit whose bootstrap gave no intervals still yields an informative prior from
    the Gauss-Newton (Wald) errors."""
    from lossrate.fitting.intervals import wald_se

    se = wald_se(joint)
    pm = joint.pmap
    assert np.all(np.isfinite(se) & (se > 0))
    nan = {k: float("nan") for k in joint.stderr}
    bare = dataclasses.replace(joint, samples=None, stderr=nan)
    prior = Prior.from_fit(bare)
    R = len(pm.runs)
    for name in ("x_eq", "q", "beta"):
        j = pm.free_names.index(name)
        assert prior.params[name].spread == pytest.approx(max(se[j] * math.sqrt(R), 0.02))


def _relax_run(name: str, eta: float, shape: str, seed: int) -> tuple[RunData, np.ndarray]:
    """A run of the ode_relax model (power closure, L_inf drawn per run), 0.3 % noise."""
    from lossrate import RunMeta, Schedule, Trajectory
    from lossrate.fit import get_model

    truth = {"rho_ref": 0.3, "S0": 5.0, "beta": 0.6, "L0": 4.0, "k": 2.0}
    truth |= {"B": 0.5, "C": 1.0, "kappa": 0.5, "gamma": 0.3}
    rng = np.random.default_rng(seed)
    kw = {"decay_start": 800} if shape == "wsd" else {}
    final = 0.05 * eta if shape != "constant" else 0.0
    sched = Schedule.make(shape, peak=eta, n_steps=1000, warmup=20, final=final, **kw)
    steps = np.arange(20, 1000, 20)
    meta = RunMeta(name=name, peak_lr=eta, schedule=shape)
    traj = Trajectory.from_arrays(np.ones(steps.size), step=steps, lr=sched.at(steps), meta=meta)
    truth["L_inf"] = 1.0 + 0.03 * rng.standard_normal()
    clean = get_model("ode_relax").curve(truth, RunData(traj, sched), steps)
    noisy = clean * np.exp(rng.normal(0.0, 0.003, steps.size))
    return RunData(traj.replace(loss=noisy), sched), clean


def test_ode_relax_prior_carries_the_decay_gain_to_a_stable_phase_prefix():
    from lossrate.fit import fit, predict

    specs = [(0.1, "constant"), (0.4, "constant"), (0.1, "wsd"), (0.4, "wsd"), (0.2, "cosine")]
    runs = {f"r{i}": _relax_run(f"r{i}", eta, s, i)[0] for i, (eta, s) in enumerate(specs)}
    prior = Prior.from_runs(runs, "ode_relax")
    assert {n for n, p in prior.params.items() if p.kind == "per_run"} == {
        "L0",
        "L_inf",
        "rho_ref",
        "beta",
    }
    target, clean = _relax_run("target", 0.2, "wsd", seed=99)
    prefix = RunData(target.traj.prefix(0.4), target.schedule)  # before the decay at 800
    assert prefix.traj.step[-1] < 800
    with_prior = predict_with_prior(fit_with_prior(prefix, prior, bootstrap=30), target.traj.step)
    alone = predict(fit(prefix, "ode_relax", bootstrap=30), target.traj.step)
    err_prior = abs(with_prior.loss[-1] / clean[-1] - 1)
    err_alone = abs(alone.loss[-1] / clean[-1] - 1)
    # the decay lowers the final loss by ~3.5 %; the prior carries that over
    assert clean[39] - clean[-1] > 0.03 * clean[-1]
    assert err_prior < 0.002 and err_prior < 0.5 * err_alone, (err_prior, err_alone)
    rest = target.traj.step > prefix.traj.step[-1]
    inside = (clean >= with_prior.lower) & (clean <= with_prior.upper)
    assert inside[rest].mean() >= 0.9
