"""Closed-loop check of ``lossrate optimize``: recommend a schedule from a fitted law, then
train with it and with standard controls, and compare predicted with realised final loss.

For each task (a real CPU training run):

1. train a constant-lr run (seed 0) and three earlier runs of the same model and data
   (seeds 10-12: cosine, WSD decaying over the last 20 %, WSD over the last 50 %);
2. build the prior from the earlier runs (``Prior.from_runs``, ``ode_relax``, the model
   ``lossrate optimize --prior`` uses) and fit the first 25 % of the constant run under it
   (``fit_with_prior``);
3. ``optimize_schedule`` the WSD and the free-form family for the full budget; when the law
   orders a pair of earlier runs against the losses they reached by more than its pick's
   predicted gain over the best of them, optimize recommends that earlier run's schedule
   instead (``ScheduleOptimum.kept``; the family optima are then shown as "law's ...");
4. train the recommendations and two controls (cosine to 0; WSD decaying linearly to 0
   over the last 20 %) with seeds 1, 2, 3;
5. print, per schedule, the predicted final loss with its 90 % interval and the realised
   final loss (the smoothed training loss at the last step, ``lossrate.metrics.smoothed``:
   mean +- standard error over the seeds, and how many seeds fall inside the interval), and
   the realised gain of optimize's recommendation (and of the better schedule tried) over
   the better control, paired by seed
   (the same seed gives the same initial weights and data order), with its standard error.

"predicted" is :func:`lossrate.predict` (through ``predict_with_prior``), which never lets a
decay predict more than holding the lr; "law alone" is the fitted law's own curve without
that clamp (the search ranks schedules by it).

A speed row times one family's search for a 10,000-step budget on an ``auto`` fit of a
synthetic multi-power-law run (the fit itself is made once and not timed).

Runs are cached under ``--cache`` (one folder per task, schedule and seed, named by a hash
of the schedule's lrs, with ``done.json`` once finished), so a rerun only trains what
changed. Training uses one torch thread.

    python benchmarks/schedule_optimisation.py [--cache cache/schedule_optimisation]
        [--tasks fashion,mnist] [--seeds 3] [--skip-speed]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import sys
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import lossrate as lr
from lossrate import RunMeta, Schedule, Trajectory
from lossrate.fitting.predict import predict as engine_predict
from lossrate.metrics import smoothed
from lossrate.optimize import optimize_schedule
from lossrate.prior import Prior, fit_with_prior, predict_with_prior


@dataclass(frozen=True)
class Task:
    """One real training task: a shipped config, its overrides, budget and peak lr."""

    name: str
    config: str
    overrides: Mapping[str, Any]
    steps: int
    peak: float


TASKS = {
    "fashion": Task(
        "fashion_cnn_adam",
        "fashion_cnn_adam_cosine",
        {
            "model.channels": 8,
            "model.hidden": 64,
            "train.batch_size": 64,
            "data.n_train": 10000,
            "data.n_test": 1000,
            "train.eval_every": 0,
            "train.checkpoint_every": 0,
        },
        1500,
        0.002,
    ),
    "mnist": Task(
        "mnist_mlp_sgd",
        "mnist_mlp_demo",
        {"train.eval_every": 0, "train.checkpoint_every": 0},
        2000,
        0.02,
    ),
}
FRACTION = 0.25
EARLIER = {10: ("cosine", None), 11: ("wsd", 0.2), 12: ("wsd", 0.5)}


def _schedule(shape: str, peak: float, n: int, decay: float | None = None) -> Schedule:
    if shape == "wsd":
        return Schedule.wsd(peak, n, decay_start=round(n * (1 - float(decay or 0.2))))
    return Schedule.make(shape, peak=peak, n_steps=n)


def _key(s: Schedule) -> str:
    return hashlib.blake2b(s.lr.tobytes(), digest_size=5).hexdigest()


def train(task: Task, schedule: Schedule, seed: int, cache: Path, bar: Any = None) -> Trajectory:
    """The run of ``task`` under ``schedule`` with ``seed`` (cached)."""
    import torch

    from lossrate.experiments import run_experiment
    from lossrate.experiments.config import load_config

    folder = cache / task.name / f"{schedule.name}_{_key(schedule)}_s{seed}"
    done = folder / "done.json"
    if done.exists():
        return lr.read_log(folder / "trajectory.csv")
    # the same lrs and seed under another name (a kept earlier schedule is a control's)
    for twin in sorted(folder.parent.glob(f"*_{_key(schedule)}_s{seed}/done.json")):
        return lr.read_log(twin.parent / "trajectory.csv")
    folder.mkdir(parents=True, exist_ok=True)
    file = folder.parent / f"{schedule.name}_{_key(schedule)}.csv"
    if not file.exists():
        schedule.write(file)
    run_dir = folder / "run"
    cfg = load_config(task.config).override(
        {
            **task.overrides,
            "name": f"{task.name}_{schedule.name}_s{seed}",
            "train.steps": task.steps,
            "train.seed": seed,
            "optim.lr": task.peak,
            "schedule.file": str(file.resolve()),
        }
    )
    torch.set_num_threads(1)
    if bar is not None:
        bar.set_postfix_str(f"{task.name} {schedule.name} seed {seed}")
    traj = run_experiment(cfg, run_dir, resume=True, progress=False)
    (folder / "trajectory.csv").write_bytes((run_dir / "trajectory.csv").read_bytes())
    done.write_text(json.dumps({"steps": task.steps, "seed": seed, "schedule": str(file)}))
    return traj


def final_smoothed(traj: Trajectory) -> float:
    return float(smoothed(traj.loss)[-1])


def run_task(task: Task, seeds: list[int], cache: Path) -> list[str]:
    from tqdm import tqdm

    n, peak = task.steps, task.peak
    constant = _schedule("constant", peak, n)
    earlier_plan = {s: _schedule(sh, peak, n, d) for s, (sh, d) in EARLIER.items()}
    for s, (sh, d) in EARLIER.items():
        earlier_plan[s] = Schedule(earlier_plan[s].lr, f"{sh}{'' if d is None else int(100 * d)}")
    with tqdm(total=1 + len(EARLIER), desc=f"{task.name}: base runs", unit="run") as bar:
        base = train(task, constant, 0, cache, bar)
        bar.update()
        earlier = {}
        for s, sch in earlier_plan.items():
            earlier[f"{sch.name}_s{s}"] = (train(task, sch, s, cache, bar), sch)
            bar.update()
    prefix = base.prefix(FRACTION).replace(meta=dataclasses.replace(base.meta, name="target"))
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prior = Prior.from_runs(
            {
                k: (t.replace(meta=dataclasses.replace(t.meta, name=k)), s)
                for k, (t, s) in earlier.items()
            },
            "ode_relax",
        )
        fit = fit_with_prior(prefix, prior, schedule=constant, bootstrap=100, seed=0)
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    opt = optimize_schedule(
        fit, n, ("wsd", "free"), earlier={k: t for k, (t, _s) in earlier.items()}
    )
    t_opt = time.perf_counter() - t0
    recs = {
        f"recommended {k}": Schedule(f.schedule.lr, f"rec_{k}") for k, f in opt.families.items()
    }
    if opt.kept is not None:  # the law misordered earlier runs: their best schedule is kept
        recs = {f"law's {k}": sch for k, sch in ((k.split()[-1], v) for k, v in recs.items())}
        recs[f"recommended: kept {opt.kept.name}"] = Schedule(opt.recommended.lr, "rec_kept")
    controls = {
        "cosine": Schedule(_schedule("cosine", peak, n).lr, "cosine"),
        "wsd 20 %": Schedule(_schedule("wsd", peak, n, 0.2).lr, "wsd20"),
    }
    plans = {**recs, **controls}
    realised: dict[str, list[float]] = {}
    with tqdm(total=len(plans) * len(seeds), desc=f"{task.name}: closed loop", unit="run") as bar:
        for label, sch in plans.items():
            realised[label] = []
            for seed in seeds:
                realised[label].append(final_smoothed(train(task, sch, seed, cache, bar)))
                bar.update()
    last = np.array([n - 1])
    lines = [
        f"### {task.name}: {n} steps, peak lr {peak:g}; ode_relax fitted on the first "
        f"{FRACTION:.0%} of a constant-lr run under the prior from {len(earlier)} earlier runs "
        f"({', '.join(earlier)}); fit {t_fit:.0f} s, search {t_opt:.1f} s; decay gain "
        f"{'identified' if opt.identified else 'NOT identified'}",
        "",
        f"| schedule | settings | predicted final [90 % interval] | law alone | realised, mean "
        f"± SE ({len(seeds)} seeds) | seeds inside |",
        "|---|---|---|---|---|---|",
    ]
    pred_rows = {}
    for label, sch in {"constant (the run's own)": constant, **plans}.items():
        p = predict_with_prior(fit, last, schedule=sch, warn=False)
        pred_rows[label] = p
        if label in realised:
            r = np.array(realised[label])
            inside = int(np.sum((r >= p.lower[-1]) & (r <= p.upper[-1])))
            real = f"{r.mean():.4f} ± {r.std(ddof=1) / math.sqrt(r.size):.4f}"
            ins = f"{inside}/{r.size}"
        else:
            r0 = final_smoothed(base)
            real, ins = f"{r0:.4f} (seed 0)", str(int(p.lower[-1] <= r0 <= p.upper[-1]))
        fam = label.split()[-1]
        sett = _short(opt.families[fam].settings) if fam in opt.families else ""
        raw = float(engine_predict(fit, last, schedule=sch).loss[-1])
        lines.append(
            f"| {label} | {sett} | {p.loss[-1]:.4f} [{p.lower[-1]:.4f}, {p.upper[-1]:.4f}] | "
            f"{raw:.4f} | {real} | {ins} |"
        )
    best_rec = min(recs, key=lambda k: np.mean(realised[k]))
    best_ctl = min(controls, key=lambda k: np.mean(realised[k]))
    chosen = (
        next(k for k in recs if k.startswith("recommended: kept"))
        if opt.kept is not None
        else min(recs, key=lambda k: pred_rows[k].loss[-1])
    )
    lines.append("")
    for which, rec in (("the optimiser's pick", chosen), ("the better schedule tried", best_rec)):
        d = np.array(realised[best_ctl]) - np.array(realised[rec])
        rel = d / np.array(realised[best_ctl])
        se = d.std(ddof=1) / math.sqrt(d.size)
        verdict = "no worse" if d.mean() >= -se else "WORSE"
        lines.append(
            f"- {which} ({rec}) vs the best control ({best_ctl}): realised gain "
            f"{d.mean():+.4f} ± {se:.4f} (SE over {d.size} paired seeds; "
            f"{100 * rel.mean():+.2f} % of the control's loss) -> {verdict}"
        )
    lines.extend(f"- note: {x}" for x in opt.notes if "earlier run" in x)
    lines.append(
        "- the fit on earlier runs' own schedules (predicted / law alone vs reached): "
        + "; ".join(
            f"{c.name} {c.predicted:.4f} / {c.law:.4f} vs {c.realised:.4f}" for c in opt.checks
        )
    )
    pg = opt.best.gains
    lines.append(
        f"- predicted gains of the law's best ({opt.best.family}): "
        + "; ".join(g.text() for g in pg)
    )
    return lines


def _short(s: Mapping[str, Any]) -> str:
    if "shape" in s:
        return (
            f"{s['shape']}, decay {s['decay_start']}+{s['decay_steps']}, final "
            f"{float(s['final_lr']):.2g}"
        )
    knots = [(k[3:], float(v)) for k, v in s.items() if k.startswith("lr@")]
    return "knots " + " ".join(f"{k}:{v:.2g}" for k, v in knots)


def speed_rows() -> list[str]:
    """Time each family's search for a 10,000-step budget on a cached auto fit."""
    from lossrate._model import RunData
    from lossrate.baselines import get_baseline

    n = 10_000
    sch = Schedule.constant(0.1, n)
    th = dict(L0=1.0, A=3.0, alpha=0.5, B=5.0, C=2.0, beta=0.6, gamma=0.5)
    steps = np.arange(10, n + 1, 10)
    meta = RunMeta(loss="ce", classes=10, name="synthetic")
    dummy = Trajectory.from_arrays(np.ones(3), step=[1, 2, 3], lr=[0.1] * 3, meta=meta)
    clean = get_baseline("multipower").curve(th, RunData(dummy, sch), steps)
    noisy = clean * np.exp(np.random.default_rng(0).normal(0, 0.005, steps.size))
    traj = Trajectory.from_arrays(noisy, step=steps, lr=sch.lr[steps - 1], meta=meta)
    t0 = time.perf_counter()
    af = lr.fit(traj.prefix(FRACTION), schedule=sch)
    t_fit = time.perf_counter() - t0
    rows = [
        f"### speed: one family, 10,000-step budget, auto fit of a synthetic run "
        f"(fit once, {t_fit:.0f} s, not timed)",
        "",
        "| family | seconds | schedules evaluated | target |",
        "|---|---|---|---|",
    ]
    for fam in ("wsd", "cosine", "free"):
        t0 = time.perf_counter()
        res = optimize_schedule(af, n, fam)
        dt = time.perf_counter() - t0
        rows.append(f"| {fam} | {dt:.1f} | {res.families[fam].evaluations} | ≤ 10 s |")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", type=Path, default=Path("cache/schedule_optimisation"))
    ap.add_argument("--tasks", default="fashion,mnist")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--quick", action="store_true", help="a fifth of the steps (smoke test)")
    args = ap.parse_args(argv)
    out: list[str] = []
    if not args.skip_speed:
        out += [*speed_rows(), ""]
        print("\n".join(out), flush=True)
    for name in [t for t in args.tasks.split(",") if t]:
        task = TASKS[name]
        if args.quick:
            task = Task(
                task.name + "_quick", task.config, task.overrides, task.steps // 5, task.peak
            )
        lines = run_task(task, list(range(1, args.seeds + 1)), args.cache)
        print("\n".join(lines) + "\n", flush=True)
        out += [*lines, ""]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
