"""Argument types and option groups of ``lossrate``'s subcommands (the parser itself is
:mod:`._parser`)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from ._helpers import _FORMATS


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


# ------------------------------------------------------------------ help format
class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default once: not when the help already names it, nor for options
    without a value to show (None, off, an empty list)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, [], argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


# ------------------------------------------------------------------ option groups
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
        help="worker processes for the fits (auto's, or evaluate's per log and model; 0: every "
        "core; 1: none); the same answer either way",
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
