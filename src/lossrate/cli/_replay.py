"""``lossrate replay RUN``: integrate a recorded run from its own measured, debiased rate and
print the agreement with the observed loss (an in-sample consistency check of the
factorisation, not a prediction; see :mod:`lossrate.replay`)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from .._errors import DataError
from ._commands import Outcome

__all__ = ["add_replay_parser"]

_EPILOG = """\
RUN is a run folder recorded with lossrate.torch (trajectory.csv, and gradient_noise.csv when
recorded with gradient groups) or its trajectory.csv.

examples:
  lossrate replay runs/mnist                 debiased replay, with the SGD-noise and
                                             second-order terms where measured
  lossrate replay runs/mnist --plot r.png    also draw it over the observed loss
  lossrate replay runs/old --raw             a run without gradient groups: the raw
                                             (mini-batch, biased) rate only
"""


def add_replay_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``replay`` on the subparsers ``sub`` of the main parser."""
    help_ = (
        "replay a recorded run from its own measured rate phi_hat: an in-sample "
        "consistency check of the factorisation, not a prediction"
    )
    p = sub.add_parser(
        "replay",
        help=help_,
        description=help_,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=_cmd_replay)
    p.add_argument("run", type=Path, metavar="RUN", help="run folder or its trajectory.csv")
    p.add_argument("--closure", default=None, help="closure name (default: the run's loss)")
    p.add_argument(
        "--raw",
        action="store_true",
        help="replay the raw mini-batch phi_hat (biased by tr(Sigma_g)/B); for runs recorded "
        "without gradient groups",
    )
    p.add_argument("--no-sgd-noise", action="store_true", help="leave out the SGD-noise replay")
    p.add_argument("--window", type=int, default=None, help="smoothing window in steps")
    p.add_argument("--plot", type=Path, default=None, help="write a PNG of the replay here")
    p.add_argument(
        "--json", action="store_true", help="print one JSON object on stdout instead of text"
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    p.add_argument("--debug", action="store_true", help="show the traceback of an internal failure")
    return p


def _cmd_replay(args: argparse.Namespace) -> Outcome:
    from ..measured import noise_path, noise_scale, read_gradient_noise
    from ..replay import LABEL, replay

    run: Path = args.run
    if not run.exists():
        raise DataError(f"{str(run)!r} does not exist; pass a run folder or its trajectory.csv.")
    has_noise = noise_path(run).exists()
    if not args.raw and not has_noise:
        raise DataError(
            f"{str(noise_path(run))!r} is missing: the run was recorded without gradient groups, "
            "so its gradient norm is the biased mini-batch one. Record the run with gradient "
            "groups (lossrate.torch.GradientGroups for micro-batches or the two-half mode, "
            "DDPGradients under DDP, in the training loop), or "
            "pass --raw to replay the raw rate."
        )
    rp = replay(
        run,
        closure=args.closure,
        debiased=not args.raw,
        sgd_noise=not args.no_sgd_noise,
        window=args.window,
    )
    text = [rp.describe()]
    data: dict[str, Any] = {"label": LABEL, "debiased": rp.debiased, "run": str(run)}
    for key in ("loss", "loss_noise", "loss_second", "loss_raw"):
        worst, last = rp.error(key)
        if not math.isnan(worst):
            data[key] = {"max_rel_error": worst, "final_rel_error": last}
    data["closure_ratio_in_bracket"] = rp.in_bracket
    if has_noise:
        try:
            ns = noise_scale(read_gradient_noise(run))
            text.append("  " + ns.describe())
            data["noise_scale"] = {
                "estimate": ns.estimate,
                "lower": ns.lower,
                "upper": ns.upper,
                "batch_size": ns.batch_size,
                "ratio": ns.ratio,
            }
        except DataError as exc:
            text.append(f"  gradient noise scale: not available ({exc})")
    if args.plot is not None:
        _plot(rp, args.plot)
        text.append(f"  figure: {args.plot}")
        data["plot"] = str(args.plot)
    return Outcome("\n".join(text), data)


def _plot(rp: Any, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(2, 1, figsize=(7, 6), sharex=True, height_ratios=[3, 1])
    ax.plot(rp.step, rp.observed, color="k", lw=2, label="observed (smoothed)")
    for key, what in (
        ("loss", "replay, debiased phi_hat"),
        ("loss_second", "+ measured 2nd-order term"),
        ("loss_noise", "+ SGD-noise term tr(P Sigma)/B"),
        ("loss_raw", "replay, raw phi_hat"),
    ):
        curve = getattr(rp, key)
        if curve is not None:
            ax.plot(rp.step, curve, lw=1.2, label=what)
    ax.set_yscale("log")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8)
    ax.set_title(f"replay: {rp.label}", fontsize=9)
    bx.plot(rp.step, rp.closure_ratio, lw=0.6, color="C0", label="c = R/g2")
    bx.plot(rp.step, rp.bracket_lo, lw=0.8, color="0.5", ls="--", label="bracket")
    bx.plot(rp.step, rp.bracket_hi, lw=0.8, color="0.5", ls="--")
    bx.set_xlabel("step")
    bx.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
