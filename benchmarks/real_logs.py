"""Prediction accuracy on the real-log suite: runs written by the tools users use.

The 46 runs of ``benchmarks/real_log_runs.py`` (Hugging Face Trainer with TensorBoard,
PyTorch Lightning with CSVLogger, plain loops writing their own CSV; generated once into
``--cache``, about 10-16 min on 2 cores) are read back through ``lossrate.read_log`` as a
user's files are (the loss family and class count given as a user gives ``--loss``/
``--classes``), cut at k = 25 % and 50 % of their steps, fitted on the prefix with the whole
logged lr schedule known, and predicted to the end.

Printed per group (library-schedule), and for the long-decay rows (cosine and WSD with a
50-90 % cooldown, cut inside the decay):

* the median |ln(pred / obs)| of the final loss (obs: the held-out loss smoothed by a
  Savitzky-Golay filter of order 1 on ln L, window 5 % of the held-out points, 5-51),
  in %, per model; ``auto`` beside the best single model of the group and their ratio;
* the p90 of that error;
* the 90 % interval's coverage of the held-out logged losses (median over runs);
* the oracle: the median over runs of the best single model on each run chosen with
  hindsight, the least any rule that picks one model per run could reach, and its ratio to
  the best single model of the group.

Usage: python benchmarks/real_logs.py [--cache cache/real_logs] [--jobs 2] [--ks 0.25,0.5]
[--models auto,ode,...] [--csv rows.csv] [--tables-from rows.csv]
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lossrate import read_log  # noqa: E402
from lossrate._model import RunData  # noqa: E402
from lossrate.auto import PEER_RECIPE  # noqa: E402
from lossrate.evaluate import EvalRow, EvalTable, evaluate  # noqa: E402
from real_log_runs import SuiteRun, generate  # noqa: E402

PEERS = ("power_steps", "power_S", "exponential", "momentum", "multipower")
SINGLE = ("ode", "ode_relax", *PEERS)
LONG = ("cosine", "wsd50", "wsd80", "wsd90")


def models(only: tuple[str, ...] = ()) -> list[Any]:
    out: list[Any] = ["auto", "ode", "ode_relax"]
    out += [(p, p, PEER_RECIPE) for p in PEERS]
    if only:
        out = [m for m in out if (m if isinstance(m, str) else m[0]) in only]
    return out


def load(run: SuiteRun) -> RunData:
    """The run's log as a user's file is read (read_log), with --loss/--classes applied."""
    traj = read_log(run.path)
    meta = dataclasses.replace(
        traj.meta, loss=run.loss, classes=run.classes, name=run.name, schedule=run.group
    )
    return RunData.from_trajectory(traj.replace(meta=meta))


def _one(task: tuple[SuiteRun, tuple[float, ...], tuple[str, ...]]) -> list[EvalRow]:
    run, ks, only = task
    rd = load(run)
    rows = list(evaluate({run.name: rd}, models(only), fractions=ks).rows)
    print(f"  done {run.name}", file=sys.stderr, flush=True)
    return rows


def long_cut(run: SuiteRun, k: float, rd_steps: tuple[int, int]) -> bool:
    """The run's lr decays over at least half of it and the cut lies inside the decay."""
    if run.schedule not in LONG or run.decay_start is None:
        return False
    first, last = rd_steps
    cut = first + k * (last - first)
    return cut > run.decay_start


def table(rows: list[EvalRow], runs: dict[str, SuiteRun], k: float, spans: dict) -> str:
    sub = [r for r in rows if r.k == k]
    labels = list(dict.fromkeys(r.model for r in sub))
    groups = sorted({runs[r.run].group for r in sub})
    sets: list[tuple[str, set[str]]] = [
        (g, {n for n, ru in runs.items() if ru.group == g}) for g in groups
    ]
    longs = {n for n, ru in runs.items() if long_cut(ru, k, spans[n])}
    sets.append(("long decay (cut inside)", longs))
    sets.append(("all", set(runs)))
    lines = [
        f"\nk = {round(100 * k)} %: median |ln(pred/obs)| of the final loss (%), obs smoothed; "
        "[90 % coverage]; failed fits in brackets",
        f"{'group':<26}{'n':>3}  "
        + "".join(f"{m:>16}" for m in labels)
        + f"{'best single':>22}{'auto/best':>10}{'oracle':>8}{'oracle/best':>12}",
    ]
    for name, members in sets:
        cells, meds = [], {}
        for m in labels:
            rs = [r for r in sub if r.model == m and r.run in members]
            e = np.array([r.final_log_err for r in rs], dtype=float)
            c = np.array([r.coverage for r in rs], dtype=float)
            fails = sum(not r.fit_ok for r in rs)
            med = float(np.nanmedian(e)) if np.isfinite(e).any() else float("nan")
            cov = float(np.nanmedian(c)) if np.isfinite(c).any() else float("nan")
            meds[m] = med
            cells.append(f"{100 * med:.2f} [{cov:.2f}]" + (f" ({fails})" if fails else ""))
        singles = {m: v for m, v in meds.items() if m != "auto" and np.isfinite(v)}
        best = min(singles, key=singles.__getitem__) if singles else "-"
        ratio = meds.get("auto", np.nan) / singles[best] if singles else np.nan
        best_txt = f"{best} {100 * singles[best]:.2f}" if singles else "-"
        orc = _oracle([r for r in sub if r.run in members])
        orc_ratio = orc / singles[best] if singles else np.nan
        lines.append(
            f"{name:<26}{len(members):>3}  "
            + "".join(f"{c:>16}" for c in cells)
            + f"{best_txt:>22}{ratio:>10.2f}{100 * orc:>8.2f}{orc_ratio:>12.2f}"
        )
    # p90 rows on the long-decay runs
    lines.append(
        f"{'p90, long decay':<26}{len(longs):>3}  "
        + "".join(
            f"{100 * _p90([r for r in sub if r.model == m and r.run in longs]):>16.2f}"
            for m in labels
        )
    )
    lines.append(
        f"{'p90, all':<26}{len(runs):>3}  "
        + "".join(f"{100 * _p90([r for r in sub if r.model == m]):>16.2f}" for m in labels)
    )
    return "\n".join(lines)


def _oracle(rs: list[EvalRow]) -> float:
    """Median over runs of the best single model's error on each run, chosen with hindsight:
    the least any rule that picks one model per run could reach (a failed fit counts as
    infinite)."""
    per: dict[str, float] = {}
    for r in rs:
        if r.model == "auto":
            continue
        e = r.final_log_err if r.fit_ok and np.isfinite(r.final_log_err) else np.inf
        per[r.run] = min(per.get(r.run, np.inf), e)
    return float(np.median(list(per.values()))) if per else float("nan")


def _p90(rs: list[EvalRow]) -> float:
    e = np.array([r.final_log_err for r in rs], dtype=float)
    e = np.where(np.isfinite(e), e, np.inf)
    return float(np.quantile(e, 0.9)) if e.size else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", default="cache/real_logs")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--ks", default="0.25,0.5")
    ap.add_argument("--models", default="", help="comma-separated rows to run only")
    ap.add_argument("--only", default="", help="runs whose name contains this")
    ap.add_argument("--csv", default=None, help="also write every row to this CSV file")
    ap.add_argument(
        "--tables-from",
        default=None,
        metavar="CSV",
        help="print the tables from the rows of an earlier --csv instead of fitting",
    )
    args = ap.parse_args()
    t0 = time.perf_counter()
    ks = tuple(float(k) for k in args.ks.split(","))
    only = tuple(m for m in args.models.split(",") if m)
    suite = [r for r in generate(args.cache, jobs=args.jobs) if args.only in r.name]
    runs = {r.name: r for r in suite}
    spans = {}
    for r in suite:
        rd = load(r)
        spans[r.name] = (int(rd.traj.step[0]), int(rd.traj.step[-1]))
    if args.tables_from:
        rows = [r for r in EvalTable.read_csv(args.tables_from).rows if r.run in runs]
        ks = tuple(sorted({r.k for r in rows}))
    else:
        with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as ex:
            rows = [row for rs in ex.map(_one, [(r, ks, only) for r in suite]) for row in rs]
    print(f"Real-log suite: {len(suite)} runs read through read_log")
    for k in ks:
        print(table(rows, runs, k, spans))
    skipped = {r.message for r in rows if not r.fit_ok and r.message}
    if skipped:
        print("\nfailures:\n  " + "\n  ".join(sorted(skipped)[:20]))
    if args.csv:
        EvalTable(tuple(rows)).to_csv(args.csv)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
