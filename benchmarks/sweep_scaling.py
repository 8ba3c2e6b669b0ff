"""Speed-up of lossrate's work on a local Ray at 1 and 2 workers, measured in one run
(goal, issue 17: >= 1.7x at 2 workers on 2 cores), plus Ray's scheduling overhead per task.

* ``sweep``: the shipped 36-run schedule sweep (``sweep_schedules``, shortened to
  ``--steps``), each run one Ray task.
* ``evaluate``: ``lossrate.evaluate`` of ``--curves`` (200) synthetic curves, each from a
  known power law in steps, L = L_inf + A (1 + step / 50)^-alpha with L_inf, A, alpha drawn
  per curve and 1 % multiplicative noise, all from ``numpy.random.default_rng(1000 + i)``
  (reproducible, no data set needed), by the peer power law ``power_steps`` at evaluate's
  four prefix fractions: 800 (curve, k) fits, each one Ray task. It runs serially (no Ray)
  and with ``address="local"`` at 1 and 2 workers on a Ray started (and warmed) before the
  clock starts (its start is printed apart), checks that the three tables are identical
  (all but the ``seconds`` column), and prints the speed-up and the overhead per task
  (Ray at 1 worker minus serial, per fit).

Needs ``pip install 'lossrate[ray]'``.

    python benchmarks/sweep_scaling.py [--parts sweep,evaluate] [--steps 60] [--workers 1,2]
        [--only fashion] [--curves 200]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import dataclasses
import shutil
import tempfile
import time
from pathlib import Path


def task_overhead(n: int = 200) -> float:
    """Seconds per empty Ray task on a local Ray with 2 CPUs (submit, run, get)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        noop = ray.remote(num_cpus=1)(lambda: None)
        ray.get([noop.remote() for _ in range(10)])  # warm the workers
        t0 = time.perf_counter()
        ray.get([noop.remote() for _ in range(n)])
        return (time.perf_counter() - t0) / n
    finally:
        ray.shutdown()


def curves(n: int) -> dict[str, object]:
    """``n`` synthetic curves from a power law in steps with seeded noise (module docstring)."""
    import numpy as np

    from lossrate import RunMeta, Trajectory

    out = {}
    for i in range(n):
        rng = np.random.default_rng(1000 + i)
        points = int(rng.integers(300, 600))
        step = 10.0 * np.arange(1, points + 1)
        law = (
            2.0
            + 0.5 * rng.random()
            + (3.0 + rng.random()) * (1.0 + step / 50.0) ** -(0.4 + 0.3 * rng.random())
        )
        loss = law * np.exp(0.01 * rng.standard_normal(points))
        name = f"c{i:03d}"
        meta = RunMeta(name=name)
        out[name] = Trajectory.from_arrays(loss, step=step, lr=np.full(points, 3e-4), meta=meta)
    return out


def evaluate_scaling(n_curves: int, worker_counts: list[int]) -> None:
    """The ``evaluate`` row (module docstring): serial, then Ray at each worker count."""
    import dataclasses

    import ray

    from lossrate import evaluate

    runs = curves(n_curves)
    model = ["power_steps"]

    def table(tab: object) -> list[str]:
        return [repr(dataclasses.replace(r, seconds=0.0)) for r in tab.rows]  # type: ignore[attr-defined]

    t0 = time.perf_counter()
    serial = evaluate(runs, model)
    t_serial = time.perf_counter() - t0
    n = len(serial.rows)
    failed = sum(not r.fit_ok for r in serial.rows)
    print(
        f"evaluate: {n_curves} curves x 4 fractions = {n} fits of power_steps "
        f"({failed} failed), serial (no Ray): {t_serial:.1f} s",
        flush=True,
    )
    times = {}
    for workers in worker_counts:
        t0 = time.perf_counter()
        ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False)
        try:
            warm = dict(list(runs.items())[: 2 * workers])
            evaluate(warm, model, fractions=(0.5,), address="local")  # workers import lossrate
            start = time.perf_counter() - t0
            t0 = time.perf_counter()
            on_ray = evaluate(runs, model, address="local")
            times[workers] = time.perf_counter() - t0
        finally:
            ray.shutdown()
        same = table(on_ray) == table(serial)
        print(
            f"evaluate on Ray, {workers} worker(s): {times[workers]:.1f} s (Ray start and "
            f"warm-up {start:.1f} s, not counted); table identical to the serial one: {same}",
            flush=True,
        )
        if not same:
            raise SystemExit("the Ray table differs from the serial one")
    first = min(times)
    for workers, seconds in sorted(times.items()):
        print(
            f"evaluate speed-up at {workers} worker(s): {times[first] / seconds:.2f}x "
            f"({t_serial / seconds:.2f}x the serial time)"
        )
    if 1 in times:
        print(
            "evaluate overhead per task (Ray at 1 worker minus serial, per fit): "
            f"{1e3 * (times[1] - t_serial) / n:.2f} ms of {1e3 * t_serial / n:.1f} ms per fit"
        )


def main() -> None:
    from lossrate.experiments.sweep_exec import ray_available

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--only", default="", help="keep the base experiments whose name holds it")
    ap.add_argument("--parts", default="sweep,evaluate", help="sweep, evaluate or both")
    ap.add_argument("--curves", type=int, default=200, help="curves of the evaluate row")
    args = ap.parse_args()
    if not ray_available():
        raise SystemExit("Ray is not installed: pip install 'lossrate[ray]'")
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    unknown = parts - {"sweep", "evaluate"}
    if unknown or not parts:
        raise SystemExit(f"--parts {args.parts!r}: give sweep, evaluate or sweep,evaluate")
    worker_counts = [int(w) for w in args.workers.split(",")]
    if "sweep" in parts:
        sweep_scaling(args.steps, worker_counts, args.only)
    if "evaluate" in parts:
        evaluate_scaling(args.curves, worker_counts)
    print(f"Ray overhead per task (empty tasks, local, 2 CPUs): {1e3 * task_overhead():.2f} ms")


def sweep_scaling(steps: int, worker_counts: list[int], only: str) -> None:
    """The ``sweep`` row (module docstring)."""
    from lossrate.experiments.sweep import load_sweep
    from lossrate.experiments.sweep_exec import run_sweep

    sweep = load_sweep("sweep_schedules")
    if only:
        sweep = dataclasses.replace(sweep, base=tuple(b for b in sweep.base if only in b))
    every = max(steps // 3, 1)
    sweep = sweep.with_changes(
        {"train.steps": steps, "train.eval_every": every, "train.checkpoint_every": every}
    )
    n = len(sweep.plan())
    times = {}
    for workers in worker_counts:
        out = Path(tempfile.mkdtemp(prefix=f"sweep-scaling-{workers}-"))
        t0 = time.perf_counter()
        result = run_sweep(sweep, out, executor="ray", workers=workers, progress=False)
        times[workers] = time.perf_counter() - t0
        shutil.rmtree(out, ignore_errors=True)
        assert not result.failed, result.failed
        print(
            f"sweep: {n} runs x {steps} steps, {workers} worker(s): {times[workers]:.1f} s",
            flush=True,
        )
    first = min(times)
    for workers, seconds in sorted(times.items()):
        print(f"sweep speed-up at {workers} worker(s): {times[first] / seconds:.2f}x")


if __name__ == "__main__":
    main()
