"""Prediction accuracy of the ODE models and the peer laws on the Multi-Power-Law curves.

Prints, in one run:

1. the prefix protocol: every curve of every size, fit on the first k % of its steps
   (k in 10, 25, 50, 75; the whole schedule known) and predict the rest; the median
   relative error of the final loss per schedule group and model;
2. the cross-schedule split per model size (fit jointly on cosine_24000, constant_24000,
   wsdcon_9; predict the other six curves whole), the mean R², MAE, RMSE, PredE, WorstE
   over the six, beside the numbers the Multi-Power-Law paper publishes;
3. the prefix protocol on real training runs made by this library (``--real``, on by
   default): the MNIST MLP with SGD (shipped config ``mnist_mlp_sgd``, 2,000 steps) and the
   transfer sweep of ``benchmarks/make_sweep.py`` (Fashion-MNIST CNN with Adam and the
   WordNet MiniLM text classifier, 3 peak lrs x constant / cosine / WSD x 2 seeds, 300
   steps each); each is generated once into ``--cache`` when absent;
4. the time to fit one 10,000-point curve.

Models: ``ode``, ``ode_noise`` and ``ode_relax`` (this library's fitting engine: soft-L1 on standardised
log residuals), the peers fitted by the same engine with their own recipe (Huber on raw log
residuals, delta = 1e-3), and the multi-power law by its authors' early-stopped recipe
(``fit_multipower_published``) and run to convergence (``fit_multipower_converged``, in
the cross split only: it takes minutes per fit).

Usage: python benchmarks/predict_accuracy.py [--data DIR] [--jobs N] [--quick] [--no-real]
[--models ode_relax,momentum] [--ks 0.25]
(--quick: the 400M curves only, k in 25 and 50). Runs in parallel over curves; set
OPENBLAS_NUM_THREADS yourself to override the one BLAS thread per worker used here.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from lossrate import RunMeta, Schedule, Trajectory  # noqa: E402
from lossrate._model import RunData  # noqa: E402
from lossrate.baselines import fit_multipower_converged, fit_multipower_published  # noqa: E402
from lossrate.evaluate import EvalRow, EvalTable, evaluate  # noqa: E402
from lossrate.fit import fit, get_model, predict  # noqa: E402
from lossrate.readers.mpl import MPL_FIT, MPL_PREDICT, MPL_SIZES, load_mpl  # noqa: E402

PEER_RECIPE = {"loss": "huber", "f_scale": 1e-3, "weights": "none"}
PEERS = ("power_steps", "power_S", "exponential", "momentum", "multipower")
#: --models: run only these rows (set before the worker processes fork)
_ONLY: tuple[str, ...] = ()
#: the published cross-schedule test metrics (mpl/README.md): R2, MAE, RMSE, PredE, WorstE
PUBLISHED = {
    "25M": (0.9988, 0.00376, 0.00465, 0.00110, 0.00409),
    "100M": (0.9983, 0.00435, 0.00592, 0.00142, 0.00583),
    "400M": (0.9978, 0.00484, 0.00730, 0.00168, 0.00995),
}


def models(cross: bool = False) -> list[Any]:
    """The models compared. ``fit_multipower_converged`` (minutes per fit) only runs in the
    cross split; in the prefix protocol the engine's "multipower" row is the same objective
    (Huber, delta = 1e-3, on log residuals) minimised to convergence by least squares.
    ``auto`` (the default predictor) fits one run at a time: prefix protocol only."""
    out: list[Any] = [] if cross else ["auto"]
    out += ["ode", "ode_noise", "ode_relax"]
    out += [(p, p, PEER_RECIPE) for p in PEERS]
    out.append(("mpl_published", fit_multipower_published))
    if cross:
        out.append(("mpl_converged", fit_multipower_converged))
    if _ONLY:
        out = [m for m in out if (m if isinstance(m, str) else m[0]) in _ONLY]
    return out


def _prefix_one(task: tuple[str | None, str, str, tuple[float, ...]]) -> list[EvalRow]:
    root, size, name, ks = task
    runs = {f"{size}/{name}": load_mpl(root, size, name)}
    rows = list(evaluate(runs, models(), protocol="prefix", fractions=ks).rows)
    print(f"  done {size}/{name}", file=sys.stderr, flush=True)
    return rows


def _cross_one(task: tuple[str | None, str]) -> list[EvalRow]:
    root, size = task
    runs = {f"{size}/{n}": load_mpl(root, size, n) for n in MPL_FIT + MPL_PREDICT}
    train = [f"{size}/{n}" for n in MPL_FIT]
    return list(evaluate(runs, models(cross=True), protocol="cross", train=train).rows)


def prefix_table(rows: list[EvalRow], ks: tuple[float, ...], long: tuple[str, ...] = ()) -> str:
    """Per k: the median |ln(pred/obs)| of the final loss (obs smoothed) per group and over
    all curves, its p90, the pooled 90 % coverage of the held-out points, and auto's ratio
    to the best single model of each group. ``long`` names the long-decay groups, which get
    a p90 row of their own."""
    groups = sorted({r.group for r in rows})
    labels = list(dict.fromkeys(r.model for r in rows))
    sets = [(g, [g]) for g in groups]
    if long:
        sets.append(("long decay", [g for g in groups if g in long]))
    sets.append(("all", groups))
    lines = []
    for k in ks:
        sub = [r for r in rows if r.k == k]
        lines.append(
            f"\nprefix k = {round(100 * k)} %: median |ln(pred/obs)| of the final loss (%, obs "
            "smoothed), failed fits in brackets; then p90 over all curves"
        )
        lines.append(
            f"{'model':<16}"
            + "".join(f"{name:>12}" for name, _ in sets)
            + f"{'p90 all':>10}"
            + (f"{'p90 long':>10}" if long else "")
        )
        meds: dict[str, dict[str, float]] = {}
        for m in labels:
            cells = []
            for name, gs in sets:
                rs = [r for r in sub if r.model == m and r.group in gs]
                med = _median(rs)
                meds.setdefault(name, {})[m] = med
                cells.append(_fmt_pct(med, sum(not r.fit_ok for r in rs)))
            p90 = _quantile([r for r in sub if r.model == m], 0.9)
            p90_long = _quantile([r for r in sub if r.model == m and r.group in long], 0.9)
            lines.append(
                f"{m:<16}"
                + "".join(f"{c:>12}" for c in cells)
                + f"{100 * p90:>10.2f}"
                + (f"{100 * p90_long:>10.2f}" if long else "")
            )
        lines.append("pooled 90 % coverage of the held-out points")
        for m in labels:
            cov = []
            for _name, gs in sets:
                c = np.array([r.coverage for r in sub if r.model == m and r.group in gs])
                cov.append(f"{np.nanmean(c):.2f}" if np.isfinite(c).any() else "-")
            lines.append(f"{m:<16}" + "".join(f"{c:>12}" for c in cov))
        if "auto" in labels:
            ratio = []
            for name, _gs in sets:
                singles = {m: v for m, v in meds[name].items() if m != "auto" and np.isfinite(v)}
                best = min(singles, key=singles.__getitem__) if singles else None
                ratio.append(
                    f"{meds[name]['auto'] / singles[best]:.2f}"
                    if best and singles[best] > 0
                    else "-"
                )
            lines.append(f"{'auto / best':<16}" + "".join(f"{c:>12}" for c in ratio))
    return "\n".join(lines)


def _read_rows(path: str) -> list[EvalRow]:
    """The prefix-protocol rows of an EvalTable CSV (EvalTable.to_csv)."""
    return [r for r in EvalTable.read_csv(path).rows if r.protocol == "prefix"]


def _median(rs: list[EvalRow]) -> float:
    e = np.array([r.final_log_err for r in rs], dtype=float)
    return float(np.nanmedian(e)) if np.isfinite(e).any() else float("nan")


def _quantile(rs: list[EvalRow], q: float) -> float:
    e = np.array([r.final_log_err for r in rs], dtype=float)
    e = np.where(np.isfinite(e), e, np.inf)
    return float(np.quantile(e, q)) if e.size else float("nan")


def _fmt_pct(v: float, fails: int) -> str:
    s = "nan" if not np.isfinite(v) else f"{100 * v:.2f}"
    return s + (f" ({fails})" if fails else "")


def real_runs(cache: str) -> dict[str, RunData]:
    """The real training runs of section 3, generated into ``cache`` when absent. Their
    group is '<dataset>-<schedule>' (e.g. 'fashion-wsd')."""
    import dataclasses
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from lossrate.experiments.runner import run_experiment
    from make_sweep import generate

    root = Path(cache)
    mnist_dir = root / "real" / "mnist_mlp_sgd"
    if not (mnist_dir / "run_done").exists():
        run_experiment("mnist_mlp_sgd", mnist_dir, resume=True, progress=False)
        (mnist_dir / "run_done").write_text("complete\n")
    folders = [mnist_dir, *generate(root / "sweep")]
    out: dict[str, RunData] = {}
    for folder in folders:
        t = Trajectory.read(folder / "trajectory.csv")
        family = folder.name.split("_", 1)[0]
        group = f"{family}-{t.meta.schedule or 'constant'}"
        t = t.replace(meta=dataclasses.replace(t.meta, schedule=group))
        out[folder.name] = RunData.from_trajectory(t)
    return out


def _real_one(task: tuple[str, RunData, tuple[float, ...]]) -> list[EvalRow]:
    name, run, ks = task
    rows = list(evaluate({name: run}, models(), protocol="prefix", fractions=ks).rows)
    print(f"  done {name}", file=sys.stderr, flush=True)
    return rows


def cross_table(rows: list[EvalRow]) -> str:
    tab = EvalTable(tuple(rows))
    lines = [
        "\ncross-schedule split (fit on "
        + ", ".join(MPL_FIT)
        + "; mean over the 6 predicted curves)"
    ]
    lines.append(
        f"{'size':<6}{'model':<16}{'R2':>9}{'MAE':>10}{'RMSE':>10}{'PredE':>10}{'WorstE':>10}{'final':>9}{'cover':>8}"
    )
    for size in MPL_SIZES:
        sub = EvalTable(tuple(r for r in rows if r.run.startswith(size + "/")))
        if not sub.rows:
            continue
        for d in sub.summary(by=("model",), stat="mean"):
            lines.append(
                f"{size:<6}{d['model']:<16}{d['r2']:>9.4f}{d['mae']:>10.5f}{d['rmse']:>10.5f}"
                f"{d['pred_e']:>10.5f}{d['worst_e']:>10.5f}{100 * d['final_rel_err']:>8.2f}%"
                f"{d['coverage']:>8.2f}"
            )
        p = PUBLISHED[size]
        lines.append(
            f"{size:<6}{'MPL (paper)':<16}{p[0]:>9.4f}{p[1]:>10.5f}{p[2]:>10.5f}{p[3]:>10.5f}{p[4]:>10.5f}"
        )
    del tab
    return "\n".join(lines)


def timing() -> str:
    """Fit time of one 10,000-point synthetic curve (gradient flow, CE closure, 1 % noise)."""
    n = 10_000
    sch = Schedule.cosine(0.1, n + 1, final=0.01, warmup=100)
    steps = np.arange(1, n + 1)
    meta = RunMeta(loss="ce", classes=10, name="synthetic")
    base = Trajectory.from_arrays(np.linspace(3.0, 1.0, n), step=steps, lr=sch.lr[steps], meta=meta)
    truth = {"rho_ref": 0.8, "S0": 20.0, "beta": 0.7, "L_inf": 0.2, "L0": 2.3}
    clean = get_model("ode").curve(truth, RunData(base, sch), steps)
    noisy = clean * np.exp(np.random.default_rng(0).normal(0.0, 0.01, n))
    traj = base.replace(loss=noisy)
    lines = ["\ntime to fit one 10,000-point curve (median of 3; bootstrap=0 / bootstrap=200)"]
    for name, opts in (
        ("ode", {}),
        ("ode_noise", {}),
        ("ode_relax", {}),
        ("momentum", PEER_RECIPE),
    ):
        if _ONLY and name not in _ONLY:
            continue
        fit(traj.prefix(0.05), name, schedule=sch, bootstrap=0, **opts)  # warm caches/imports
        t_fit, t_boot = [], []
        for _ in range(3):
            t0 = time.perf_counter()
            fit(traj, name, schedule=sch, bootstrap=0, **opts)
            t_fit.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        fit(traj, name, schedule=sch, bootstrap=200, **opts)
        t_boot.append(time.perf_counter() - t0)
        lines.append(
            f"  {name:<10} fit {np.median(t_fit):6.2f} s   fit + bootstrap {t_boot[0]:6.2f} s"
        )
    if not _ONLY or "auto" in _ONLY:
        fit(traj.prefix(0.05), "auto", schedule=sch, candidates="power_S")  # warm imports
        for label, part in (("first 30 %", traj.prefix(0.3)), ("all 10,000", traj)):
            for jobs in (1, 2):
                t0 = time.perf_counter()
                af = fit(part, "auto", schedule=sch, jobs=jobs)
                pred = predict(af, steps)
                dt = time.perf_counter() - t0
                lines.append(
                    f"  auto on {label:<10} jobs={jobs}: fit + calibrated interval at every step "
                    f"{dt:6.2f} s ({int(af.metrics['backtests'])} backtests x "
                    f"{len(af.members) + len(af.failed)} models; {af.model.describe()}; final "
                    f"{pred.loss[-1]:.4g} vs {clean[-1]:.4g})"
                )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--data", default=None, help="the mpl data folder (default: found beside the repo)"
    )
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--quick", action="store_true", help="400M only, k in 25 and 50")
    ap.add_argument("--csv", default=None, help="also write every row to this CSV file")
    ap.add_argument(
        "--no-real", action="store_true", help="skip the real training runs (section 3)"
    )
    ap.add_argument("--skip-mpl", action="store_true", help="skip the mpl curves (1, 2)")
    ap.add_argument(
        "--no-cross", action="store_true", help="skip the cross-schedule split (2; slow)"
    )
    ap.add_argument("--cache", default="cache", help="where the real runs are generated once")
    ap.add_argument(
        "--tables-from",
        default=None,
        metavar="CSV",
        help="print the prefix tables from the rows of an earlier --csv instead of fitting",
    )
    ap.add_argument(
        "--models", default="", help="comma-separated rows to run only (e.g. ode_relax,momentum)"
    )
    ap.add_argument(
        "--ks", default="", help="comma-separated prefix fractions (default 0.1,0.25,0.5,0.75)"
    )
    args = ap.parse_args()
    if args.tables_from:
        rows = _read_rows(args.tables_from)
        ks_seen = tuple(sorted({r.k for r in rows if np.isfinite(r.k)}))
        print(prefix_table(rows, ks_seen, long=("cosine",)))
        return
    global _ONLY
    _ONLY = tuple(m for m in args.models.split(",") if m)
    sizes = ("400M",) if args.quick else MPL_SIZES
    ks = (0.25, 0.5) if args.quick else (0.1, 0.25, 0.5, 0.75)
    if args.ks:
        ks = tuple(float(k) for k in args.ks.split(","))
    t0 = time.perf_counter()
    tasks = [(args.data, s, n, ks) for s in sizes for n in MPL_FIT + MPL_PREDICT]
    prefix_rows: list[EvalRow] = []
    cross_rows: list[EvalRow] = []
    real_rows: list[EvalRow] = []
    real = {} if args.no_real else real_runs(args.cache)
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as ex:
        if not args.skip_mpl:
            prefix_rows = [r for rows in ex.map(_prefix_one, tasks) for r in rows]
            if not args.no_cross:
                cross_rows = [
                    r for rows in ex.map(_cross_one, [(args.data, s) for s in sizes]) for r in rows
                ]
        real_tasks = [(n, r, ks) for n, r in real.items()]
        real_rows = [r for rows in ex.map(_real_one, real_tasks) for r in rows]
    if not args.skip_mpl:
        print(f"Multi-Power-Law curves: {len(tasks)} curves, sizes {', '.join(sizes)}")
        print(prefix_table(prefix_rows, ks, long=("cosine",)))
        if cross_rows:
            print(cross_table(cross_rows))
    if real_rows:
        print(f"\nReal training runs made by this library: {len(real)} runs")
        print(prefix_table(real_rows, ks))
    print(timing())
    if args.csv:
        EvalTable(tuple(prefix_rows + cross_rows + real_rows)).to_csv(args.csv)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
