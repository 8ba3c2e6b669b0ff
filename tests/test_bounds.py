"""Floors, certified lower bounds, and time/steps/energy to a target (theory §5, §7 item 4)."""

from __future__ import annotations

import numpy as np
import pytest

from lossrate import InvalidArgumentError, RunMeta, Schedule, Trajectory
from lossrate.bounds import (
    certified_lower_bound,
    energy_to_target,
    floor,
    steps_to_target,
    time_to_target,
)
from lossrate.closures import get_closure
from lossrate.rates import Constant, PowerLaw, ScheduleRate
from lossrate.solve import solve, solve_ode
from problems import case, gd_losses, linear_regression, rel

FLOOR_CLOSURES = [
    ("mse", get_closure("mse", a=0.5), 2.0),
    ("linear_floor", get_closure("mse", a=0.25, floor=0.3), 2.5),
    ("power_k2", get_closure("power", c=1.2, k=2.0, floor=0.1), 2.0),
    ("ce", get_closure("ce"), 6.0),
]


@pytest.mark.parametrize(
    ("name", "closure", "L0"), FLOOR_CLOSURES, ids=[f[0] for f in FLOOR_CLOSURES]
)
def test_budget_floor_matches_a_long_horizon_solve(name: str, closure, L0: float) -> None:
    rate = PowerLaw(0.8, 5.0, 2.5)  # Phi_inf = 0.8 * 5 / 1.5
    expected = floor(closure, rate, L0)
    long = solve_ode(closure, rate, L0, [0.0, 1e9], rtol=1e-11).loss[-1]
    assert rel(long, expected) < 1e-8
    assert rel(solve(closure, rate, L0, [1e12]).loss[-1], expected) < 1e-12
    assert expected > closure.floor


def test_floor_closed_forms() -> None:
    rate = PowerLaw(0.8, 5.0, 1.5)
    P = 0.8 * 5.0 / 0.5
    assert rel(floor("mse", rate, 2.0), 2.0 * np.exp(-4 * 1.0 * P)) < 1e-12
    lin = get_closure("mse", a=0.25, floor=0.3)
    assert rel(floor(lin, rate, 2.5), 0.3 + 2.2 * np.exp(-P)) < 1e-12
    pw = get_closure("power", c=1.2, k=3.0, floor=0.1)
    assert rel(floor(pw, rate, 2.0), 0.1 + (1.9**-2 + 2 * 1.2 * P) ** -0.5) < 1e-12
    # Phi_inf = inf: the closure's own floor; MAE reaches its floor with a finite budget
    assert floor(lin, PowerLaw(0.8, 5.0, 0.9), 2.5) == 0.3
    assert floor("mae", rate, 3.0) == 0.0
    many = floor(lin, PowerLaw(0.8, 5.0, np.array([[0.5], [1.5]])), 2.5)
    assert (
        many.shape == (2, 1)
        and many[0, 0] == 0.3
        and rel(many[1, 0], 0.3 + 2.2 * np.exp(-P)) < 1e-12
    )


def test_schedule_budget_floor_is_the_end_of_training() -> None:
    sched = Schedule.cosine(0.1, 200, warmup=10)
    rate = ScheduleRate(sched, 1.0, 2.0, 0.5)
    ce = get_closure("ce")
    assert rel(floor(ce, rate, 4.0), solve(ce, rate, 4.0, [200.0]).loss[0]) < 1e-13


@pytest.mark.parametrize("name", ["ce_wright_omega", "power_k3.5", "linear_floor", "mae"])
def test_hitting_time_matches_the_event_of_the_ode(name: str) -> None:
    c = case(name)
    target = c.closure.floor + 0.3 * (c.L0 - c.closure.floor)
    T = float(time_to_target(c.closure, c.rate, c.L0, target))
    sol = solve_ode(c.closure, c.rate, c.L0, [0.0, 2 * T], targets=[target], rtol=1e-11)
    assert rel(sol.hit_times[target], T) < 1e-8
    assert rel(solve(c.closure, c.rate, c.L0, [T]).loss, target) < 1e-12


def test_time_to_target_edges() -> None:
    ce = get_closure("ce")
    finite = PowerLaw(0.8, 5.0, 1.5)
    L_floor = float(floor(ce, finite, 6.0))
    T = time_to_target(ce, finite, 6.0, [7.0, 6.0, 1.01 * L_floor, L_floor, 0.99 * L_floor, -1.0])
    assert T[0] == 0.0 and T[1] == 0.0
    assert np.isfinite(T[2]) and T[2] > 0
    assert np.all(np.isinf(T[3:]))  # at or below the budget floor: never
    # below the closure's own floor with an unbounded budget: never
    lin = get_closure("mse", a=0.25, floor=0.3)
    assert time_to_target(lin, Constant(1.0), 2.0, 0.29) == np.inf
    # MSE: T = ln(L0 / L) / (4 a phi)
    assert rel(time_to_target("mse", Constant(0.5), 2.0, 0.2), np.log(10) / (4 * 0.5)) < 1e-13
    with pytest.raises(InvalidArgumentError, match="L0"):
        time_to_target(lin, Constant(1.0), 0.2, 0.25)


def test_mse_with_beta_one_is_an_exact_power_law() -> None:
    a, phi0, t0 = 0.5, 0.6, 4.0
    t = np.geomspace(1e-2, 1e6, 40)
    sol = solve(get_closure("mse", a=a), PowerLaw(phi0, t0, 1.0), 3.0, t)
    assert rel(sol.loss, 3.0 * (1 + t / t0) ** (-4 * a * phi0 * t0)) < 1e-12
    ode = solve_ode(get_closure("mse", a=a), PowerLaw(phi0, t0, 1.0), 3.0, t, rtol=1e-11)
    assert rel(ode.loss, sol.loss) < 1e-8


def test_certified_bound_lies_below_gradient_descent() -> None:
    X, y = linear_regression()
    n = X.shape[0]
    K2 = float(np.trace(X.T @ X) / n)  # mean |x_i|^2
    lr, steps = 0.02, 400
    gd = gd_losses(X, y, lr, steps)
    mse = get_closure("mse", a=0.5)  # l_i = (x_i.w - y_i)^2 / 2: R = 2 L exactly
    k = np.arange(steps + 1, dtype=float)
    flow = certified_lower_bound(mse, K2, gd[0], lr * k)  # intrinsic time t = lr * k
    assert flow.success
    assert np.all(flow.loss <= gd)
    discrete = certified_lower_bound(mse, K2, gd[0], k, gd_lr=lr)
    assert np.all(discrete.loss <= gd)
    assert np.all(discrete.loss[1:] <= flow.loss[1:])
    # one noise-free feature: K^2 = lambda, and the discrete bound L0 (1 - 2 lr K^2)^k is
    # nearly tight against GD's L0 (1 - lr lambda)^(2k)
    X1 = X[:, :1]
    y1 = 1.7 * X1[:, 0]
    gd1 = gd_losses(X1, y1, 0.05, 30)
    tight = certified_lower_bound(
        mse, float(X1[:, 0] @ X1[:, 0] / n), gd1[0], np.arange(31), gd_lr=0.05
    )
    assert np.all(tight.loss <= gd1) and tight.loss[10] > 0.5 * gd1[10]
    with pytest.raises(InvalidArgumentError, match="gd_lr"):
        certified_lower_bound(mse, K2, gd[0], k, gd_lr=1.0)


def test_certified_bound_with_sigma_and_ce() -> None:
    ce = get_closure("ce")
    t = np.linspace(0, 5, 11)
    free = certified_lower_bound(ce, 2.0, 3.0, t)
    with_sigma = certified_lower_bound(ce, 2.0, 3.0, t, sigma=lambda s: 0.1)
    mean_field = solve(ce, Constant(2.0), 3.0, t).loss
    assert np.all(free.loss[1:] < mean_field[1:]) and np.all(with_sigma.loss[1:] < mean_field[1:])
    with pytest.raises(InvalidArgumentError, match="upper"):
        certified_lower_bound(get_closure("power"), 2.0, 3.0, t)


def test_steps_and_energy_to_target() -> None:
    ce, rate = get_closure("ce"), PowerLaw(1.0, 10.0, 0.5)
    sched = Schedule.constant(0.1, 1000)
    T = float(time_to_target(ce, rate, 5.0, 2.0))
    N = float(steps_to_target(ce, rate, 5.0, 2.0, sched))
    assert N == np.ceil(T / 0.1)
    assert steps_to_target(ce, rate, 5.0, 1e-4, sched) == np.inf  # beyond the schedule
    est = energy_to_target(ce, rate, 5.0, 2.0, sched, energy_per_step=50.0)
    assert est.steps == N and est.energy_j == pytest.approx(50.0 * N)
    assert "constant 50 J" in est.source and "steps" in est.report()
    per_step = np.linspace(1, 2, 1000)
    est = energy_to_target(ce, rate, 5.0, 2.0, sched, energy_per_step=per_step)
    assert est.energy_j == pytest.approx(per_step[: int(N)].sum())
    short = energy_to_target(ce, rate, 5.0, 2.0, sched, energy_per_step=per_step[:10])
    assert short.notes and short.energy_j == pytest.approx(per_step[:10].sum() * N / 10)
    traj = Trajectory.from_arrays(
        np.linspace(5, 1, 200),
        lr=np.full(200, 0.1),
        energy_j=np.full(200, 7.0),
        meta=RunMeta(energy_source="nvml", name="run1"),
    )
    est = energy_to_target(ce, rate, 5.0, 2.0, sched, energy_per_step=traj)
    assert est.energy_j == pytest.approx(7.0 * N) and "nvml" in est.source and "run1" in est.source
    never = energy_to_target(ce, PowerLaw(1.0, 10.0, 1.5), 5.0, 1e-3, sched, energy_per_step=1.0)
    assert never.steps == np.inf and "not reached" in never.report()
    # a step-time rate needs no schedule
    srate = ScheduleRate(sched, 1.0, 10.0, 0.5)
    assert steps_to_target(ce, srate, 5.0, 2.0) == N
    with pytest.raises(InvalidArgumentError, match="schedule"):
        steps_to_target(ce, rate, 5.0, 2.0)
    with pytest.raises(InvalidArgumentError, match="energy_j"):
        energy_to_target(
            ce, rate, 5.0, 2.0, sched, energy_per_step=Trajectory.from_arrays([1.0, 0.5])
        )
