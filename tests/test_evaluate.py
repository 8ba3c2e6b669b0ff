"""Out-of-sample evaluation: the prefix and cross protocols, the table views, bad input."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from lossrate import InvalidArgumentError, RunMeta, Schedule, Trajectory
from lossrate._model import RunData
from lossrate.evaluate import EvalRow, EvalTable, evaluate
from lossrate.fit import fit
from lossrate.fitting.ode_models import ODE

TRUTH = {"rho_ref": 0.6, "S0": 5.0, "beta": 0.5, "L_inf": 1.0, "L0": 3.0, "k": 2.0}


def synthetic(name: str, sched: str, seed: int, n: int = 800) -> tuple[Trajectory, Schedule]:
    sch = Schedule.make(
        sched,
        peak=0.05,
        n_steps=n + 1,
        final=0.005,
        warmup=20,
        **({"decay_start": 600} if sched == "wsd" else {}),
    )
    steps = np.arange(20, n + 1, 4)
    meta = RunMeta(loss="power", name=name, schedule=f"{sched}_{n}")
    base = Trajectory.from_arrays(np.ones(steps.size), step=steps, lr=sch.lr[steps], meta=meta)
    clean = ODE().curve(TRUTH, RunData(base, sch), steps)
    y = clean * np.exp(np.random.default_rng(seed).normal(0, 0.003, steps.size))
    return base.replace(loss=y), sch


def test_prefix_protocol_scores_only_held_out_points() -> None:
    runs = {"a": synthetic("a", "cosine", 0), "b": synthetic("b", "constant", 1)}
    tab = evaluate(runs, ["ode", ("pw", "power_S", {"loss": "huber"})], fractions=(0.3, 0.6))
    assert len(tab.rows) == 2 * 2 * 2
    for row in tab.rows:
        traj = runs[row.run][0]
        n_pre = traj.prefix(row.k).n
        assert row.n_train == n_pre and row.n_test == traj.n - n_pre
        assert row.protocol == "prefix"
    ode_rows = [r for r in tab.rows if r.model == "ode"]
    assert all(r.fit_ok for r in ode_rows)
    assert max(r.final_rel_err for r in ode_rows) < 0.01
    assert {r.group for r in tab.rows} == {"cosine", "constant"}
    summ = tab.summary(by=("model",))
    assert {d["model"] for d in summ} == {"ode", "pw"} and all(d["n"] == 4 for d in summ)
    text = tab.to_text(by=("model", "k"))
    assert "final_rel_err" in text and "ode" in text
    csv = tab.to_csv()
    assert csv.splitlines()[0].startswith("protocol,run,group,model,k")
    assert len(csv.splitlines()) == 1 + len(tab.rows)


def test_cross_protocol_predicts_unseen_runs_and_accepts_a_foreign_fitter(tmp_path) -> None:
    runs = {
        n: synthetic(n, s, i)
        for i, (n, s) in enumerate([("c", "constant"), ("cos", "cosine"), ("w", "wsd")])
    }

    def recipe(rds: list[RunData]):
        return fit(rds[0], "ode", bootstrap=0)

    tab = evaluate(runs, ["ode", ("first_run_only", recipe)], protocol="cross", train=["c", "cos"])
    assert [r.run for r in tab.rows] == ["w", "w"]
    for row in tab.rows:
        assert row.fit_ok, row.message
        assert row.final_rel_err < 0.01
        assert np.isnan(row.k)
    assert np.isfinite(tab.rows[0].coverage)
    out = tmp_path / "rows.csv"
    tab.to_csv(str(out))
    assert out.read_text().count("\n") == 3
    back = EvalTable.read_csv(str(out))
    for a, b in zip(back.rows, tab.rows, strict=True):
        for f in dataclasses.fields(EvalRow):
            x, y = getattr(a, f.name), getattr(b, f.name)
            assert type(x) is type(y), f.name
            assert x == y or (isinstance(x, float) and np.isnan(x) and np.isnan(y)), f.name


def test_read_csv_names_a_wrong_file(tmp_path) -> None:
    with pytest.raises(InvalidArgumentError, match="not a file"):
        EvalTable.read_csv(str(tmp_path / "missing.csv"))
    other = tmp_path / "other.csv"
    other.write_text("step,loss\n1,2.0\n")
    with pytest.raises(InvalidArgumentError, match="lacks the column"):
        EvalTable.read_csv(str(other))


def test_failed_fits_become_rows_with_a_message() -> None:
    traj, sch = synthetic("flat", "constant", 0)
    flat = traj.replace(loss=np.full(traj.n, 2.0))
    tab = evaluate({"flat": (flat, sch)}, ["ode"], fractions=(0.5,))
    (row,) = tab.rows
    assert not row.fit_ok and "constant loss" in row.message and np.isnan(row.mae)
    assert "NO" in tab.to_text()


def test_bad_arguments() -> None:
    runs = {"a": synthetic("a", "cosine", 0), "b": synthetic("b", "constant", 1)}
    with pytest.raises(InvalidArgumentError, match="protocol"):
        evaluate(runs, ["ode"], protocol="loo")
    with pytest.raises(InvalidArgumentError, match="fractions"):
        evaluate(runs, ["ode"], fractions=(0.5, 1.0))
    with pytest.raises(InvalidArgumentError, match="both train and test"):
        evaluate(runs, ["ode"], protocol="cross", train=["a"], test=["a", "b"])
    with pytest.raises(InvalidArgumentError, match="unknown run"):
        evaluate(runs, ["ode"], protocol="cross", train=["zzz"])
    with pytest.raises(InvalidArgumentError, match="needs train"):
        evaluate(runs, ["ode"], protocol="cross")
    with pytest.raises(InvalidArgumentError, match="labels must be unique"):
        evaluate(runs, ["ode", "ode"])
    with pytest.raises(InvalidArgumentError, match="by names"):
        EvalTable(()).summary(by=("nope",))


def test_a_run_too_short_to_cut_says_why_it_has_no_row() -> None:
    from lossrate import RunMeta, Schedule, Trajectory
    from lossrate.evaluate import evaluate

    steps = np.arange(0, 40)
    traj = Trajectory.from_arrays(
        2.0 * (1 + steps) ** -0.3, step=steps, lr=np.full(40, 0.1), meta=RunMeta(name="short")
    )
    table = evaluate(
        {"short": (traj, Schedule.constant(0.1, 40))}, ["power_steps"], fractions=(0.5, 1 - 1e-11)
    )
    assert {r.k for r in table.rows} == {0.5}
    assert len(table.skipped) == 1 and "nothing is left to predict" in table.skipped[0]
