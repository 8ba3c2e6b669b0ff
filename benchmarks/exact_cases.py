"""Exact cases at full length: full-batch GD of linear models on MNIST pixels and the
teacher-student regression, against the certified lower bounds (theory §5.1).

Prints, per shipped exact config: K^2, lambda_max, the final loss, the final certified
bounds (phi_hi = K^2 where the step size allows it, and lambda_max), the least-squares
optimum for MSE, the smallest margin L_k - Lambda_k, max_k rho_k / lambda_max (rho =
||grad L||^2 / R, at most 1), and whether a bound was crossed.

    python benchmarks/exact_cases.py [--steps N] [--out runs/exact]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from lossrate.experiments import load_config, run_experiment

CONFIGS = ["linreg_mnist_gd", "logreg_mnist_binary_gd", "logreg_mnist_10_gd", "teacher_student_gd"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps", type=int, default=0, help="override train.steps (0: the config's)"
    )
    parser.add_argument("--out", default="runs/exact", help="folder for the runs (replaced)")
    args = parser.parse_args()
    out = Path(args.out)
    head = f"{'config':<24}{'K^2':>9}{'lam_max':>9}{'L_final':>11}{'bound_K':>10}{'bound_lam':>11}{'optimum':>10}{'margin':>11}{'rho/lam':>9}  crossed  secs"
    print(head)
    for name in CONFIGS:
        cfg = load_config(name)
        if args.steps:
            cfg = cfg.override({"train.steps": args.steps})
        run_dir = out / name
        shutil.rmtree(run_dir, ignore_errors=True)
        t0 = time.perf_counter()
        run_experiment(cfg, run_dir, device="cpu", progress=False)
        s = json.loads((run_dir / "exact.json").read_text())

        def num(v: object, w: int) -> str:
            return f"{v:>{w}.4g}" if isinstance(v, float) else f"{'n/a':>{w}}"

        print(
            f"{name:<24}{num(s['k_sq'], 9)}{num(s['lambda_max'], 9)}{num(s['final_loss'], 11)}"
            f"{num(s['final_bound_k'], 10)}{num(s['final_bound_lambda'], 11)}{num(s['optimum'], 10)}"
            f"{num(s['margin'], 11)}{num(s['rho_max_over_lambda_max'], 9)}  {s['crossed']!s:<7}{time.perf_counter() - t0:6.1f}"
        )
        for note in s["notes"]:
            print(f"    note: {note}")


if __name__ == "__main__":
    main()
