"""The subcommands of ``lossrate`` (each returns an :class:`Outcome`); their helpers live in
:mod:`._helpers`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._errors import DataError, InvalidArgumentError
from ._helpers import (
    _check_outputs,
    _closure,
    _default_out,
    _files,
    _fixes,
    _gradient_noise,
    _load_prior,
    _log_warmup,
    _model,
    _names,
    _read,
    _shown,
    _span,
    _Stages,
    _unique_name,
    _until,
    _what_if_schedule,
    _write_prediction_csv,
)


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
    if out.exists() and not out.is_dir():
        raise InvalidArgumentError(
            f"--out {str(out)!r} is a file, not a folder; name the run folder (it is created), "
            f"e.g. --out runs/{config.name}."
        )
    from ..demo import torch_threads

    with torch_threads(args.threads or None):
        traj = run_experiment(
            config,
            out,
            resume=args.resume,
            device=args.device,
            progress=not (args.quiet or args.json),
            nproc=args.nproc,
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
    out = args.out or _default_out(args.log)
    _check_outputs(args, out=out)
    traj, settings = _read(args)
    return _fit_and_report(
        args,
        traj,
        out,
        settings,
        until=_until(args, traj, args.until),
        peers=args.peers,
        target=args.target,
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
    noise_line, noise = _gradient_noise(args.log)
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
            jobs=args.jobs,
            on_stage=st.advance,
            fix=_fixes(args),
        )
        settings = {
            **settings,
            "until": until,
            "model": _model(args),
            "prior": _shown(args.prior) if with_prior else None,
            "peers": ",".join(peers),
            "target": target,
            "fix": ",".join(f"{k}={v!r}" for k, v in (_fixes(args) or {}).items()) or None,
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
            notes=[noise_line] if noise_line else [],
            copies=_noise_copy(args.log, out) if write_trajectory else None,
        )
        st.advance("report")
    text = a.text() + (f"\n{noise_line}" if noise_line else "") + f"\nreport: {files.html}"
    return Outcome(text, {**a.to_dict(), "gradient_noise": noise, "report": _files(files)})


def _noise_copy(log: Path, out: Path) -> dict[str, Path] | None:
    """The run's gradient_noise.csv, to be copied beside the report's trajectory.csv when the
    report goes to another folder (the same folder carries it over)."""
    from ..measured import NOISE_FILENAME, noise_path

    src = noise_path(log)
    if not src.is_file() or src.resolve() == (out / NOISE_FILENAME).resolve():
        return None
    return {NOISE_FILENAME: src}


def _cmd_predict(args: argparse.Namespace) -> Outcome:
    import numpy as np

    from ..fit import predict
    from ..report.analysis import binned_note, fit_prefix

    _check_outputs(args)
    traj, _settings = _read(args)
    if args.warmup is None:  # the new schedule warms up as the run did
        args.warmup = _log_warmup(traj)
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
            until=_until(args, traj, args.until),
            level=args.level,
            bootstrap=args.bootstrap,
            seed=args.seed,
            jobs=args.jobs,
            prior=prior,
            ahead=schedule,
            fix=_fixes(args),
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
    shown = np.flatnonzero(np.isfinite(pred.loss))  # a law in Σ lr is infinite where it is 0
    if shown.size == 0:
        shown = np.arange(pred.step.size)
    idx = shown[np.unique(np.linspace(0, shown.size - 1, 11).round().astype(int))]
    hidden = pred.step.size - shown.size
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
            *(f"note: {n}" for n in [binned_note(traj)] if n),
            *(
                [
                    f"note: {hidden} step(s) with no finite prediction are left out of the table "
                    "(a law in Σ lr starts at infinity where Σ lr = 0)"
                ]
                if hidden
                else []
            ),
            *(f"warning: {w}" for w in pred.warnings),
        ]
    )
    if args.csv is not None:
        text += f"\nfull curve: {args.csv}"
    data = {
        "model": f.model.describe(),
        "prior": _shown(args.prior) if with_prior else None,
        "fit": f.to_dict(),
        "schedule": schedule.name if schedule else "logged",
        "level": pred.level,
        "step": pred.step,
        "t": pred.t,
        "loss": pred.loss,
        "lower": pred.lower,
        "upper": pred.upper,
        "warnings": list(pred.warnings),
        "binned": binned_note(traj),
    }
    return Outcome(text, data)


def _cmd_evaluate(args: argparse.Namespace) -> Outcome:
    import dataclasses

    from tqdm import tqdm

    from ..evaluate import evaluate

    _check_outputs(args)
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
            jobs=args.jobs,
            address=args.address,
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
            until=_until(args, traj, args.until),
            target=args.target,
            joules_per_step=args.joules_per_step,
            level=args.level,
            bootstrap=args.bootstrap,
            seed=args.seed,
            jobs=args.jobs,
            on_stage=st.advance,
            fix=_fixes(args),
        )
    noise_line, noise = _gradient_noise(args.log)
    text = a.text() + (f"\n{noise_line}" if noise_line else "")
    return Outcome(text, {**a.to_dict(), "gradient_noise": noise})


def _cmd_report(args: argparse.Namespace) -> Outcome:

    saved: dict[str, Any] = {}
    if args.path.is_dir() and (args.path / "trajectory.csv").is_file():
        folder = args.path
        args.log = folder / "trajectory.csv"
        fit_json = folder / "fit.json"
        if fit_json.is_file():
            saved = _saved_settings(fit_json)
        args.format = "trajectory"
    else:
        args.log = args.path
        folder = args.out or _default_out(args.path)
    write_trajectory = args.out is not None or not args.path.is_dir()
    _check_outputs(
        args,
        out=args.out or folder,
        rewrites=("trajectory.csv",) if write_trajectory else (),
    )
    for key in ("loss", "classes", "alpha", "model", "lr", "schedule_of_log"):
        if getattr(args, key) is None and saved.get(key) is not None:
            setattr(args, key, saved[key])
    if args.warmup is None and saved.get("warmup_of_log") is not None:
        args.warmup = saved["warmup_of_log"]
    if not args.fix and saved.get("fix"):
        args.fix = _saved_fix(saved["fix"], folder / "fit.json")
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
        until=_until(args, traj, until),
        peers=peers,
        target=target,
        write_trajectory=write_trajectory,
    )


#: the settings a report's fit.json may hold, and the check of each (file, field, value)
_FIX = "Delete fit.json (or that setting) to redraw with the defaults and the flags given."


def _saved_settings(path: Path) -> dict[str, Any]:
    """The ``settings`` of a report's fit.json, each checked (a DataError names the field)."""
    from .. import _validate as v

    source = repr(str(path))
    doc = v.read_json(path, what="fit JSON", fix=_FIX)
    doc = v.mapping(doc, source, "", _FIX)
    raw = v.mapping(doc.get("settings", {}), source, "settings", _FIX)
    out: dict[str, Any] = {}
    for key, value in raw.items():
        where = f"settings.{key}"
        if value is None:
            out[key] = None
        elif key in ("loss", "model", "peers", "prior", "format", "log", "fix"):
            out[key] = v.text(value, source, where, _FIX)
        elif key == "schedule_of_log":
            out[key] = v.choice(value, source, where, _LOG_SHAPES, _FIX)
        elif key in ("classes", "warmup_of_log"):
            out[key] = v.integer(value, source, where, _FIX, lo=0 if key != "classes" else 2)
        elif key == "until":
            out[key] = v.number(value, source, where, _FIX, lo=0, hi=1, lo_open=True)
        elif key in ("alpha", "lr", "target"):
            out[key] = v.number(value, source, where, _FIX, lo=0, lo_open=True)
        else:
            out[key] = value  # informational only
    if out.get("peers"):
        try:
            out["peers"] = ",".join(_names(out["peers"]))
        except argparse.ArgumentTypeError:
            raise v.fail(
                source, "settings.peers", raw["peers"], "comma-separated model names", _FIX
            ) from None
    return out


_LOG_SHAPES = ("constant", "cosine", "linear")


def _saved_fix(text: str, path: Path) -> list[tuple[str, float]]:
    from .. import _validate as v
    from ._options import _key_value

    pairs = []
    for item in text.split(","):
        try:
            pairs.append(_key_value(item))
        except argparse.ArgumentTypeError:
            raise v.fail(repr(str(path)), "settings.fix", text, "NAME=VALUE pairs", _FIX) from None
    return pairs
