"""Helpers of the ``lossrate`` subcommands: reading the log and the options (model, prior,
closure, what-if schedule), output paths and files, and the progress bar over stages."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._errors import DataError, InvalidArgumentError

#: log formats of --format (lossrate.readers.FORMATS, and "auto")
_FORMATS = ("auto", "csv", "tensorboard", "wandb", "lightning", "trajectory")


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError(
            "expected comma-separated model names, e.g. power_steps,exponential"
        )
    return names


def _model(args: argparse.Namespace) -> str:
    """--model, defaulting to auto (ode_relax when fitting under a prior)."""
    if args.model is not None:
        return str(args.model)
    return "ode_relax" if getattr(args, "prior", None) is not None else "auto"


def _load_prior(args: argparse.Namespace) -> Any:
    """The prior named by --prior (None without it), never using the fitted log itself."""
    if getattr(args, "prior", None) is None:
        if getattr(args, "save_prior", None) is not None:
            raise InvalidArgumentError("--save-prior needs --prior RUNS_DIR_OR_FILE to build from.")
        return None
    if _model(args) == "auto":
        if args.save_prior is not None:
            raise InvalidArgumentError(
                "--save-prior saves the prior of one model; --model auto uses the earlier runs "
                "themselves. Name the model (e.g. --model ode_relax) to save its prior."
            )
        return _earlier_runs(args)
    from ..prior import Prior

    path = Path(args.prior)
    if not path.exists():
        raise InvalidArgumentError(
            f"--prior {str(path)!r} does not exist; give a saved prior (.json), a fit JSON, an "
            "earlier run's log or a folder of them."
        )
    logs = path.is_file() and path.suffix.lower() != ".json"
    if path.is_dir() and not any(f.suffix.lower() == ".json" for f in path.iterdir()):
        logs = True
    if path.is_dir() and _sweep_runs(path) is not None:
        logs = True  # a sweep's folder (its sweep.json is no fit): its finished runs' logs
    if logs:  # earlier runs' logs, read as the fitted log is (with its --loss and --classes)
        prior = Prior.from_runs(_earlier_runs(args), _model(args))
    else:
        prior = Prior.from_path(path, _model(args), exclude=[args.log])
    if args.save_prior is not None:
        prior.save(args.save_prior)
    return prior


def _earlier_runs(args: argparse.Namespace) -> dict[str, Any]:
    """The logs in the --prior folder (each file or run folder read_log accepts), for
    --model auto: every one is a test of the models at this run's extrapolation ratio."""
    from ..readers import read_log

    folder: Path = args.prior
    if not folder.is_dir() and (_model(args) == "auto" or folder.suffix.lower() == ".json"):
        raise InvalidArgumentError(
            f"--prior {str(folder)!r} is a file; with --model auto give a folder of earlier "
            "runs' logs (a saved prior holds one model's parameters: use it with --model "
            "ode_relax)."
        )
    own = Path(args.log).resolve()
    runs: dict[str, Any] = {}
    items = [folder] if folder.is_file() else sorted(folder.iterdir())
    sweep = None if folder.is_file() else _sweep_runs(folder)
    if sweep is not None:  # a sweep's folder: its finished runs only, never partial logs
        items = [log.parent for log in sweep[0]]
        if sweep[1]:
            import warnings

            warnings.warn(
                f"--prior {str(folder)!r} is a sweep folder: left out {len(sweep[1])} run(s) "
                f"that did not finish: {'; '.join(sweep[1])}. Finish them with `lossrate sweep "
                f"SWEEP --out {folder} --resume` to use them.",
                stacklevel=2,
            )
    for item in items:
        if item.resolve() == own or own.is_relative_to(item.resolve()) or item.name.startswith("."):
            continue
        if item.is_file() and item.suffix.lower() not in (
            ".csv",
            ".tsv",
            ".txt",
            ".parquet",
            ".jsonl",
        ):
            continue
        try:
            traj = read_log(_log_path(item))
        except DataError:
            if item == folder:
                raise
            continue  # not a log (a README, a figure folder)
        if args.loss is not None or traj.meta.loss is None:
            import dataclasses

            meta = dataclasses.replace(traj.meta, loss=args.loss or "ce", classes=args.classes)
            traj = traj.replace(meta=meta)
        if traj.lr is None:
            continue
        runs[traj.meta.name or (item.stem if item.is_file() else item.name)] = traj
    if not runs and sweep is not None:
        raise DataError(
            f"--prior {str(folder)!r} is a sweep folder with no finished run besides the run "
            f"being fitted (a finished run has the marker sweep_done); finish the sweep with "
            f"`lossrate sweep SWEEP --out {folder} --resume`, or give other runs."
        )
    if not runs:
        raise DataError(
            f"--prior {str(folder)!r} holds no log with a learning-rate column besides the run "
            "being fitted; give a folder of earlier runs' logs (or of fit JSONs, or a saved "
            "prior)."
        )
    return runs


def _sweep_runs(folder: Path) -> tuple[list[Path], list[str]] | None:
    """A sweep folder's finished runs and the lines of those left out (None: no sweep's)."""
    from ..prior._prior import sweep_runs

    return sweep_runs(folder)


def _log_path(path: Path) -> Path:
    """The file to read for ``path``: a run folder the recorder or the Lightning/HF callbacks
    wrote (``trajectory.csv`` inside) is read through that file."""
    if path.is_dir() and (path / "trajectory.csv").is_file():
        return path / "trajectory.csv"
    return path


def _gradient_noise(log: Path) -> tuple[str | None, dict[str, Any] | None]:
    """The gradient noise scale of the run at ``log`` (a run folder, or a log with the
    recorder's ``gradient_noise.csv`` beside it): one line for people and its ``--json``
    form, from :func:`lossrate.measured.noise_scale` over the last quarter of the steps.
    ``(None, None)`` when there is no such file; a file that cannot be used gives a line
    saying why (the fit itself does not need it)."""
    from ..measured import noise_path, noise_scale, read_gradient_noise

    try:
        if not noise_path(log).is_file():
            return None, None
        ns = noise_scale(read_gradient_noise(log))
    except (DataError, OSError) as exc:
        return f"gradient noise scale not computed: {exc}", {"error": str(exc)}
    hi = "inf" if math.isinf(ns.upper) else f"{ns.upper:.3g}"
    line = (
        f"gradient noise scale B_noise ≈ {ns.estimate:.3g} [95 % {ns.lower:.3g}, {hi}] over "
        f"steps {ns.steps[0]}–{ns.steps[1]}; the run's batch B = {ns.batch_size:g} is "
        f"{ns.ratio:.2g} × B_noise"
    )
    data = {
        "estimate": ns.estimate,
        "lower": ns.lower,
        "upper": ns.upper,
        "level": 0.95,
        "batch_size": ns.batch_size,
        "ratio": ns.ratio,
        "steps": list(ns.steps),
        "text": line,
    }
    return line, data


def _max_points(args: argparse.Namespace) -> dict[str, int | None]:
    """``read_log``'s ``max_points`` from ``--max-points`` (absent: the reader's default)."""
    value = getattr(args, "max_points", None)
    if value is None:
        return {}
    return {"max_points": None if value == "all" else int(value)}


def _read(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The log as a Trajectory (with --loss/--classes/--lr applied) and the settings used."""
    import dataclasses

    path: Path = args.log
    if not path.exists():
        raise DataError(
            f"{str(path)!r} does not exist; check the path (a log file or a log folder)."
        )
    from ..readers import read_log
    from ..readers._files import DEFAULT_MAX_BYTES

    max_bytes = getattr(args, "max_bytes", None)
    traj = read_log(
        _log_path(path),
        format=args.format,
        loss_tag=args.loss_key,
        lr_tag=args.lr_key,
        drop_nonfinite=args.drop_nonfinite,
        interpolate_lr=getattr(args, "interpolate_lr", False),
        allow_truncated=getattr(args, "allow_truncated", False),
        max_bytes=None if max_bytes == 0 else (max_bytes or DEFAULT_MAX_BYTES),
        **_max_points(args),
    )
    _check_loss_range(traj, path)
    meta = traj.meta
    changes: dict[str, Any] = {}
    if meta.name is not None and _shown(meta.name) != meta.name:
        changes["name"] = _shown(meta.name)  # a file name that is not UTF-8 (figures, page)
    extra = {k: _shown(v) if isinstance(v, str) else v for k, v in meta.extra.items()}
    if extra != dict(meta.extra):
        changes["extra"] = extra
    if args.loss is not None:
        changes["loss"] = args.loss
    elif meta.loss is None:
        changes["loss"] = "ce"
    if args.classes is not None:
        changes["classes"] = args.classes
    if changes:
        meta = dataclasses.replace(meta, **changes)
    of_log = getattr(args, "schedule_of_log", None)
    if traj.lr is not None and of_log is not None:
        raise InvalidArgumentError(
            f"{str(path)!r} has its own learning-rate column; leave out --schedule-of-log "
            "(it describes the lr of logs that did not record it)."
        )
    if traj.lr is None and args.lr is None:
        gap = _lr_gap_note(traj)
        if gap:
            raise DataError(
                f"{str(path)!r}: {gap}, so the intrinsic time t = sum of lr cannot be computed. "
                "Fill or fix those cells, or pass --interpolate-lr to interpolate the learning "
                "rate over them."
            )
        raise InvalidArgumentError(
            f"{str(path)!r} has no learning-rate column, and the ODE runs in intrinsic time "
            "t = sum of lr; pass --lr LR (the constant or peak learning rate used, with "
            "--schedule-of-log cosine|linear --warmup N for its schedule) or --lr-key "
            "NAME (the column that holds it)."
        )
    if traj.lr is None:
        from ..trajectory import Trajectory

        lr = _lr_of_schedule(args, traj)
        cols: dict[str, Any] = {k: v for k, v in traj.columns().items() if k not in ("t", "lr")}
        traj = Trajectory.from_arrays(cols.pop("loss"), lr=lr, meta=meta, **cols)
    elif changes:
        traj = traj.replace(meta=meta)
    settings = {
        "log": _shown(path),
        "format": args.format,
        "loss": traj.meta.loss,
        "classes": traj.meta.classes,
        "alpha": args.alpha,
        "lr": args.lr,
    }
    if of_log is not None:
        settings["schedule_of_log"] = of_log
        settings["warmup_of_log"] = getattr(args, "warmup", None) or 0
    return traj, settings


def _shown(path: Any) -> str:
    """``str(path)`` as text that can be printed and written as UTF-8: bytes of a file name
    that are not UTF-8 become U+FFFD."""
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _lr_gap_note(traj: Any) -> str | None:
    """The reader's note that the lr column was left out for NaN or empty cells, in words."""
    import re

    note = str(traj.meta.extra.get("source_notes", ""))
    m = re.search(r"lr column '([^']*)' is missing at (\d+) of (\d+) loss steps", note)
    if m is None:
        return None
    return (
        f"its learning-rate column {m.group(1)!r} holds NaN or an empty cell at {m.group(2)} of "
        f"{m.group(3)} logged steps"
    )


def _lr_of_schedule(args: argparse.Namespace, traj: Any) -> Any:
    """The lr of every logged step of a log without lr: constant --lr, or --schedule-of-log
    with peak --lr and --warmup over the log's steps (ending at its last step)."""
    import numpy as np

    of_log = getattr(args, "schedule_of_log", None)
    if of_log is None or of_log == "constant":
        return np.full(traj.n, float(args.lr))
    from ..schedule import Schedule

    first, last = int(traj.step[0]), int(traj.step[-1])
    n = int(getattr(args, "log_steps", None) or last + 1)
    if n <= last:
        raise InvalidArgumentError(
            f"--log-steps {n} ends before the log's last step {last}; give the run's total steps."
        )
    sched = Schedule.make(
        of_log,
        peak=float(args.lr),
        n_steps=n,
        warmup=int(getattr(args, "warmup", None) or 0),
    )
    if first < 0:
        raise InvalidArgumentError(f"the log starts at step {first}; steps must be >= 0.")
    return np.asarray(sched.lr, dtype=float)[np.asarray(traj.step, dtype=int)]


def _check_loss_range(traj: Any, path: Path) -> None:
    """Refuse losses so large that the fit's arithmetic overflows (beyond 1e150)."""
    import numpy as np

    loss = np.asarray(traj.loss, dtype=float)
    finite = loss[np.isfinite(loss)]
    if finite.size and float(np.max(np.abs(finite))) > 1e150:
        raise DataError(
            f"{str(path)!r}: the loss reaches {float(np.max(np.abs(finite))):.3g}, beyond what the "
            "fit's arithmetic can square without overflow (1e150); the loss column is probably "
            "not a loss (check --loss-key) or needs rescaling."
        )


def _closure(args: argparse.Namespace, traj: Any) -> Any:
    """The closure named by --loss (or the log's metadata) with --classes/--alpha/-p applied."""
    from ..report.analysis import run_closure

    params: dict[str, Any] = dict(args.param)
    if args.alpha is not None:
        params["alpha"] = args.alpha
    return run_closure(traj, **params)


def _what_if_schedule(args: argparse.Namespace, traj: Any) -> Any:
    from ..schedule import Schedule

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
    from ..trajectory import atomic_write

    def write(f: Any) -> None:
        f.write("step,t,loss,lower,upper\n")
        for row in zip(pred.step, pred.t, pred.loss, pred.lower, pred.upper, strict=True):
            f.write(",".join([str(int(row[0])), *(repr(float(x)) for x in row[1:])]) + "\n")

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


def _until(args: argparse.Namespace, traj: Any, until: float) -> float:
    """The fit fraction: ``until``, or the share of the log's steps up to --until-step."""
    step = getattr(args, "until_step", None)
    if step is None:
        return until
    first, last = int(traj.step[0]), int(traj.step[-1])
    if step <= first:
        raise InvalidArgumentError(
            f"--until-step {step} is at or before the log's first step {first}; give a step in "
            f"({first}, {last}]."
        )
    return 1.0 if step >= last else (step - first) / (last - first)


def _fixes(args: argparse.Namespace) -> dict[str, float] | None:
    """--fix NAME=VALUE options as a mapping (None without any)."""
    pairs = list(getattr(args, "fix", None) or [])
    return dict(pairs) or None


def _log_warmup(traj: Any) -> int:
    """The warmup of the log's lr: the steps it took to reach 99 % of its peak, counting the
    one that reached it (0 when it started there)."""
    import numpy as np

    if traj.lr is None or traj.n == 0:
        return 0
    lr = np.asarray(traj.lr, dtype=float)
    peak = float(np.max(lr))
    if not peak > 0 or lr[0] >= 0.99 * peak:
        return 0
    at = int(np.argmax(lr >= 0.99 * peak))
    return int(traj.step[at] - traj.step[0]) + 1  # lr_k = peak (k + 1) / warmup


def _check_outputs(
    args: argparse.Namespace,
    *,
    out: Path | None = None,
    rewrites: Sequence[str] = ("trajectory.csv", "fit.json", "report.html"),
) -> None:
    """Refuse, before any work, output paths that would overwrite an input, name a file where
    a folder is expected (or a folder where a file is), or a device such as /dev/null."""
    from .._folders import check_output_file, check_output_folder

    inputs = [Path(p) for p in (getattr(args, "log", None), getattr(args, "prior", None)) if p]
    inputs += [Path(p) for p in getattr(args, "logs", None) or []]
    if out is not None:
        check_output_folder(out, flag="--out", inputs=inputs, rewrites=rewrites)
    for flag, dest in (("--csv", "csv"), ("--save-prior", "save_prior")):
        path = getattr(args, dest, None)
        if path is not None:
            check_output_file(Path(path), flag=flag, inputs=inputs)
