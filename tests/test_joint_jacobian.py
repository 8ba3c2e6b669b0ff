"""The grouped finite-difference Jacobian of joint fits (problem._Problem.jacobian)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from lossrate import RunMeta, Schedule, Trajectory, predict
from lossrate._model import RunData
from lossrate.baselines.momentum import MomentumLaw
from lossrate.fit import fit_many
from lossrate.fitting import intervals, problem
from lossrate.fitting.params import ParamMap


def _runs(n_runs: int, n_points: int = 300, seed: int = 0) -> dict[str, RunData]:
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(n_runs):
        eta = (0.1, 0.2, 0.4)[i % 3]
        sched = Schedule.make("cosine", peak=eta, n_steps=n_points + 1, warmup=10, final=0.1 * eta)
        steps = np.arange(1, n_points + 1)
        y = (1.0 + 0.05 * i + 2.0 * (1 + sched.S(steps)) ** -0.6) * np.exp(
            rng.normal(0, 0.003, steps.size)
        )
        t = Trajectory.from_arrays(
            y, step=steps, lr=sched.at(steps), meta=RunMeta(name=f"r{i}", loss="ce")
        )
        out[f"r{i}"] = RunData(t, sched)
    return out


def _problem(runs: dict[str, RunData], prior=None) -> problem._Problem:
    pm = ParamMap(MomentumLaw(), list(runs.values()), list(runs), per_run=("L0", "A", "alpha"))
    return problem._Problem(pm, True, prior)


def test_grouped_jacobian_equals_columnwise_differences() -> None:
    runs = _runs(6)
    prob = _problem(runs, prior={"C": (0.1, 0.05)})
    pm = prob.pmap
    z = pm.clip(pm.start([dict(g[0]) for g in (MomentumLaw().guesses(r) for r in runs.values())]))
    J = prob.jacobian(z)
    J = J.toarray() if sparse.issparse(J) else J
    # independent reference: one coordinate at a time, the same forward step
    f0 = prob.residuals(z)
    ref = np.empty((f0.size, z.size))
    for j in range(z.size):
        h = problem._FD_STEP * max(1.0, abs(z[j]))
        if z[j] + h > pm.upper[j]:
            h = -h
        zz = z.copy()
        zz[j] += h
        ref[:, j] = (prob.residuals(zz) - f0) / h
    assert J.shape == ref.shape
    np.testing.assert_allclose(J, ref, rtol=1e-12, atol=1e-12)
    # 3 per-run parameters x 6 runs + 1 shared: the colouring needs 4 evaluations, not 19
    assert prob.effective_k() == 4 and pm.n_free == 19


def test_single_run_and_all_shared_keep_dense_differences() -> None:
    runs = _runs(3)
    shared = ParamMap(MomentumLaw(), list(runs.values()), list(runs))
    assert problem._Problem(shared, True, None)._structure() is None
    one = ParamMap(MomentumLaw(), [runs["r0"]], ["r0"], per_run=("L0",))
    assert problem._Problem(one, True, None)._structure() is None


def test_large_joint_jacobian_is_sparse_and_fit_agrees_with_dense(monkeypatch) -> None:
    runs = _runs(4, n_points=400)
    kw = dict(per_run=("L0", "A", "alpha"), bootstrap=0, starts=0)
    monkeypatch.setattr(problem, "_DENSE_MAX", 10)  # force the sparse (LSMR) path
    prob = _problem(runs)
    z = np.clip(np.zeros(prob.pmap.n_free), prob.pmap.lower, prob.pmap.upper)
    assert sparse.issparse(prob.jacobian(z))
    sparse_fit = fit_many(runs, "momentum", **kw)
    monkeypatch.setattr(problem, "_SPARSE_DENSITY", -1.0)  # no structure: scipy's dense FD
    dense_fit = fit_many(runs, "momentum", **kw)
    # the same optimum: equal cost and the same fitted curves (L0 / A / alpha of one run
    # trade off along a flat valley, so the curves are the comparison, not each parameter)
    assert sparse_fit.metrics["cost"] == pytest.approx(dense_fit.metrics["cost"], rel=1e-3)
    for name in runs:
        a = predict(sparse_fit, run=name).loss
        b = predict(dense_fit, run=name).loss
        # within the data's own 0.3 % noise (the first steps, a steep extrapolation, differ most)
        assert np.sqrt(np.mean((a / b - 1) ** 2)) < 1.5e-3, name


def test_analytic_jacobian_of_the_multipower_law_matches_differences() -> None:
    """The engine uses a model's own derivatives (curve_and_jacobian) through the parameter
    map: the same matrix as forward differences, for a single and a joint fit with a prior."""
    from lossrate.baselines.multipower import MultiPowerLaw

    runs = _runs(3, n_points=200)
    model = MultiPowerLaw()
    for names, per_run in ((["r0"], ()), (list(runs), ("L0", "A"))):
        pm = ParamMap(model, [runs[n] for n in names], names, per_run=per_run)
        prob = problem._Problem(pm, True, {"beta": (0.5, 0.2)})
        assert prob.analytic()
        z = pm.clip(pm.start([dict(model.guesses(runs[n])[0]) for n in names]))
        J = prob.analytic_jacobian(z)
        J = J.toarray() if sparse.issparse(J) else J
        f0 = prob.residuals(z)
        ref = np.empty_like(J)
        for j in range(z.size):
            h = 1e-7 * max(1.0, abs(z[j]))
            zz = z.copy()
            zz[j] += h
            ref[:, j] = (prob.residuals(zz) - f0) / h
        np.testing.assert_allclose(J, ref, rtol=1e-4, atol=1e-6 * np.abs(ref).max())


def test_thinned_problem_keeps_residual_units_and_prior_balance() -> None:
    runs = _runs(2, n_points=3000)
    prob = _problem(runs, prior={"C": (0.1, 0.05)})
    sub = prob.thinned(600)
    z = prob.pmap.clip(prob.pmap.start([dict(MomentumLaw().guesses(r)[0]) for r in runs.values()]))
    full, thin = prob.residuals(z), sub.residuals(z)
    m = sub.stride
    assert m == 10
    # data residuals are the full problem's at the kept rows, in the same (noise sd) units
    np.testing.assert_allclose(thin[: sub.n], full[: prob.n][sub.rows], rtol=1e-12)
    # the prior term is weakened by the thinning factor, like the data sum
    np.testing.assert_allclose(thin[sub.n :] ** 2 * m, full[prob.n :] ** 2, rtol=1e-12)


def test_misfit_increase_matches_the_exact_sum_on_all_points() -> None:
    # one run of 6,000 points: the replicate check evaluates the model on 1,000 of them
    runs = _runs(1, n_points=6000)
    prob = _problem(runs)
    pm = prob.pmap
    z0 = pm.clip(pm.start([dict(MomentumLaw().guesses(r)[0]) for r in runs.values()]))
    best = problem._least_squares(prob, z0, "linear", 1.0)
    inc = intervals._MisfitIncrease(prob, best, prob.n)
    assert inc.check is not prob and inc.check.n < 1100  # thinned
    r0 = best.fun[: prob.n]
    # steps along the well- and the poorly-determined directions, from inside the
    # likelihood region (increase ~ 1) to far outside it (~1e4): the model is nonlinear there
    _, sv, vt = np.linalg.svd(best.jac, full_matrices=False)
    seen = []
    for j in (1, vt.shape[0] - 1):
        for size in (1.0, 5.0, 30.0, 100.0):
            z = np.clip(best.x + size * vt[j] / sv[j], pm.lower, pm.upper)
            r = prob.residuals(z)[: prob.n]
            exact = float(r @ r - r0 @ r0)
            seen.append(exact)
            assert inc(z) == pytest.approx(exact, rel=0.03, abs=0.3)
    assert min(seen) < 3 and max(seen) > 1e3
