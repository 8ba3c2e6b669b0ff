"""The ``lossrate`` command: demo, train, fit, predict, evaluate, floor, report.

Exit codes: 0 ok; 2 usage error or invalid argument; 3 bad data (a missing, empty or
malformed file); 4 internal failure (one line on stderr, rerun with ``--debug`` for the
traceback); 130 interrupted (Ctrl-C). With ``--json`` the result (or the error) is one
JSON object on stdout; progress and messages go to stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._errors import DataError, InvalidArgumentError, LossrateError

__all__ = [
    "EXIT_DATA",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "build_parser",
    "main",
]

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_DATA = 3
EXIT_INTERNAL = 4
EXIT_INTERRUPTED = 130

#: log formats of --format (lossrate.readers.FORMATS, and "auto")
_FORMATS = ("auto", "csv", "tensorboard", "wandb", "lightning", "trajectory")


@dataclass
class Outcome:
    """What a command produced: text for people, data for ``--json``."""

    text: str
    data: dict[str, Any] = field(default_factory=dict)


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


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError(
            "expected comma-separated model names, e.g. power_steps,exponential"
        )
    return names


# ------------------------------------------------------------------ parser
class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


_MAIN_EPILOG = """\
examples:
  lossrate demo                                  train an MLP on MNIST, fit 30 %, predict the rest
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


def _log_options(p: argparse.ArgumentParser, *, until: float | None, bootstrap: int = 200) -> None:
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
        help="constant learning rate to assume when the log has no lr column",
    )
    f = p.add_argument_group("the fit")
    f.add_argument(
        "--model",
        default=None,
        help="curve model: ode, ode_noise, or a peer law (default: ode; ode_noise with --prior)",
    )
    if until is not None:
        f.add_argument(
            "--until",
            type=_fraction,
            default=until,
            help="fit on the first FRACTION of the steps and predict the rest",
        )
    f.add_argument("--level", type=_level, default=0.9, help="interval level")
    f.add_argument(
        "--bootstrap",
        type=_count,
        default=bootstrap,
        help="bootstrap refits for the intervals (0: faster Gauss-Newton intervals)",
    )
    f.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")


def _prior_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("learning from earlier runs")
    g.add_argument(
        "--prior",
        type=Path,
        default=None,
        metavar="RUNS_DIR_OR_FILE",
        help="earlier runs of the same model and data: a folder of their trajectories (or fit "
        "JSONs), or a saved prior JSON; the fit becomes a MAP fit under their prior",
    )
    g.add_argument(
        "--save-prior",
        type=Path,
        default=None,
        metavar="FILE",
        help="also write the prior built from --prior to this JSON file (reuse it next time)",
    )


def _model(args: argparse.Namespace) -> str:
    """--model, defaulting to ode (ode_noise when fitting under a prior)."""
    if args.model is not None:
        return str(args.model)
    return "ode_noise" if getattr(args, "prior", None) is not None else "ode"


def _load_prior(args: argparse.Namespace) -> Any:
    """The prior named by --prior (None without it), never using the fitted log itself."""
    if getattr(args, "prior", None) is None:
        if getattr(args, "save_prior", None) is not None:
            raise InvalidArgumentError("--save-prior needs --prior RUNS_DIR_OR_FILE to build from.")
        return None
    from .prior import Prior

    prior = Prior.from_path(args.prior, _model(args), exclude=[args.log])
    if args.save_prior is not None:
        prior.save(args.save_prior)
    return prior


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
    g.add_argument("--warmup", type=_count, default=0, help="linear warmup steps")
    g.add_argument("--decay-start", type=_count, default=None, help="first decay step (wsd)")
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
    from . import __version__

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
            name, help=help_, description=help_, epilog=epilog, formatter_class=_Formatter
        )
        p.set_defaults(func=func)
        return p

    p = add(
        "demo",
        "train a wide MLP on 5k real MNIST digits, fit the ODE on 30 %% of the steps, "
        "predict the rest and write a report folder",
        _DEMO_EPILOG,
        _cmd_demo,
    )
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="run folder")
    p.add_argument(
        "--steps", type=_count, default=None, help="training steps (default: the config's)"
    )
    p.add_argument("--until", type=_fraction, default=0.3, help="fraction of the steps to fit on")
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
    _log_options(p, until=1.0)
    _prior_options(p)
    _schedule_options(p)
    _common(p)

    p = add(
        "evaluate",
        "prefix protocol: fit each model on the first k %% of each log, score the rest",
        _EVALUATE_EPILOG,
        _cmd_evaluate,
    )
    p.add_argument("logs", type=Path, nargs="+", help="one or more logs")
    p.add_argument(
        "--models",
        type=_names,
        default=["ode", "power_steps", "exponential"],
        help="comma-separated models to compare",
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
    _target_options(p)
    _common(p)
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


# ------------------------------------------------------------------ main
def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (see the module docstring)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help/--version exit 0, usage errors exit 2
        return int(exc.code or 0) if isinstance(exc.code, int) else EXIT_USAGE
    want_json = bool(getattr(args, "json", False))
    try:
        outcome = args.func(args)
    except KeyboardInterrupt:
        hint = " Continue the run with --resume." if args.command == "train" else ""
        return _fail(
            want_json,
            EXIT_INTERRUPTED,
            "interrupted",
            f"interrupted (Ctrl-C); outputs already written are kept.{hint}",
        )
    except InvalidArgumentError as exc:
        return _fail(want_json, EXIT_USAGE, "invalid-argument", str(exc))
    except DataError as exc:
        return _fail(want_json, EXIT_DATA, "bad-data", str(exc))
    except LossrateError as exc:
        return _fail(want_json, EXIT_USAGE, "error", str(exc))
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        hint = "" if args.debug else " (rerun with --debug for the traceback)"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return _fail(
            want_json,
            EXIT_INTERNAL,
            "internal",
            f"internal error: {type(exc).__name__}: {first}{hint}",
        )
    if want_json:
        print(json.dumps(_jsonable(outcome.data), indent=2, sort_keys=True, allow_nan=False))
    else:
        print(outcome.text)
    return EXIT_OK


def _fail(want_json: bool, code: int, kind: str, message: str) -> int:
    print(f"lossrate: error: {message}", file=sys.stderr)
    if want_json:
        print(json.dumps({"error": {"kind": kind, "message": message, "exit_code": code}}))
    return code


def _jsonable(obj: Any) -> Any:
    """JSON-safe copy: NaN -> null, +-inf -> "inf"/"-inf", numpy scalars and paths to plain values."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy arrays and scalars
        return _jsonable(obj.tolist())
    if isinstance(obj, float):
        if math.isnan(obj):
            return None
        if math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
    return obj


# ------------------------------------------------------------------ commands
def _cmd_demo(args: argparse.Namespace) -> Outcome:
    from .demo import run_demo

    result = run_demo(
        args.out,
        steps=args.steps,
        until=args.until,
        target=args.target,
        device=args.device,
        seed=args.seed,
        threads=args.threads or None,
        progress=not (args.quiet or args.json),
    )
    return Outcome(result.text(), result.to_dict())


def _cmd_train(args: argparse.Namespace) -> Outcome:
    from .experiments import run_experiment
    from .experiments.config import load_config

    config = load_config(args.config)
    if args.set:
        config = config.override(dict(args.set))
    out = args.out or Path("runs") / config.name
    from .demo import torch_threads

    with torch_threads(args.threads or None):
        traj = run_experiment(
            config,
            out,
            resume=args.resume,
            device=args.device,
            progress=not (args.quiet or args.json),
        )
    final = float(traj.loss[-1])
    text = (
        f"trained {config.name}: {traj.n} logged steps, final batch loss {final:.4g}\n"
        f"run folder: {out}\nnext: lossrate fit {out / 'trajectory.csv'} --until 0.3"
    )
    return Outcome(
        text,
        {
            "config": config.name,
            "run_dir": str(out),
            "rows": traj.n,
            "final_loss": final,
            "trajectory": str(out / "trajectory.csv"),
        },
    )


def _cmd_fit(args: argparse.Namespace) -> Outcome:

    traj, settings = _read(args)
    out = args.out or _default_out(args.log)
    return _fit_and_report(
        args, traj, out, settings, until=args.until, peers=args.peers, target=args.target
    )


def _fit_and_report(
    args: argparse.Namespace,
    traj: Any,
    out: Path,
    settings: dict[str, Any],
    *,
    until: float,
    peers: Sequence[str],
    target: float | None,
    write_trajectory: bool = True,
) -> Outcome:
    """Fit on the prefix, predict, fit the peers, and write the report folder ``out``."""
    from .report import write_report
    from .report.analysis import analyze

    with_prior = getattr(args, "prior", None) is not None
    stages = [*(["prior"] if with_prior else []), "fit", "predict"]
    stages += [*(f"peer {p}" for p in peers), "report"]
    with _Stages(stages, quiet=args.quiet or args.json) as st:
        prior = _load_prior(args)
        if with_prior:
            st.advance("prior")
        a = analyze(
            traj,
            closure=_closure(args, traj),
            model=_model(args),
            prior=prior,
            until=until,
            peers=peers,
            target=target,
            joules_per_step=args.joules_per_step,
            level=args.level,
            bootstrap=args.bootstrap,
            seed=args.seed,
            on_stage=st.advance,
        )
        settings = {
            **settings,
            "until": until,
            "model": _model(args),
            "prior": str(args.prior) if with_prior else None,
            "peers": ",".join(peers),
            "target": target,
        }
        files = write_report(
            out,
            traj,
            a.fit,
            a.prediction,
            headline=a.headline,
            closure=a.closure,
            peers=a.peers,
            warnings=a.notes,
            settings=settings,
            write_trajectory=write_trajectory,
        )
        st.advance("report")
    return Outcome(a.text() + f"\nreport: {files.html}", {**a.to_dict(), "report": _files(files)})


def _cmd_predict(args: argparse.Namespace) -> Outcome:
    import numpy as np

    from .fit import predict
    from .report.analysis import fit_prefix

    traj, _settings = _read(args)
    with_prior = args.prior is not None
    stages = [*(["prior"] if with_prior else []), "fit", "predict"]
    with _Stages(stages, quiet=args.quiet or args.json) as st:
        schedule = _what_if_schedule(args, traj)  # bad schedule options fail before any fit
        prior = _load_prior(args)
        if with_prior:
            st.advance("prior")
        f = fit_prefix(
            traj,
            model=_model(args),
            until=args.until,
            level=args.level,
            bootstrap=args.bootstrap,
            seed=args.seed,
            prior=prior,
        )
        st.advance("fit")
        first = int(traj.step[0])
        end = schedule.n_steps if schedule is not None else int(traj.step[-1])
        steps = np.arange(first, end + 1) if schedule is not None else traj.step
        if with_prior:
            import warnings

            from .prior import predict_with_prior

            with warnings.catch_warnings():  # kept in pred.warnings, printed below
                warnings.simplefilter("ignore")
                pred = predict_with_prior(f, steps, schedule=schedule, level=args.level)
        else:
            pred = predict(f, steps, schedule=schedule, level=args.level)
        st.advance("predict")
    if args.csv is not None:
        _write_prediction_csv(args.csv, pred)
    pct = f"{100 * pred.level:.0f}%"
    idx = np.unique(np.linspace(0, pred.step.size - 1, 11).round().astype(int))
    rows = [f"{'step':>10} {'t (Σ lr)':>12} {'predicted':>12}  {pct} interval"]
    rows += [
        f"{int(pred.step[i]):>10} {pred.t[i]:>12.5g} {pred.loss[i]:>12.5g}  [{pred.lower[i]:.5g}, "
        f"{pred.upper[i]:.5g}]"
        for i in idx
    ]
    what = (
        f"under schedule {schedule.name!r}"
        if schedule is not None
        else "under the run's own schedule"
    )
    text = "\n".join(
        [
            f"{f.model.describe()} fitted on steps {_span(f)}"
            + (f" under the prior from {args.prior}" if with_prior else "")
            + f"; prediction {what}:",
            *rows,
            *(f"warning: {w}" for w in pred.warnings),
        ]
    )
    if args.csv is not None:
        text += f"\nfull curve: {args.csv}"
    data = {
        "model": f.model.describe(),
        "prior": str(args.prior) if with_prior else None,
        "fit": f.to_dict(),
        "schedule": schedule.name if schedule else "logged",
        "level": pred.level,
        "step": pred.step,
        "t": pred.t,
        "loss": pred.loss,
        "lower": pred.lower,
        "upper": pred.upper,
        "warnings": list(pred.warnings),
    }
    return Outcome(text, data)


def _cmd_evaluate(args: argparse.Namespace) -> Outcome:
    import dataclasses

    from tqdm import tqdm

    from .evaluate import evaluate

    runs: dict[str, Any] = {}
    for path in args.logs:
        args.log = path
        traj, _ = _read(args)
        runs[_unique_name(traj.meta.name or path.stem, runs)] = traj
    total = len(runs) * len(args.fractions) * len(args.models)
    with tqdm(
        total=total,
        desc="fits",
        unit="fit",
        disable=True if args.quiet or args.json else None,
        leave=False,
        file=sys.stderr,
    ) as bar:
        table = evaluate(
            runs,
            args.models,
            fractions=args.fractions,
            fit_options={"bootstrap": args.bootstrap, "level": args.level, "seed": args.seed},
            progress=lambda _line: bar.update(1),
        )
    if args.csv is not None:
        table.to_csv(str(args.csv))
    summary = table.summary(("model", "k"))
    text = (
        f"prefix protocol on {len(runs)} run(s): median over runs of each score on the held-out steps\n"
        + table.to_text(by=("model", "k"))
        + (f"\nevery row: {args.csv}" if args.csv is not None else "")
    )
    return Outcome(text, {"summary": summary, "rows": [dataclasses.asdict(r) for r in table.rows]})


def _cmd_floor(args: argparse.Namespace) -> Outcome:
    from .report.analysis import analyze

    traj, _ = _read(args)
    with _Stages(["fit", "predict"], quiet=args.quiet or args.json) as st:
        a = analyze(
            traj,
            closure=_closure(args, traj),
            model=_model(args),
            until=args.until,
            target=args.target,
            joules_per_step=args.joules_per_step,
            level=args.level,
            bootstrap=args.bootstrap,
            seed=args.seed,
            on_stage=st.advance,
        )
    return Outcome(a.text(), a.to_dict())


def _cmd_report(args: argparse.Namespace) -> Outcome:

    saved: dict[str, Any] = {}
    if args.path.is_dir() and (args.path / "trajectory.csv").is_file():
        folder = args.path
        args.log = folder / "trajectory.csv"
        fit_json = folder / "fit.json"
        if fit_json.is_file():
            try:
                saved = dict(json.loads(fit_json.read_text(encoding="utf-8")).get("settings", {}))
            except (json.JSONDecodeError, AttributeError) as exc:
                raise DataError(
                    f"{str(fit_json)!r} is not valid JSON ({exc}); delete it to use defaults."
                ) from None
        args.format = "trajectory"
    else:
        args.log = args.path
        folder = args.out or _default_out(args.path)
    for key in ("loss", "classes", "alpha", "model", "lr"):
        if getattr(args, key) in (None, "ode") and saved.get(key) is not None:
            setattr(args, key, saved[key])
    # a report of a fit made under a prior is redrawn under the same prior, when still there
    args.prior = Path(saved["prior"]) if saved.get("prior") else None
    args.save_prior = None
    if args.prior is not None and not args.prior.exists():
        raise DataError(
            f"the saved fit used the prior {str(args.prior)!r}, which no longer exists; restore "
            "it, or delete fit.json to redraw without a prior."
        )
    until = args.until if args.until is not None else float(saved.get("until") or 0.3)
    target = args.target if args.target is not None else saved.get("target")
    peers = (
        args.peers
        if args.peers is not None
        else _names(saved["peers"])
        if saved.get("peers")
        else []
    )
    traj, settings = _read(args)
    return _fit_and_report(
        args,
        traj,
        args.out or folder,
        {**saved, **settings},
        until=until,
        peers=peers,
        target=target,
        write_trajectory=args.out is not None or not args.path.is_dir(),
    )


# ------------------------------------------------------------------ helpers
def _read(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The log as a Trajectory (with --loss/--classes/--lr applied) and the settings used."""
    import dataclasses

    path: Path = args.log
    if not path.exists():
        raise DataError(
            f"{str(path)!r} does not exist; check the path (a log file or a log folder)."
        )
    from .readers import read_log

    traj = read_log(
        path,
        format=args.format,
        loss_tag=args.loss_key,
        lr_tag=args.lr_key,
        drop_nonfinite=args.drop_nonfinite,
    )
    meta = traj.meta
    changes: dict[str, Any] = {}
    if args.loss is not None:
        changes["loss"] = args.loss
    elif meta.loss is None:
        changes["loss"] = "ce"
    if args.classes is not None:
        changes["classes"] = args.classes
    if changes:
        meta = dataclasses.replace(meta, **changes)
    if traj.lr is None and args.lr is None:
        raise InvalidArgumentError(
            f"{str(path)!r} has no learning-rate column, and the ODE runs in intrinsic time t = sum of lr; "
            "pass --lr LR (the constant learning rate used) or --lr-key NAME (the column that holds it)."
        )
    if traj.lr is None:
        from .trajectory import Trajectory

        cols: dict[str, Any] = {k: v for k, v in traj.columns().items() if k not in ("t", "lr")}
        traj = Trajectory.from_arrays(cols.pop("loss"), lr=[args.lr] * traj.n, meta=meta, **cols)
    elif changes:
        traj = traj.replace(meta=meta)
    settings = {
        "log": str(path),
        "format": args.format,
        "loss": traj.meta.loss,
        "classes": traj.meta.classes,
        "alpha": args.alpha,
        "lr": args.lr,
    }
    return traj, settings


def _closure(args: argparse.Namespace, traj: Any) -> Any:
    """The closure named by --loss (or the log's metadata) with --classes/--alpha/-p applied."""
    from .report.analysis import run_closure

    params: dict[str, Any] = dict(args.param)
    if args.alpha is not None:
        params["alpha"] = args.alpha
    return run_closure(traj, **params)


def _what_if_schedule(args: argparse.Namespace, traj: Any) -> Any:
    from .schedule import Schedule

    if args.schedule is None:
        if args.steps is None:
            return None
        if traj.lr is None:
            raise InvalidArgumentError(
                "--steps needs the log's lr column or --schedule with --peak-lr."
            )
        return Schedule.from_logged(traj.step, traj.lr).extend(args.steps)
    n = args.steps if args.steps is not None else int(traj.step[-1]) + 1
    peak = args.peak_lr
    if peak is None:
        if traj.lr is None:
            raise InvalidArgumentError(
                "the log has no lr column; give the new schedule's --peak-lr."
            )
        peak = float(max(traj.lr))
    return Schedule.make(
        args.schedule,
        peak=peak,
        n_steps=n,
        warmup=args.warmup,
        final=args.final_lr,
        decay_start=args.decay_start,
        decay=args.decay,
        milestones=args.milestones,
        factor=args.factor,
    )


def _write_prediction_csv(path: Path, pred: Any) -> None:
    from .trajectory import atomic_write

    def write(f: Any) -> None:
        f.write("step,t,loss,lower,upper\n")
        for row in zip(pred.step, pred.t, pred.loss, pred.lower, pred.upper, strict=True):
            f.write(f"{int(row[0])},{row[1]!r},{row[2]!r},{row[3]!r},{row[4]!r}\n")

    atomic_write(path, write)


def _default_out(log: Path) -> Path:
    base = log.parent if log.is_file() else log
    return base / f"{log.stem if log.is_file() else log.name}.lossrate"


def _span(f: Any) -> str:
    for first, last in f.train_steps.values():
        return f"{first}..{last}"
    return "?"


def _files(files: Any) -> dict[str, Any]:
    return {
        "folder": files.folder,
        "html": files.html,
        "fit_json": files.fit_json,
        "trajectory": files.trajectory,
        "figures": list(files.figures),
        "warnings": list(files.warnings),
    }


def _unique_name(name: str, taken: dict[str, Any]) -> str:
    out, k = name, 2
    while out in taken:
        out, k = f"{name}-{k}", k + 1
    return out


class _Stages:
    """A tqdm bar over the named stages of a command (on stderr; silent when quiet or not a tty)."""

    def __init__(self, stages: Sequence[str], *, quiet: bool) -> None:
        from tqdm import tqdm

        self._bar = tqdm(
            total=len(stages),
            desc=stages[0] if stages else "",
            unit="stage",
            disable=True if quiet else None,
            leave=False,
            file=sys.stderr,
            bar_format="{desc:<18} {bar} {n_fmt}/{total_fmt} [{elapsed}]",
        )
        self._stages = list(stages)

    def advance(self, done: str) -> None:
        self._bar.update(1)
        i = self._bar.n
        if i < len(self._stages):
            self._bar.set_description_str(self._stages[i])

    def __enter__(self) -> _Stages:
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.close()


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
