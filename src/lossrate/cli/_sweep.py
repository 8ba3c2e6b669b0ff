"""``lossrate sweep``: run every run of a sweep config, each into ``OUT/<run name>/``,
serially or on Ray (:mod:`lossrate.experiments.sweep_exec`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .._errors import DataError, InvalidArgumentError

__all__ = ["add_sweep_parser"]

_EPILOG = """\
examples:
  lossrate sweep sweep_schedules --out runs/schedules          # the shipped schedule sweep
  lossrate sweep my_sweep.toml --set train.steps=300 --dry-run  # list the runs, train nothing
  lossrate sweep my_sweep.toml --out runs/s --resume            # finish after a crash or a kill
  lossrate sweep my_sweep.toml --address ray://head:10001       # on an existing Ray cluster
  lossrate fit new.csv --until 0.3 --prior runs/s/              # finished runs as a prior

A sweep file names a base config and a [grid] of dotted config keys (see
lossrate.experiments.sweep). Each run is trained by the same runner as `lossrate train`
(checkpoints, exact resume); a complete run gets the marker sweep_done. A run that fails is
retried --retries times (resuming from its checkpoint), then listed at the end with exit
code 3; the other runs still finish. Without Ray (pip install 'lossrate[ray]') the runs go
one after another.
"""


def add_sweep_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``sweep`` subcommand to the subparsers ``sub``."""
    from ._options import _common, _count, _Formatter, _setting

    text = "run a sweep config (a grid of experiment configs), serially or on Ray"
    p = sub.add_parser(
        "sweep", help=text, description=text, epilog=_EPILOG, formatter_class=_Formatter
    )
    p.set_defaults(func=_cmd_sweep)
    p.add_argument("sweep", help="a sweep TOML file, or a shipped sweep name (sweep_schedules)")
    p.add_argument(
        "--out", type=Path, default=None, help="sweep folder (default: runs/<sweep name>)"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="skip complete runs and continue the others from their checkpoints",
    )
    p.add_argument(
        "--retries",
        type=_count,
        default=1,
        help="further tries of a failing run before it is reported",
    )
    p.add_argument(
        "--set",
        type=_setting,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change a config key in every run, e.g. --set train.steps=200 (repeatable)",
    )
    p.add_argument("--dry-run", action="store_true", help="list the runs and train nothing")
    g = p.add_argument_group("where the runs go")
    g.add_argument(
        "--executor",
        choices=("auto", "serial", "ray"),
        default="auto",
        help="auto: Ray when installed, else one run after another",
    )
    g.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join (default: $RAY_ADDRESS, else a local Ray on this machine)",
    )
    g.add_argument(
        "--workers", type=_count, default=0, help="CPUs of a local Ray (0: all of the machine's)"
    )
    g.add_argument("--device", default="cpu", help="torch device of every run: cpu, cuda, auto")
    g.add_argument(
        "--threads", type=_count, default=1, help="torch CPU threads per run (0: torch's default)"
    )
    g.add_argument(
        "--gpus-per-run",
        type=float,
        default=None,
        help="GPUs Ray reserves per run (default: 1 with --device cuda, else 0; 0.5: two per GPU)",
    )
    _common(p)
    return p


def _cmd_sweep(args: argparse.Namespace) -> Any:
    from ..experiments.sweep import load_sweep
    from ._commands import Outcome

    sweep = load_sweep(args.sweep)
    if args.set:
        sweep = sweep.with_changes(dict(args.set))
    out = args.out or Path("runs") / sweep.name
    plan = sweep.plan()
    if args.dry_run:
        lines = [f"{sweep.name}: {len(plan)} runs into {out}/"] + [
            f"  {r.name}: " + ", ".join(f"{k} {v!r}" for k, v in r.changes[len(sweep.set) :])
            for r in plan
        ]
        return Outcome(
            "\n".join(lines),
            {"sweep": sweep.name, "out": str(out), "runs": [r.name for r in plan]},
        )
    if args.address and args.executor == "serial":
        raise InvalidArgumentError("--address needs the Ray executor; drop --executor serial.")
    from ..experiments.sweep_exec import run_sweep

    result = run_sweep(
        sweep,
        out,
        resume=args.resume,
        retries=args.retries,
        executor=args.executor,
        address=args.address,
        workers=args.workers or None,
        device=args.device,
        threads=args.threads,
        gpus_per_run=args.gpus_per_run,
        progress=not (args.quiet or args.json),
        notice=lambda text: print(f"lossrate: {text}", file=sys.stderr),
    )
    counts = {s: sum(o.status == s for o in result.outcomes) for s in ("done", "skipped")}
    failed = result.failed
    if failed:
        listing = "; ".join(f"{o.name} ({o.error})" for o in failed)
        raise DataError(
            f"{len(failed)} of {len(plan)} runs failed after {args.retries + 1} tries each: "
            f"{listing}. The other runs finished in {out}/; fix the cause and run the same "
            "command with --resume to retry only the failed ones."
        )
    text = (
        f"sweep {sweep.name}: {len(plan)} runs ({counts['done']} trained now, "
        f"{counts['skipped']} complete before) on {result.executor}\n"
        f"sweep folder: {out}\nnext: lossrate fit NEW_LOG --until 0.3 --prior {out}/"
    )
    return Outcome(text, result.to_dict())
