"""The argument parser of ``lossrate``: its subcommands and help epilogs (argument types and
option groups are in :mod:`._options`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from ._commands import (
    Outcome,
    _cmd_demo,
    _cmd_evaluate,
    _cmd_fit,
    _cmd_floor,
    _cmd_predict,
    _cmd_report,
    _cmd_train,
)
from ._helpers import _names
from ._optimize import add_optimize_parser
from ._options import (
    _common,
    _count,
    _Formatter,
    _fraction,
    _log_options,
    _positive,
    _prior_options,
    _schedule_options,
    _setting,
    _target_options,
)

_MAIN_EPILOG = """\
examples:
  lossrate demo                                  train an MLP on MNIST, fit 40 %, predict the rest
  lossrate fit run.csv --loss ce --classes 10 --until 0.3
                                                 fit your own log, write a report folder
  lossrate fit logs/events.out.tfevents.* --format tensorboard --loss ce --classes 10
  lossrate predict run.csv --schedule wsd --decay-start 8000 --steps 10000
                                                 what if the run had used another schedule?
  lossrate floor run.csv --target 0.05           floor, time and energy to a target loss
  lossrate evaluate a.csv b.csv --models ode,power_steps,exponential
  lossrate train mnist_mlp_sgd --out runs/mnist  run a shipped experiment config
  lossrate report runs/demo                      redraw a run folder's figures and page

the model: dL/dt = -phi(t) g(L, sigma_L), t = sum of learning rates. g depends on the
loss (--loss ce|mse|bce|...); phi is fitted on a prefix of the run and extrapolated.

exit codes: 0 ok, 2 usage error, 3 bad data, 4 internal failure (rerun with --debug),
130 interrupted.
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``lossrate`` (all subcommands)."""
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="lossrate",
        description="Measure, model and predict how a training loss falls "
        "(the loss state-rate ODE dL/dt = -phi(t) g(L, sigma_L)).",
        epilog=_MAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lossrate {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def add(
        name: str, help_: str, epilog: str, func: Callable[[argparse.Namespace], Outcome]
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            help=help_.replace("%", "%%"),
            description=help_,
            epilog=epilog,
            formatter_class=_Formatter,
        )
        p.set_defaults(func=func)
        return p

    p = add(
        "demo",
        "train a wide MLP on 4,000 real MNIST digits, fit auto on 40 % of the steps, "
        "predict the rest and write a report folder",
        _DEMO_EPILOG,
        _cmd_demo,
    )
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="run folder")
    p.add_argument(
        "--steps", type=_count, default=None, help="training steps (default: the config's)"
    )
    p.add_argument("--until", type=_fraction, default=0.4, help="fraction of the steps to fit on")
    p.add_argument(
        "--target",
        type=_positive,
        default=None,
        help="target loss (default: a round value below the final loss)",
    )
    p.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--seed", type=int, default=None, help="training seed (default: the config's)")
    p.add_argument(
        "--threads", type=_count, default=1, help="torch CPU threads (0: torch's default)"
    )
    _common(p)

    p = add(
        "train",
        "run an experiment config (TOML) and record its trajectory",
        _TRAIN_EPILOG,
        _cmd_train,
    )
    p.add_argument(
        "config", help="a TOML file, or the name of a shipped config (e.g. mnist_mlp_sgd)"
    )
    p.add_argument(
        "--out", type=Path, default=None, help="run folder (default: runs/<config name>)"
    )
    p.add_argument(
        "--resume", action="store_true", help="continue an interrupted run from its last checkpoint"
    )
    p.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda, ...")
    p.add_argument(
        "--nproc",
        type=_count,
        default=1,
        help="data-parallel processes (torch.distributed: gloo on CPU, NCCL one GPU each); "
        "each takes an equal share of the config's batch size, which must divide evenly",
    )
    p.add_argument(
        "--set",
        type=_setting,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set train.steps=200 --set optim.lr=0.05 (repeatable)",
    )
    p.add_argument(
        "--threads", type=_count, default=0, help="torch CPU threads (0: torch's default)"
    )
    _common(p)

    p = add(
        "fit",
        "fit a log on a prefix, predict the rest, write fit.json, figures and report.html",
        _FIT_EPILOG,
        _cmd_fit,
    )
    p.add_argument(
        "log",
        type=Path,
        help="a log: lossrate CSV, plain CSV/TSV, TensorBoard, W&B export, Lightning folder",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="report folder (default: <log name>.lossrate next to the log)",
    )
    p.add_argument(
        "--peers", type=_names, default=[], help="also fit these peer models, comma-separated"
    )
    _log_options(p, until=0.3)
    _prior_options(p)
    _target_options(p)
    _common(p)

    p = add(
        "predict",
        "fit a log and predict its loss, optionally under another learning-rate schedule",
        _PREDICT_EPILOG,
        _cmd_predict,
    )
    p.add_argument("log", type=Path, help="the log to fit")
    _log_options(p, until=1.0, what_if=True)
    _prior_options(p)
    _schedule_options(p)
    _common(p)

    p = add(
        "evaluate",
        "prefix protocol: fit each model on the first k % of each log, score the rest",
        _EVALUATE_EPILOG,
        _cmd_evaluate,
    )
    p.add_argument("logs", type=Path, nargs="+", help="one or more logs")
    p.add_argument(
        "--models",
        type=_names,
        default=["auto", "ode_relax", "momentum", "power_steps"],
        help="comma-separated models to compare (auto: the backtest-weighted default)",
    )
    p.add_argument(
        "--fractions",
        type=lambda s: [_fraction(x) for x in s.split(",") if x],
        default=[0.1, 0.25, 0.5],
        help="comma-separated prefix fractions, each in (0, 1)",
    )
    p.add_argument("--csv", type=Path, default=None, help="also write every row to this CSV file")
    p.add_argument(
        "--address",
        default=None,
        metavar="ADDR",
        help="run the fits as Ray tasks: on the cluster at ADDR (auto: one started with "
        "`ray start` here), or 'local' for a local Ray with --jobs CPUs (needs "
        "pip install 'lossrate[ray]')",
    )
    _log_options(p, until=None, bootstrap=0)
    _common(p)

    p = add(
        "floor",
        "fit a log and print its loss floor, and time and energy to a target loss",
        _FLOOR_EPILOG,
        _cmd_floor,
    )
    p.add_argument("log", type=Path, help="the log to fit")
    _log_options(p, until=1.0)
    _target_options(p)
    _common(p)

    p = add(
        "report",
        "redraw the figures and page of a run folder (or make one from a log)",
        _REPORT_EPILOG,
        _cmd_report,
    )
    p.add_argument(
        "path", type=Path, help="a run folder holding trajectory.csv (and fit.json), or a log"
    )
    p.add_argument("--out", type=Path, default=None, help="report folder (default: the run folder)")
    p.add_argument(
        "--peers", type=_names, default=None, help="peer models to compare, comma-separated"
    )
    _log_options(p, until=None)
    p.add_argument(
        "--until", type=_fraction, default=None, help="fit fraction (default: as saved, else 0.3)"
    )
    p.add_argument(
        "--until-step",
        type=_count,
        default=None,
        metavar="STEP",
        help="fit on the steps up to STEP instead (overrides --until)",
    )
    _target_options(p)
    _common(p)
    add_optimize_parser(sub)
    from ._replay import add_replay_parser

    add_replay_parser(sub)
    from ._sweep import add_sweep_parser

    add_sweep_parser(sub)
    return parser


_DEMO_EPILOG = """\
examples:
  lossrate demo                       the full demo (about a minute on 2 CPU cores)
  lossrate demo --steps 300 --out /tmp/demo
  lossrate demo --json | jq .headline

writes OUT/trajectory.csv, OUT/fit.json, OUT/figures/*.png and OUT/report.html.
"""
_TRAIN_EPILOG = """\
examples:
  lossrate train mnist_mlp_sgd
  lossrate train configs/my_run.toml --out runs/my_run --device cuda
  lossrate train mnist_mlp_sgd --out runs/m --resume     continue after a crash
  lossrate train teacher_student_gd --set train.steps=200 --set optim.lr=0.05

then: lossrate fit runs/m/trajectory.csv --until 0.3
"""
_FIT_EPILOG = """\
examples:
  lossrate fit run.csv --loss ce --classes 10 --until 0.3
  lossrate fit events.out.tfevents.123 --format tensorboard --loss ce --classes 100
  lossrate fit lightning_logs/version_0 --loss mse --lr 0.01 --out report/
  lossrate fit run.csv --peers power_steps,exponential --target 0.05 --json
  lossrate fit new_run.csv --until 0.25 --prior runs/sweep/ --save-prior prior.json
  lossrate fit new_run.csv --until 0.25 --prior prior.json      reuse a saved prior

the folder gets fit.json, trajectory.csv, figures/*.png and report.html; an existing good
report is only replaced once the new one is complete.
"""
_PREDICT_EPILOG = """\
examples:
  lossrate predict run.csv                                  the fitted curve under the run's own lr
  lossrate predict run.csv --until 0.5 --steps 20000        fit half, extend the run to 20k steps
  lossrate predict run.csv --schedule cosine --peak-lr 0.1 --final-lr 0.001
  lossrate predict run.csv --schedule wsd --decay-start 8000 --steps 10000 --csv what_if.csv
  lossrate predict run.csv --prior prior.json --schedule wsd --decay-start 6000 --steps 8000
                                          what-if "decay now", under a prior from earlier runs
"""
_EVALUATE_EPILOG = """\
examples:
  lossrate evaluate run.csv
  lossrate evaluate runs/*/trajectory.csv --models ode,ode_noise,power_steps --fractions 0.1,0.25
  lossrate evaluate a.csv b.csv --json > table.json
"""
_FLOOR_EPILOG = """\
examples:
  lossrate floor run.csv --target 0.05
  lossrate floor run.csv --until 0.3 --target 0.02 --joules-per-step 35

energy uses the log's energy_j column when present (measured), else --joules-per-step or the
mean wall time per step times an assumed power (labelled "estimate").
"""
_REPORT_EPILOG = """\
examples:
  lossrate report runs/demo                      redraw with the settings saved in fit.json
  lossrate report runs/demo --peers power_steps,exponential
  lossrate report run.csv --loss ce --classes 10 --until 0.3 --out report/
"""
