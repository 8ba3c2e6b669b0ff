"""The Ray executor of :func:`lossrate.experiments.sweep_exec.run_sweep` (imports Ray).

Each run is one task (one CPU, and ``gpus`` GPUs) calling :func:`~lossrate.experiments.sweep_exec.train_run`,
which resumes from the run's checkpoint; Ray re-runs a task whose worker died or that raised
up to ``retries`` times (``max_retries`` with ``retry_exceptions``), so a retry continues
where the failed try stopped. Local Ray is started (and shut down) here; a cluster is joined.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .._ray import ray_session
from .sweep import SweepRun
from .sweep_exec import RunOutcome, _error_text, train_run


def run_on_ray(
    todo: Sequence[SweepRun],
    out: Path,
    *,
    retries: int,
    address: str | None,
    workers: int | None,
    device: str,
    threads: int,
    progress: bool,
    say: Callable[[str], None],
    gpus: float = 0.0,
) -> dict[str, RunOutcome]:
    from tqdm.auto import tqdm

    with ray_session(address, workers, say, f"{len(todo)} runs") as ray:
        task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=retries, retry_exceptions=True)(
            train_run
        )
        t0 = time.perf_counter()
        refs = {task.remote(run.config, str(out / run.name), device, threads): run for run in todo}
        results: dict[str, RunOutcome] = {}
        bar = tqdm(total=len(refs), desc="sweep", unit="run", disable=not progress, file=sys.stderr)
        pending = list(refs)
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                for ref in ready:
                    run = refs[ref]
                    try:
                        _, seconds = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        cause = getattr(exc, "cause", None)
                        results[run.name] = RunOutcome(
                            run.name, out / run.name, "failed", retries + 1,
                            time.perf_counter() - t0, _error_text(cause or exc),
                        )  # fmt: skip
                    else:
                        results[run.name] = RunOutcome(run.name, out / run.name, "done", 1, seconds)
                    bar.set_postfix_str(run.name, refresh=False)
                    bar.update(1)
        finally:
            bar.close()
            for ref in pending:
                ray.cancel(ref, force=True)
    return results
