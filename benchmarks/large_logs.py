"""Large logs: `lossrate fit` (the default model, auto) on CSV logs of 1 and 5 million rows.

Each log is a synthetic run (5 % warmup then cosine to 10 % of the peak lr, a power law
in the lr sum, 5 % log-normal noise), written as ``step,loss,lr`` (and once with a
``loss_std`` column). For each one the table shows the rows read, the points the fit
saw (the reader bins a log longer than 20,000 rows by step: readers/_bins.py), the wall
and CPU seconds and the peak resident memory of the `lossrate fit` process (from
``os.wait4``), and its answer (the predicted final loss with its 90 % interval) beside the
answer fitted on every row (``read_csv(max_points=None)``, the same fit through the
Python API, timed the same way): the binned answer should lie inside the full-data
interval. Goal: <= 60 s and <= 1 GB at 5 M rows on 2 cores.

Usage::

    python benchmarks/large_logs.py                 # 1M and 5M rows, full-data fits too
    python benchmarks/large_logs.py --rows 1e6 --no-full
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LOSSRATE = Path(sys.executable).with_name("lossrate")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

FULL_FIT = """
import dataclasses, json, sys
from lossrate.fit import predict
from lossrate.readers import read_csv
from lossrate.report.analysis import fit_prefix
traj = read_csv(sys.argv[1], max_points=None)
traj = traj.replace(meta=dataclasses.replace(traj.meta, loss="ce"))  # as the CLI does
f = fit_prefix(traj, model="auto", until=0.3, bootstrap=0)
p = predict(f, [int(sys.argv[2])])
print(json.dumps({"n": traj.n, "pred": float(p.loss[0]), "lo": float(p.lower[0]),
                  "hi": float(p.upper[0])}))
"""


def make_log(path: Path, n: int, *, with_std: bool, seed: int = 0) -> Path:
    """A synthetic run of n logged steps (module docstring), written in blocks."""
    rng = np.random.default_rng(seed)
    step = np.arange(n)
    warm = max(1, n // 20)
    decay = 0.5 * (1 + np.cos(np.pi * np.clip(step - warm, 0, None) / (n - warm)))
    lr = 3e-4 * np.where(step < warm, (step + 1) / warm, 0.1 + 0.9 * decay)
    S = np.cumsum(lr) - lr
    loss = (1.5 + 4.0 * (1 + S / 0.06) ** -0.35) * np.exp(0.05 * rng.standard_normal(n))
    cols, fmt, header = [step, loss, lr], ["%d", "%.6f", "%.6e"], "step,loss,lr"
    if with_std:
        cols.append(0.8 * loss * np.exp(0.05 * rng.standard_normal(n)))
        fmt.append("%.6f")
        header += ",loss_std"
    with path.open("w") as f:
        f.write(header + "\n")
        for i in range(0, n, 250_000):
            np.savetxt(
                f, np.column_stack([c[i : i + 250_000] for c in cols]), fmt=fmt, delimiter=","
            )
    return path


def measure(cmd: list[str], out: Path) -> tuple[float, float, float, str, int]:
    """Run cmd; its wall and CPU seconds, peak RSS (MB), stdout and exit status."""
    with out.open("w") as stdout:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.DEVNULL, env=ENV, cwd=ROOT)
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    return wall, cpu, usage.ru_maxrss / 1024, out.read_text(), proc.returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default="1e6,5e6", help="comma-separated row counts")
    ap.add_argument("--no-full", action="store_true", help="skip the full-data reference fits")
    ap.add_argument("--keep", type=Path, default=None, help="folder for the logs (default: temp)")
    args = ap.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="lossrate_large_"))
    folder.mkdir(parents=True, exist_ok=True)
    cases = []
    for n in (int(float(r)) for r in args.rows.split(",")):
        cases.append((f"{n / 1e6:g}M", n, False))
        if n == max(int(float(r)) for r in args.rows.split(",")):
            cases.append((f"{n / 1e6:g}M +std", n, True))
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    head = (
        f"{'log':<10} {'run':<18} {'points':>9} {'wall s':>7} {'CPU s':>6} {'peak MB':>8}  "
        f"{'predicted final [90 % interval]':<34} {'inside full':>11}"
    )
    print(head)
    print("-" * len(head))
    for label, n, with_std in cases:
        log = folder / f"log_{label.replace(' +', '_')}.csv"
        if not log.exists():
            make_log(log, n, with_std=with_std)
        out = folder / f"fit_{log.stem}"
        wall, cpu, rss, text, rc = measure(
            [str(LOSSRATE), "fit", str(log), "--out", str(out), "--json", "-q"],
            folder / "stdout.json",
        )
        if rc != 0:
            print(f"{label:<10} {'lossrate fit':<18} failed with exit status {rc}")
            continue
        doc = json.loads(text)
        h = doc["headline"]
        points = len(json.loads((out / "fit.json").read_text())["prediction"]["step"])
        answer = (
            f"{h['predicted_final']:.4f} [{h['predicted_lower']:.4f}, {h['predicted_upper']:.4f}]"
        )
        full_row = None
        inside = "-"
        if not args.no_full and not with_std:
            fwall, fcpu, frss, ftext, frc = measure(
                [sys.executable, "-c", FULL_FIT, str(log), str(h["final_step"])],
                folder / "stdout_full.json",
            )
            if frc == 0:
                full = json.loads(ftext)
                inside = "yes" if full["lo"] <= h["predicted_final"] <= full["hi"] else "NO"
                full_row = (
                    f"{label:<10} {'all rows (API)':<18} {full['n']:>9,} {fwall:>7.1f} {fcpu:>6.1f} "
                    f"{frss:>8.0f}  {full['pred']:.4f} [{full['lo']:.4f}, {full['hi']:.4f}]"
                )
        print(
            f"{label:<10} {'lossrate fit':<18} {points:>9,} {wall:>7.1f} {cpu:>6.1f} {rss:>8.0f}  "
            f"{answer:<34} {inside:>11}"
        )
        if full_row:
            print(full_row)
        sys.stdout.flush()
    print(
        "\npoints: the binned log's steps (the fit itself, auto, thins to 300); wall time "
        "includes start-up and is inflated when the machine is shared (see the load average); "
        f"logs in {folder}"
    )


if __name__ == "__main__":
    main()
