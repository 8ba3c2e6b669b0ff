"""Solver speed: vectorised reparametrised solve vs a per-curve solve_ivp loop, and the
closed-form SGD-noise (Bernoulli) solver on a 72,000-step schedule.

Prints one table. Targets (brief of the numerical core): 10,000 curves x 1,000 times in
<= 1 s on 2 cores, >= 100x faster per curve than solve_ivp, max relative difference
<= 1e-6; the Bernoulli solver < 5 ms for one 72,000-step curve.

    .venv/bin/python benchmarks/solver_speed.py [--curves 10000] [--times 1000] [--ode-curves 50]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from lossrate import Schedule
from lossrate.closures import get_closure
from lossrate.rates import PowerLaw, power_noise_path
from lossrate.solve import solve, solve_ode


def best_of(fn, repeat: int) -> tuple[float, object]:
    best, out = np.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--curves", type=int, default=10_000)
    ap.add_argument("--times", type=int, default=1_000)
    ap.add_argument("--ode-curves", type=int, default=50)
    ap.add_argument("--steps", type=int, default=72_000)
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    m = args.curves
    phi0 = rng.uniform(0.05, 2.0, (m, 1))
    t0 = 10 ** rng.uniform(0.0, 3.0, (m, 1))
    beta = rng.uniform(0.0, 2.0, (m, 1))
    L0 = rng.uniform(1.0, 8.0, (m, 1))
    t = np.concatenate([[0.0], np.geomspace(1e-2, 1e5, args.times - 1)])
    ce = get_closure("ce", classes=10, alpha=1.5)

    t_vec, sol = best_of(lambda: solve(ce, PowerLaw(phi0, t0, beta), L0, t), 3)
    loss = sol.loss  # type: ignore[attr-defined]

    k = args.ode_curves
    idx = rng.choice(m, size=k, replace=False)
    start = time.perf_counter()
    ode = np.array(
        [
            solve_ode(ce, PowerLaw(phi0[i, 0], t0[i, 0], beta[i, 0]), L0[i, 0], t, rtol=1e-10).loss
            for i in idx
        ]
    )
    t_ode = time.perf_counter() - start
    diff = float(np.max(np.abs(ode - loss[idx]) / loss[idx]))
    per_vec, per_ode = t_vec / m, t_ode / k

    sched = Schedule.wsd(3e-4, args.steps, decay_start=int(0.8 * args.steps), warmup=500)
    par = dict(L0=8.0, k=2.5, a=0.7, rho0=3.0, S0=0.5, beta=0.6, c=40.0, floor=1.5)
    t_b1, _ = best_of(lambda: power_noise_path(sched, **par, p=1.0, gamma=1.0), 20)
    t_b2, _ = best_of(lambda: power_noise_path(sched, **par, p=0.8, gamma=0.6), 20)
    cs = rng.uniform(1.0, 80.0, (100, 1))
    t_b3, _ = best_of(lambda: power_noise_path(sched, **{**par, "c": cs}, p=1.0, gamma=1.0), 3)

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"lossrate solver speed — {platform.processor() or platform.machine()}, {cores} cores, numpy {np.__version__}"
    )
    rows = [
        (
            "vectorised solve (CE + power law)",
            f"{m} curves x {t.size} times",
            f"{t_vec:.3f} s",
            "<= 1 s",
        ),
        ("  per curve", "", f"{per_vec * 1e6:.2f} us", ""),
        (
            "solve_ode loop (LSODA, rtol 1e-10)",
            f"{k} curves x {t.size} times",
            f"{t_ode:.3f} s",
            "",
        ),
        ("  per curve", "", f"{per_ode * 1e3:.2f} ms", ""),
        ("speed-up per curve", "", f"{per_ode / per_vec:,.0f}x", ">= 100x"),
        ("max relative difference", f"{k} curves", f"{diff:.2e}", "<= 1e-6"),
        (
            "Bernoulli noise solver, gamma=1 p=1",
            f"1 curve x {args.steps} steps",
            f"{t_b1 * 1e3:.2f} ms",
            "< 5 ms",
        ),
        (
            "Bernoulli noise solver, gamma=0.6 p=0.8",
            f"1 curve x {args.steps} steps",
            f"{t_b2 * 1e3:.2f} ms",
            "< 5 ms",
        ),
        (
            "Bernoulli noise solver, gamma=1 p=1",
            f"100 curves x {args.steps} steps",
            f"{t_b3 * 1e3:.1f} ms",
            "",
        ),
    ]
    w = [max(len(r[i]) for r in rows) for i in range(4)]
    header = ("what", "size", "time", "target")
    print("  ".join(h.ljust(w[i]) for i, h in enumerate(header)))
    print("  ".join("-" * w[i] for i in range(4)))
    for r in rows:
        print("  ".join(c.ljust(w[i]) for i, c in enumerate(r)))


if __name__ == "__main__":
    main()
