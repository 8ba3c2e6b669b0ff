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


def generate(
    cache: str | Path = "cache/sweep",
    steps: int = 300,
    sweep: str = "sweep_schedules",
    only: str = "",
) -> list[Path]:
    """Train every run of the sweep not yet cached; return the run folders (cached or new)."""
    import torch

    from lossrate.experiments.config import load_sweep
    from lossrate.experiments.runner import run_experiment

    torch.set_num_threads(1)
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    configs = load_sweep(sweep).expand()
    t0 = time.perf_counter()
    out = []
    for i, cfg in enumerate(configs):
        if only and only not in cfg.name:
            continue
        cfg = cfg.override(
            {
                "train.steps": steps,
                "train.eval_every": max(steps // 3, 1),
                "train.checkpoint_every": max(steps // 3, 1),
            }
        )
        run_dir = cache / cfg.name
        out.append(run_dir)
        done = run_dir / "sweep_done"
        if done.exists():
            print(f"[{i + 1}/{len(configs)}] {cfg.name}: cached", flush=True)
            continue
        t = time.perf_counter()
        run_experiment(cfg, run_dir, resume=True, progress=False)
        done.write_text("complete\n")
        print(f"[{i + 1}/{len(configs)}] {cfg.name}: {time.perf_counter() - t:.0f} s", flush=True)
    print(f"sweep done in {time.perf_counter() - t0:.0f} s -> {cache}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", default="cache/sweep")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--sweep", default="sweep_schedules")
    ap.add_argument("--only", default="", help="substring of the run names to generate")
    args = ap.parse_args()
    generate(args.cache, args.steps, args.sweep, args.only)


if __name__ == "__main__":
    main()
