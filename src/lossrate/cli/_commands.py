"""The subcommands of ``lossrate`` and their helpers (each returns an :class:`Outcome`)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._errors import DataError, InvalidArgumentError

#: log formats of --format (lossrate.readers.FORMATS, and "auto")
_FORMATS = ("auto", "csv", "tensorboard", "wandb", "lightning", "trajectory")


@dataclass
class Outcome:
    """What a command produced: text for people, data for ``--json``."""

    text: str
    data: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------ commands
def _cmd_demo(args: argparse.Namespace) -> Outcome:
    from ..demo import run_demo

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
    from ..experiments import run_experiment
    from ..experiments.config import load_config

    config = load_config(args.config)
    if args.set:
        config = config.override(dict(args.set))
    out = args.out or Path("runs") / config.name
    from ..demo import torch_threads

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
    from ..report import write_report
    from ..report.analysis import analyze

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

    from ..fit import predict
    from ..report.analysis import fit_prefix

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
            ahead=schedule,
        )
        st.advance("fit")
        first = int(traj.step[0])
        end = schedule.n_steps if schedule is not None else int(traj.step[-1])
        steps = np.arange(first, end + 1) if schedule is not None else traj.step
        if with_prior and not hasattr(f, "combination"):
            from ..prior import predict_with_prior

            # the warning is kept in pred.warnings and printed below
            pred = predict_with_prior(f, steps, schedule=schedule, level=args.level, warn=False)
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
    why = f.why() if hasattr(f, "why") else []
    text = "\n".join(
        [
            f"{f.model.describe()} fitted on steps {_span(f)}"
            + (f" under the prior from {args.prior}" if with_prior else "")
            + f"; prediction {what}:",
            *why,
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

    from ..evaluate import evaluate

    runs: dict[str, Any] = {}
    unread: list[str] = []
    for path in args.logs:
        args.log = path
        try:
            traj, _ = _read(args)
        except DataError as exc:
            if len(args.logs) == 1:
                raise
            unread.append(f"{path}: not read ({exc})")
            continue
        runs[_unique_name(traj.meta.name or path.stem, runs)] = traj
    if not runs:
        raise DataError("no log could be read:\n  " + "\n  ".join(unread))
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
    failed = [
        f"{r.run} k={r.k:g} {r.model}: {r.message}"
        for r in table.rows
        if not r.fit_ok and r.message
    ]
    text = (
        f"prefix protocol on {len(runs)} run(s): median over runs of each score on the held-out "
        "steps (final_rel_err and final_log_err = |ln(pred/obs)| against the loss smoothed "
        "over 5 % of the held-out points; coverage of the interval, as a share)\n"
        + table.to_text(by=("model", "k"))
        + "".join(f"\nno row: {why}" for why in [*unread, *table.skipped])
        + "".join(f"\nfailed: {why}" for why in failed)
        + (f"\nevery row: {args.csv}" if args.csv is not None else "")
    )
    return Outcome(
        text,
        {
            "summary": summary,
            "rows": [dataclasses.asdict(r) for r in table.rows],
            "skipped": [*unread, *table.skipped],
        },
    )


def _cmd_floor(args: argparse.Namespace) -> Outcome:
    from ..report.analysis import analyze

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
        if getattr(args, key) is None and saved.get(key) is not None:
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

    prior = Prior.from_path(args.prior, _model(args), exclude=[args.log])
    if args.save_prior is not None:
        prior.save(args.save_prior)
    return prior


def _earlier_runs(args: argparse.Namespace) -> dict[str, Any]:
    """The logs in the --prior folder (each file or run folder read_log accepts), for
    --model auto: every one is a test of the models at this run's extrapolation ratio."""
    from ..readers import read_log

    folder: Path = args.prior
    if not folder.is_dir():
        raise InvalidArgumentError(
            f"--prior {str(folder)!r} is a file; with --model auto give a folder of earlier "
            "runs' logs (a saved prior holds one model's parameters: use it with --model "
            "ode_relax)."
        )
    own = Path(args.log).resolve()
    runs: dict[str, Any] = {}
    for item in sorted(folder.iterdir()):
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
            traj = read_log(item)
        except DataError:
            continue  # not a log (a README, a figure folder)
        if args.loss is not None or traj.meta.loss is None:
            import dataclasses

            meta = dataclasses.replace(traj.meta, loss=args.loss or "ce", classes=args.classes)
            traj = traj.replace(meta=meta)
        if traj.lr is None:
            continue
        runs[traj.meta.name or item.stem] = traj
    if not runs:
        raise DataError(
            f"--prior {str(folder)!r} holds no log with a learning-rate column besides the run "
            "being fitted; give a folder of earlier runs' logs."
        )
    return runs


def _read(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The log as a Trajectory (with --loss/--classes/--lr applied) and the settings used."""
    import dataclasses

    path: Path = args.log
    if not path.exists():
        raise DataError(
            f"{str(path)!r} does not exist; check the path (a log file or a log folder)."
        )
    from ..readers import read_log

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
        from ..trajectory import Trajectory

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
