"""``auto``'s fits as independent tasks, run in worker processes when ``jobs`` > 1.

A fit of ``auto`` is some 50 independent least-squares fits (every candidate at every
backtest origin, on every earlier run, and on the whole prefix). With ``jobs`` > 1 they run
in a process pool (``fork`` where the platform has it, so the workers start in milliseconds
with lossrate already imported; ``forkserver`` from Python 3.12), the costliest first; the results are the serial ones
exactly, in the same order (every fit is deterministic given its seed). Where a pool cannot
be made (inside a daemonic worker, a platform without processes) the tasks run serially and
a note says so.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from .._errors import InvalidArgumentError

__all__ = ["check_jobs", "run_tasks"]

T = TypeVar("T")


def check_jobs(jobs: Any) -> int:
    """``jobs`` as a whole number >= 1 (0 or -1: every core this process may use)."""
    if isinstance(jobs, bool) or not isinstance(jobs, int | float) or int(jobs) != jobs:
        raise InvalidArgumentError(
            f"jobs must be a whole number (1: no worker processes; 0: every core), got {jobs!r}."
        )
    n = int(jobs)
    if n in (0, -1):
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
    if n < 1:
        raise InvalidArgumentError(
            f"jobs must be >= 1, or 0 for every core, got {jobs!r}; pass jobs=1 to run serially."
        )
    return n


def _context() -> Any:
    """``fork`` (workers start in milliseconds) up to Python 3.11; from 3.12 on, where
    forking a process that holds threads (BLAS pools) warns of deadlocks, ``forkserver``."""
    methods = multiprocessing.get_all_start_methods()
    for name in ("fork", "forkserver") if sys.version_info < (3, 12) else ("forkserver",):
        if name in methods:
            return multiprocessing.get_context(name)
    return multiprocessing.get_context(methods[0])


def run_tasks(
    fn: Callable[[Any], T], tasks: Sequence[Any], jobs: int, cost: Sequence[float]
) -> tuple[list[T], str]:
    """``[fn(t) for t in tasks]``, in ``jobs`` processes when that is more than 1 (the tasks
    of highest ``cost`` started first). Returns the results and a note ("" unless the pool
    could not be used)."""
    if jobs <= 1 or len(tasks) < 2:
        return [fn(t) for t in tasks], ""
    order = sorted(range(len(tasks)), key=lambda i: -cost[i])
    try:
        with ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), mp_context=_context()) as ex:
            done = list(ex.map(fn, [tasks[i] for i in order], chunksize=1))
    except (OSError, BrokenProcessPool, AssertionError, RuntimeError) as exc:
        # AssertionError: "daemonic processes are not allowed to have children"
        return [
            fn(t) for t in tasks
        ], f"the fits ran in one process ({exc.__class__.__name__}: {exc})"
    out: list[Any] = [None] * len(tasks)
    for i, r in zip(order, done):
        out[i] = r
    return out, ""
