"""Speed-up of ``lossrate sweep`` on a local Ray: the shipped 36-run schedule sweep
(``sweep_schedules``, shortened to ``--steps``) at 1 and 2 workers, measured in one run,
plus Ray's scheduling overhead per task (empty tasks). Goal (issue 17): >= 1.7x at 2 workers
on 2 cores. Needs ``pip install 'lossrate[ray]'``. The ``evaluate`` half of the issue's
benchmark waits for batch fitting on Ray.

    python benchmarks/sweep_scaling.py [--steps 60] [--workers 1,2] [--only fashion]
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


def main() -> None:
    from lossrate.experiments.sweep import load_sweep
    from lossrate.experiments.sweep_exec import ray_available, run_sweep

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--only", default="", help="keep the base experiments whose name holds it")
    args = ap.parse_args()
    if not ray_available():
        raise SystemExit("Ray is not installed: pip install 'lossrate[ray]'")
    sweep = load_sweep("sweep_schedules")
    if args.only:
        sweep = dataclasses.replace(sweep, base=tuple(b for b in sweep.base if args.only in b))
    every = max(args.steps // 3, 1)
    sweep = sweep.with_changes(
        {"train.steps": args.steps, "train.eval_every": every, "train.checkpoint_every": every}
    )
    n = len(sweep.plan())
    times = {}
    for workers in [int(w) for w in args.workers.split(",")]:
        out = Path(tempfile.mkdtemp(prefix=f"sweep-scaling-{workers}-"))
        t0 = time.perf_counter()
        result = run_sweep(sweep, out, executor="ray", workers=workers, progress=False)
        times[workers] = time.perf_counter() - t0
        shutil.rmtree(out, ignore_errors=True)
        assert not result.failed, result.failed
        print(
            f"{n} runs x {args.steps} steps, {workers} worker(s): {times[workers]:.1f} s",
            flush=True,
        )
    first = min(times)
    for workers, seconds in sorted(times.items()):
        print(f"speed-up at {workers} worker(s): {times[first] / seconds:.2f}x")
    print(f"Ray overhead per task (empty tasks, local, 2 CPUs): {1e3 * task_overhead():.2f} ms")


if __name__ == "__main__":
    main()
