"""Generate (once) the transfer sweep: Fashion-MNIST CNN and WordNet text classifier at
3 peak lr x {constant, cosine, WSD decaying over the last 20 %} x 2 seeds.

Runs the shipped sweep config ``sweep_schedules`` (what ``lossrate sweep sweep_schedules``
runs), shortened to ``--steps`` optimizer steps per run so the whole sweep fits in ~15
minutes on 2 cores. Each run goes to ``<cache>/<run name>/`` through
:func:`lossrate.experiments.sweep_exec.run_sweep` with ``resume=True``: a complete run (marker
``sweep_done``) is skipped, a half-done one continues from its checkpoint, so the script can
be re-run.

    python benchmarks/make_sweep.py [--cache cache/sweep] [--steps 300] [--only fashion]
        [--executor serial|ray|auto] [--workers 2]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import time
from pathlib import Path


def generate(
    cache: str | Path = "cache/sweep",
    steps: int = 300,
    sweep: str = "sweep_schedules",
    only: str = "",
    executor: str = "serial",
    workers: int | None = None,
) -> list[Path]:
    """Train every run of the sweep not yet cached; return the run folders (cached or new).

    The same as ``lossrate sweep sweep_schedules --out CACHE --resume --set train.steps=STEPS``
    (plus eval and checkpoints every STEPS/3); ``only`` keeps the base experiments whose name
    holds it."""
    import dataclasses

    import torch

    from lossrate.experiments.sweep import load_sweep
    from lossrate.experiments.sweep_exec import run_sweep

    torch.set_num_threads(1)
    plan = load_sweep(sweep)
    if only:
        plan = dataclasses.replace(plan, base=tuple(b for b in plan.base if only in b))
    plan = plan.with_changes(
        {
            "train.steps": steps,
            "train.eval_every": max(steps // 3, 1),
            "train.checkpoint_every": max(steps // 3, 1),
        }
    )
    t0 = time.perf_counter()
    result = run_sweep(
        plan, cache, resume=True, retries=0, executor=executor, workers=workers, progress=True
    )
    for o in result.outcomes:
        note = "cached" if o.status == "skipped" else f"{o.status} in {o.seconds:.0f} s {o.error}"
        print(f"{o.name}: {note}", flush=True)
    print(f"sweep done in {time.perf_counter() - t0:.0f} s -> {cache}", flush=True)
    if result.failed:
        raise SystemExit(f"{len(result.failed)} runs failed: {[o.name for o in result.failed]}")
    return [o.run_dir for o in result.outcomes]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", default="cache/sweep")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--sweep", default="sweep_schedules")
    ap.add_argument("--only", default="", help="substring of the base experiments to generate")
    ap.add_argument("--executor", default="serial", choices=("serial", "ray", "auto"))
    ap.add_argument("--workers", type=int, default=None, help="CPUs of a local Ray")
    args = ap.parse_args()
    generate(args.cache, args.steps, args.sweep, args.only, args.executor, args.workers)


if __name__ == "__main__":
    main()
