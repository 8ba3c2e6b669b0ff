"""ode_relax on long lr decays: the prefix protocol on the mpl curves, before / after.

Fits every model on the first k of a curve's steps (the whole schedule known) and scores
the relative error of the final loss |pred - obs| / obs at the curve's last step
(:func:`lossrate.evaluate.evaluate`, prefix protocol). Groups:

* ``cosine``: the six cosine curves (25M/100M/400M x cosine_24000, cosine_72000) at
  k = 0.1, 0.25, 0.5 -- the prefix holds the start of a decay that spans the run;
* ``wsd-in``: wsd_20000_24000 and wsdld_20000_24000 cut inside their decay (k = 0.88, 0.92;
  the decay starts at step 20000 of 24000);
* guards: the constant-lr curves (k = 0.25) and wsd / wsdld / wsdcon_* at k = 0.25.

Models: ``ode_relax`` as it stood before (``ode_relax_old``, a frozen copy below: the drop
saturating everywhere, L_inf + x_gf exp(-B D / x_gf)), ``ode_relax`` now (the drop additive,
L_gf - B D, bent only near the floor), and the peers ``multipower``, ``momentum``,
``power_S`` fitted by the same engine with their recipe (Huber on raw log residuals,
delta = 1e-3). Prints the median and the p90 (numpy's linear interpolation: with 6 curves,
halfway between the two worst) of the final-loss error per group, k and model. About 9 min
on 2 cores.

Usage: python benchmarks/long_decay.py [--jobs N] [--models ode_relax,multipower]
[--csv FILE] [--groups cosine,wsd-in,...]
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any, ClassVar  # noqa: E402

import numpy as np  # noqa: E402

from lossrate.evaluate import EvalRow, evaluate  # noqa: E402
from lossrate.fitting.ode_relax import ODERelax  # noqa: E402
from lossrate.readers.mpl import MPL_SIZES, load_mpl  # noqa: E402

PEER_RECIPE = {"loss": "huber", "f_scale": 1e-3, "weights": "none"}
PEERS = ("multipower", "momentum", "power_S")

#: (group, curve names, prefix fractions)
CASES: tuple[tuple[str, tuple[str, ...], tuple[float, ...]], ...] = (
    ("cosine", ("cosine_24000", "cosine_72000"), (0.1, 0.25, 0.5)),
    ("wsd-in", ("wsd_20000_24000", "wsdld_20000_24000"), (0.88, 0.92)),
    ("constant", ("constant_24000", "constant_72000"), (0.25,)),
    (
        "wsd-0.25",
        ("wsd_20000_24000", "wsdld_20000_24000", "wsdcon_3", "wsdcon_9", "wsdcon_18"),
        (0.25,),
    ),
)


@dataclass(frozen=True)
class ODERelaxOld(ODERelax):
    """ode_relax before: L = L_inf + x_gf exp(-B D / x_gf). Its parameters (with today's
    bound on B), guesses and settings are ode_relax's; only the bend h(u) = e^-u is the old
    one."""

    name: ClassVar[str] = "ode_relax_old"

    def bend(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keep = np.exp(-u)  # the drop saturating everywhere: h(u) = e^-u
        return keep, -keep

    def describe(self) -> str:
        return "ode_relax_old (drop saturating everywhere: L_inf + x_gf exp(-B D / x_gf))"


def models(only: Sequence[str]) -> list[Any]:
    out: list[Any] = [("ode_relax_old", ODERelaxOld(), {}), "ode_relax"]
    out += [(p, p, PEER_RECIPE) for p in PEERS]
    return [m for m in out if not only or (m if isinstance(m, str) else m[0]) in only]


def _one(task: tuple[str, str, str, tuple[float, ...], tuple[str, ...]]) -> list[EvalRow]:
    group, size, name, ks, only = task
    traj, sch = load_mpl(None, size, name)
    rows = evaluate({f"{size}/{name}": (traj, sch)}, models(only), fractions=ks).rows
    print(f"  done {group} {size}/{name}", file=sys.stderr, flush=True)
    return [EvalRow(**{**r.__dict__, "group": group}) for r in rows]


def table(rows: list[EvalRow], labels: Sequence[str]) -> str:
    lines = [
        "final-loss relative error |pred - obs| / obs at the last step (%): median / p90 "
        "(n curves; failed fits in brackets)"
    ]
    head = f"{'group':<10}{'k':>6}{'n':>4}" + "".join(f"{m:>18}" for m in labels)
    lines.append(head)
    keys = list(dict.fromkeys((r.group, r.k) for r in rows))
    for g, k in keys:
        sub = [r for r in rows if r.group == g and r.k == k]
        n = len({r.run for r in sub})
        cells = []
        for m in labels:
            v = np.array([r.final_rel_err for r in sub if r.model == m])
            fails = sum(not r.fit_ok for r in sub if r.model == m)
            if not v.size or not np.isfinite(v).any():
                cells.append("-")
                continue
            med = float(np.nanmedian(v))
            p90 = float(np.nanpercentile(v, 90))
            cells.append(f"{100 * med:.2f} / {100 * p90:.2f}" + (f" ({fails})" if fails else ""))
        lines.append(f"{g:<10}{k:>6.2f}{n:>4}" + "".join(f"{c:>18}" for c in cells))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--models", default="", help="comma-separated model labels to run only")
    ap.add_argument("--groups", default="", help="comma-separated groups to run only")
    ap.add_argument("--sizes", default="", help="comma-separated sizes (default all)")
    ap.add_argument("--csv", default=None, help="also write every row to this CSV file")
    args = ap.parse_args()
    only = tuple(m for m in args.models.split(",") if m)
    groups = tuple(g for g in args.groups.split(",") if g)
    sizes = tuple(s for s in args.sizes.split(",") if s) or MPL_SIZES
    tasks = [
        (g, size, name, ks, only)
        for g, names, ks in CASES
        if not groups or g in groups
        for size in sizes
        for name in names
    ]
    # the longest curves first, so the pool ends together
    tasks.sort(key=lambda t: ("72000" not in t[2], t[0] != "cosine"))
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as ex:
        rows = [r for part in ex.map(_one, tasks) for r in part]
    labels = [m if isinstance(m, str) else m[0] for m in models(only)]
    print(table(rows, labels))
    print(f"\n{len(rows)} fits in {time.perf_counter() - t0:.0f} s on {args.jobs} workers")
    if args.csv:
        import csv

        with open(args.csv, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0].__dict__))
            w.writeheader()
            for r in rows:
                w.writerow(r.__dict__)


if __name__ == "__main__":
    main()
