"""Seeded synthetic multi-run data from the core's Bernoulli noise solver (ode_noise curves)."""

from __future__ import annotations

import numpy as np

from lossrate import RunMeta, Schedule, Trajectory
from lossrate._model import RunData
from lossrate.prior import prior_model

ETA_REF = 0.4
TRUTH = {"rho_ref": 0.03, "S0": 20.0, "beta": 0.5, "L0": 4.0, "k": 2.0, "x_eq": 0.8, "q": 0.5}
N_STEPS = 1000


def make_run(
    name: str,
    eta: float,
    shape: str,
    seed: int,
    *,
    noise: float = 0.003,
    every: int = 20,
    loss: str | None = "ce",
    l_inf: float | None = None,
) -> tuple[RunData, float]:
    """One run of the ode_noise model (truth TRUTH, L_inf drawn per run) with log-normal noise."""
    rng = np.random.default_rng(seed)
    kw = {"decay_start": int(0.8 * N_STEPS)} if shape == "wsd" else {}
    final = 0.05 * eta if shape != "constant" else 0.0
    sched = Schedule.make(shape, peak=eta, n_steps=N_STEPS, warmup=20, final=final, **kw)
    steps = np.arange(every, N_STEPS, every)  # from step > 0: the peers need S > 0
    meta = RunMeta(name=name, peak_lr=eta, loss=loss, schedule=shape)
    traj = Trajectory.from_arrays(np.ones(steps.size), step=steps, lr=sched.at(steps), meta=meta)
    theta = dict(TRUTH)
    theta["L_inf"] = 1.0 + 0.03 * rng.standard_normal() if l_inf is None else l_inf
    model = prior_model("ode_noise")
    import dataclasses

    model = dataclasses.replace(model, eta_ref=ETA_REF)
    clean = model.curve(theta, RunData(traj, sched), steps)
    y = clean * np.exp(rng.normal(0.0, noise, clean.size))
    return RunData(traj.replace(loss=y), sched), theta["L_inf"]
