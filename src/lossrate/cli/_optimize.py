"""``lossrate optimize``: the lr schedule that minimises the predicted final loss within a
step budget (:func:`lossrate.optimize_schedule`), written as a schedule CSV that
``lossrate train --set schedule.file=...`` and a user's own loop read."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .._errors import InvalidArgumentError

__all__ = ["add_optimize_parser"]

_EPILOG = """\
examples:
  lossrate optimize run.csv --steps 10000                       # every family, auto fit
  lossrate optimize run.csv --until 0.25 --steps 8000 --prior earlier_runs/ --family wsd
  lossrate train mnist_mlp_demo --set schedule.file=schedule.csv  # train with the result

The schedule covers the whole budget from step 0 (a plan for the run, or the next run);
its peak is the log's unless --peak-lr names another within the peaks the log and the
earlier runs used. Without a decay in the log or the earlier runs the decay gain is not
identified: the command says so and reports the interval of the gain.
The CSV has the header step,lr and one row per step (Schedule.read reads it back exactly).
"""


def add_optimize_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``optimize`` subcommand to the subparsers ``sub``."""
    from ._options import _common, _Formatter, _log_options, _positive, _prior_options

    text = "search the lr schedule that minimises the predicted final loss within a step budget"
    p = sub.add_parser(
        "optimize", help=text, description=text, epilog=_EPILOG, formatter_class=_Formatter
    )
    p.set_defaults(func=_cmd_optimize)
    p.add_argument("log", type=Path, help="the log to fit (any format read_log reads)")
    g = p.add_argument_group("the search")
    g.add_argument(
        "--steps", type=int, required=True, help="the budget: optimizer steps of the schedule"
    )
    g.add_argument(
        "--family",
        default="wsd,cosine,free",
        help="schedule families, comma-separated: wsd (decay start, length, shape, final lr), "
        "cosine (final lr, warmup), free (monotone, through fixed knots)",
    )
    g.add_argument(
        "--peak-lr",
        type=_positive,
        default=None,
        help="peak lr (default: the log's; must lie within the peaks seen)",
    )
    g.add_argument("--min-lr", type=float, default=0.0, help="no lr below this")
    g.add_argument(
        "--out",
        type=Path,
        default=Path("schedule.csv"),
        help="schedule CSV of the best family (the others beside it as NAME.FAMILY.csv)",
    )
    g.add_argument(
        "--figure",
        type=Path,
        default=None,
        help="figure of the schedules and their predicted curves (default: OUT with .png)",
    )
    _log_options(p, until=1.0)
    _prior_options(p)
    _common(p)
    return p


def _cmd_optimize(args: argparse.Namespace) -> Any:
    from ..optimize import optimize_schedule
    from ..report.analysis import fit_prefix
    from ..report.figures import save_figure
    from ..report.schedule_figure import schedule_figure
    from ..schedule import Schedule
    from ._commands import Outcome
    from ._helpers import _earlier_runs, _load_prior, _model, _read, _Stages

    families = [f.strip() for f in str(args.family).split(",") if f.strip()]
    if args.steps < 10:
        raise InvalidArgumentError(f"--steps must be >= 10, got {args.steps}.")
    traj, _settings = _read(args)
    with _Stages(["fit", *families, "write"], quiet=args.quiet or args.json) as st:
        prior = _load_prior(args)
        ahead = Schedule.from_logged(traj.step, traj.lr, n_steps=args.steps)
        f = fit_prefix(
            traj,
            model=_model(args),
            until=args.until,
            level=args.level,
            bootstrap=args.bootstrap,
            seed=args.seed,
            prior=prior,
            ahead=ahead,
            jobs=args.jobs,
        )
        st.advance("fit")
        is_auto = hasattr(f, "combination")
        if is_auto or args.prior is None or not args.prior.is_dir():
            earlier = prior if is_auto else None
        else:  # the runs behind the prior, to check the fit against what they reached
            earlier = _earlier_runs(args)
        result = optimize_schedule(
            f,
            args.steps,
            families,
            earlier=earlier,
            prior=None if is_auto else prior,
            peak=args.peak_lr,
            min_lr=args.min_lr,
            level=args.level,
            progress=st.advance,
        )
        best = result.best
        out: Path = args.out
        # OUT holds the recommendation: the law's best family, or the earlier run's schedule
        # that optimize keeps when the law misorders the earlier runs (result.kept)
        kept = result.kept if result.kept is not None and result.kept.schedule is not None else None
        lead = best.family if kept is None else f"kept from {kept.name}"
        files = {lead: str(result.recommended.write(out))}
        for name, fam in result.families.items():
            if name != lead:
                files[name] = str(fam.schedule.write(out.with_suffix(f".{name}.csv")))
        fig_path = args.figure or out.with_suffix(".png")
        save_figure(schedule_figure(result), fig_path)
        st.advance("write")
    text = "\n".join(
        [
            result.report(),
            f"schedule ({lead}): {out}  (lossrate train CONFIG --set schedule.file={out})",
            *(f"schedule ({k}): {v}" for k, v in files.items() if k != lead),
            f"figure: {fig_path}",
        ]
    )
    data = {**result.to_dict(), "files": {**files, "figure": str(fig_path)}}
    return Outcome(text, data)
