"""The fitted ODE's components (closure, rate, L0) reproduce its own curve through the core
solver, so floors and times to target are computed on the model that was fitted."""

from __future__ import annotations

import numpy as np
import pytest

from lossrate import RunData, RunMeta, Schedule, Trajectory, floor, get_model, solve, time_to_target
from lossrate.closures import Shifted, get_closure


@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_components_reproduce_the_model_curve(loss: str) -> None:
    sched = Schedule.cosine(0.1, 3000, final=0.01, warmup=100)
    steps = np.arange(200, 3000, 20)
    traj = Trajectory.from_arrays(
        np.linspace(2.0, 0.5, steps.size),
        step=steps,
        t=sched.S(steps),
        meta=RunMeta(loss=loss, classes=10),
    )
    run = RunData(traj, sched)
    model = get_model("ode")
    theta = {"rho_ref": 0.4, "S0": 3.0, "beta": 0.8, "L_inf": 0.05, "L0": 2.1}
    closure, rate, L0 = model.components(theta, run)
    tau = sched.S(steps) - sched.S(steps[:1])
    np.testing.assert_allclose(
        solve(closure, rate, L0, tau).loss, model.curve(theta, run, steps), rtol=1e-10
    )
    # beta < 1: Phi is unbounded, so the floor is the fitted L_inf and the target is reached
    assert float(floor(closure, rate, L0)) == pytest.approx(0.05, abs=1e-12)
    T = float(time_to_target(closure, rate, L0, 0.3))
    mid = solve(closure, rate, L0, [T]).loss[-1]
    assert mid == pytest.approx(0.3, rel=1e-8)


def test_shifted_closure_round_trip_and_errors() -> None:
    c = Shifted(get_closure("ce", classes=10, alpha=1.5), 0.2)
    L = np.array([0.2001, 0.5, 3.0])
    np.testing.assert_allclose(c.G_inv(c.G(L)), L, rtol=1e-12)
    np.testing.assert_allclose(c.g(L), get_closure("ce", classes=10, alpha=1.5).g(L - 0.2))
    with pytest.raises(ValueError, match="shift"):
        Shifted(get_closure("ce", classes=10), -1.0)
