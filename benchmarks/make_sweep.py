"""Generate (once) the transfer sweep: Fashion-MNIST CNN and WordNet text classifier at
3 peak lr x {constant, cosine, WSD decaying over the last 20 %} x 2 seeds.

Uses the shipped sweep config ``sweep_schedules`` (lossrate.experiments.config.load_sweep),
shortened to ``--steps`` optimizer steps per run so the whole sweep fits in ~15 minutes on
2 cores. Each run goes to ``<cache>/<run name>/`` through
:func:`lossrate.experiments.runner.run_experiment` with ``resume=True``: a complete run is
skipped, a half-done one continues from its checkpoint, so the script can be re-run.

    python benchmarks/make_sweep.py [--cache cache/sweep] [--steps 300] [--only fashion]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", default="cache/sweep")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--sweep", default="sweep_schedules")
    ap.add_argument("--only", default="", help="substring of the run names to generate")
    args = ap.parse_args()
    import torch

    from lossrate.experiments.config import load_sweep
    from lossrate.experiments.runner import run_experiment

    torch.set_num_threads(1)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    configs = load_sweep(args.sweep).expand()
    t0 = time.perf_counter()
    for i, cfg in enumerate(configs):
        if args.only and args.only not in cfg.name:
            continue
        cfg = cfg.override(
            {
                "train.steps": args.steps,
                "train.eval_every": max(args.steps // 3, 1),
                "train.checkpoint_every": max(args.steps // 3, 1),
            }
        )
        run_dir = cache / cfg.name
        done = run_dir / "sweep_done"
        if done.exists():
            print(f"[{i + 1}/{len(configs)}] {cfg.name}: cached")
            continue
        t = time.perf_counter()
        run_experiment(cfg, run_dir, resume=True, progress=False)
        done.write_text("complete\n")
        print(f"[{i + 1}/{len(configs)}] {cfg.name}: {time.perf_counter() - t:.0f} s")
    print(f"sweep done in {time.perf_counter() - t0:.0f} s -> {cache}")


if __name__ == "__main__":
    main()
