"""The argument parser of ``lossrate``: argument types, option groups, help epilogs."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
from ._helpers import _FORMATS, _names
from ._optimize import add_optimize_parser


# ------------------------------------------------------------------ argument types
def _fraction(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a fraction in (0, 1], e.g. 0.3; got {text!r}"
        ) from None
    if not 0 < x <= 1:
        raise argparse.ArgumentTypeError(
            f"must lie in (0, 1] (0.3 = the first 30 % of steps); got {text!r}"
        )
    return x


def _positive(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (math.isfinite(x) and x > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return x


def _count(text: str) -> int:
    try:
        k = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if k < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return k


def _level(text: str) -> float:
    x = _positive(text)
    if x >= 1:
        raise argparse.ArgumentTypeError(f"must lie in (0, 1), e.g. 0.9; got {text!r}")
    return x


def _byte_count(text: str) -> int:
    """A size: a whole number of bytes, or with a K/M/G suffix (KiB, MiB, GiB)."""
    units = {"k": 2**10, "m": 2**20, "g": 2**30}
    raw = text.strip().lower().removesuffix("ib").removesuffix("b")
    scale = units.get(raw[-1:], 1) if raw else 1
    number = raw[:-1] if scale != 1 else raw
    try:
        value = float(number)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a size such as 200M, 2G or 0 (no limit); got {text!r}"
        ) from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be >= 0 (0: no limit), got {text!r}")
    return int(value * scale)


def _point_count(text: str) -> int | str:
    """``--max-points``: a whole number >= 100, or ``all`` (keep every row; returned as is)."""
    raw = text.strip().lower().replace(",", "").replace("_", "")
    if raw in ("all", "none"):
        return "all"
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number of points such as 20000, or all; got {text!r}"
        ) from None
    if value < 100:
        raise argparse.ArgumentTypeError(f"must be >= 100 (or all), got {text!r}")
    return value


def _key_value(text: str) -> tuple[str, float]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, e.g. alpha=1.6; got {text!r}")
    try:
        return key.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"the value of {key!r} must be a number, got {value!r}"
        ) from None


def _setting(text: str) -> tuple[str, Any]:
    """KEY=VALUE with VALUE read as TOML (200, 0.05, true, "cosine"; bare words are strings)."""
    import tomllib

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, e.g. train.steps=200; got {text!r}")
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()
    return key.strip(), parsed


# ------------------------------------------------------------------ parser
class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default once: not when the help already names it, nor for options
    without a value to show (None, off, an empty list)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, [], argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


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


def _common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("output")
    g.add_argument(
        "--json", action="store_true", help="print one JSON object on stdout instead of text"
    )
    g.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    g.add_argument(
        "--debug", action="store_true", help="show the full traceback of an internal failure"
    )


def _log_options(
    p: argparse.ArgumentParser, *, until: float | None, bootstrap: int = 200, what_if: bool = False
) -> None:
    g = p.add_argument_group("the log")
    g.add_argument(
        "--format",
        choices=_FORMATS,
        default="auto",
        help="log format (auto: from the file name and contents; trajectory: a lossrate CSV)",
    )
    g.add_argument(
        "--loss-key",
        default=None,
        metavar="NAME",
        help="column or TensorBoard tag of the training loss (default: guessed by name)",
    )
    g.add_argument(
        "--lr-key",
        default=None,
        metavar="NAME",
        help="column or tag of the learning rate (default: guessed by name)",
    )
    g.add_argument(
        "--drop-nonfinite", action="store_true", help="drop rows whose loss is NaN or inf"
    )
    g.add_argument(
        "--interpolate-lr",
        action="store_true",
        help="fill steps whose lr is missing or NaN by linear interpolation",
    )
    g.add_argument(
        "--allow-truncated",
        action="store_true",
        help="drop a last line or record cut short (a run stopped while writing)",
    )
    g.add_argument(
        "--max-bytes",
        type=_byte_count,
        default=None,
        metavar="SIZE",
        help="read logs up to this size, e.g. 500M or 2G; 0: no limit "
        "(default: 2G for a CSV, 64M for the other formats)",
    )
    g.add_argument(
        "--max-points",
        type=_point_count,
        default=None,
        metavar="N",
        help="bin a log with more rows than N by step to at most N points (bin-mean loss, "
        "exact intrinsic time; the output notes it), or all: keep every row (default: 20000)",
    )
    g.add_argument(
        "--loss",
        default=None,
        help="loss family of the closure g: ce, mse, bce, mae, smoothed_ce, ... "
        "(default: the log's metadata, else ce)",
    )
    g.add_argument(
        "--classes",
        type=int,
        default=None,
        help="number of classes (ce); default: the log's metadata",
    )
    g.add_argument(
        "--alpha",
        type=_positive,
        default=None,
        help="CE closure constant alpha in [C/(C-1), 2] (default 1.5)",
    )
    g.add_argument(
        "--param",
        "-p",
        type=_key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="another closure parameter, e.g. -p a=0.1 for mse (repeatable)",
    )
    g.add_argument(
        "--lr",
        type=_positive,
        default=None,
        help="learning rate to assume when the log has no lr column: the constant lr, or the "
        "peak lr of --schedule-of-log",
    )
    g.add_argument(
        "--schedule-of-log",
        choices=("constant", "cosine", "linear"),
        default=None,
        metavar="SHAPE",
        help="the lr schedule of a log without lr column (constant, cosine to 0, linear to 0), "
        "with peak --lr, --warmup N and --log-steps N (the run's total steps; default: the "
        "log's last step + 1)",
    )
    g.add_argument(
        "--log-steps",
        type=_count,
        default=None,
        metavar="N",
        help="total optimizer steps of the run, for --schedule-of-log (default: the log's)",
    )
    if not what_if:
        g.add_argument(
            "--warmup",
            type=_count,
            default=None,
            help="linear warmup steps of --schedule-of-log (default: 0)",
        )
    f = p.add_argument_group("the fit")
    f.add_argument(
        "--model",
        default=None,
        help="curve model: auto (the ODE models and peer laws weighed by backtests inside the "
        "fitted steps, with calibrated intervals), ode, ode_noise, ode_relax, or a peer law "
        "(default: auto; ode_relax with --prior)",
    )
    if until is not None:
        f.add_argument(
            "--until",
            type=_fraction,
            default=until,
            help="fit on the first FRACTION of the steps and predict the rest",
        )
        f.add_argument(
            "--until-step",
            type=_count,
            default=None,
            metavar="STEP",
            help="fit on the steps up to STEP instead (overrides --until)",
        )
    f.add_argument(
        "--fix",
        type=_key_value,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="hold a model parameter at a value, e.g. --fix L_inf=0.1 (repeatable; not with "
        "--model auto)",
    )
    f.add_argument("--level", type=_level, default=0.9, help="interval level")
    f.add_argument(
        "--bootstrap",
        type=_count,
        default=bootstrap,
        help="bootstrap refits for the intervals (0: faster Gauss-Newton intervals)",
    )
    f.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    f.add_argument(
        "--jobs",
        type=_count,
        default=0,
        metavar="N",
        help="worker processes for auto's fits (0: every core; 1: none); same answer either way",
    )


def _prior_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("learning from earlier runs")
    g.add_argument(
        "--prior",
        type=Path,
        default=None,
        metavar="RUNS_DIR_OR_FILE",
        help="earlier runs of the same model and data: a folder of their logs (any log lossrate "
        "reads, or run folders holding trajectory.csv), a fit JSON, or a saved prior JSON; the fit "
        "becomes a MAP fit under their prior",
    )
    g.add_argument(
        "--save-prior",
        type=Path,
        default=None,
        metavar="FILE",
        help="also write the prior built from --prior to this JSON file (reuse it next time)",
    )


def _target_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("target")
    g.add_argument(
        "--target",
        type=_positive,
        default=None,
        help="target loss for time and energy estimates (default: none)",
    )
    g.add_argument(
        "--joules-per-step",
        type=_positive,
        default=None,
        help="energy of one step, when the log has no energy_j column (an estimate)",
    )


def _schedule_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("the what-if schedule")
    g.add_argument(
        "--schedule",
        choices=("constant", "cosine", "wsd", "step", "linear"),
        default=None,
        help="learning-rate schedule to predict under (default: the log's own)",
    )
    g.add_argument(
        "--steps",
        type=_count,
        default=None,
        help="optimizer steps of the new schedule (default: the run's)",
    )
    g.add_argument(
        "--peak-lr",
        type=_positive,
        default=None,
        help="peak learning rate (default: the log's largest lr)",
    )
    g.add_argument(
        "--final-lr", type=float, default=0.0, help="final learning rate (cosine, wsd, linear)"
    )
    g.add_argument(
        "--warmup",
        type=_count,
        default=None,
        help="linear warmup steps of the new schedule (default: the log's warmup: the steps "
        "its lr took to reach its peak; with --schedule-of-log, the log's schedule's warmup)",
    )
    g.add_argument(
        "--decay-start",
        type=_count,
        default=None,
        metavar="STEP",
        help="first decay step (wsd; e.g. 80 %% of --steps)",
    )
    g.add_argument(
        "--decay", choices=("linear", "geometric"), default="linear", help="decay shape (wsd)"
    )
    g.add_argument(
        "--milestones",
        type=lambda s: [_count(x) for x in s.split(",") if x],
        default=[],
        help="comma-separated steps where the lr is multiplied by --factor (step)",
    )
    g.add_argument(
        "--factor", type=_positive, default=0.1, help="lr factor at each milestone (step)"
    )
    g.add_argument(
        "--csv", type=Path, default=None, help="also write the predicted curve to this CSV file"
    )


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
        "train a wide MLP on 5k real MNIST digits, fit auto on 40 % of the steps, "
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
