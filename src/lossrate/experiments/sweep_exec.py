"""Run the runs of a sweep, one after another or as Ray tasks, each into ``OUT/<run name>/``.

Every run is trained by :func:`lossrate.experiments.runner.run_experiment` with
``resume=True``, so a run that was cut short (a crash, a killed worker, Ctrl-C) continues
from its checkpoint and its trajectory has no duplicated or missing rows. When a run is
complete its folder gets the marker :data:`DONE_NAME`; ``resume`` skips the runs that have
one. A run that raises is tried again up to ``retries`` more times (resuming each time);
one that still fails is reported in :class:`SweepResult` and the others carry on.

Ray (``pip install 'lossrate[ray]'``) is imported only here, and only when ``executor`` is
``"ray"`` or ``"auto"`` with Ray installed: locally (``ray.init`` with ``workers`` CPUs) or on
the cluster at ``address`` / ``$RAY_ADDRESS``. Each run is one task needing one CPU; its
folder is written by the worker, so on a multi-node cluster ``out`` must be on a file system
every node sees (the path is sent as given, made absolute).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .._errors import InvalidArgumentError
from ..prior._prior import SWEEP_DONE, SWEEP_SUMMARY
from ..trajectory import atomic_write
from .config import ExperimentConfig
from .sweep import Sweep, SweepRun

__all__ = ["DONE_NAME", "RAY_HINT", "RunOutcome", "SweepResult", "ray_available", "run_sweep"]

#: the marker of a complete run (the name benchmarks/make_sweep.py has always used)
DONE_NAME = SWEEP_DONE
#: the summary of the last execution, in OUT (written when it starts, every run "pending"
#: but the complete ones, so a prior read from OUT knows it is a sweep's folder even before
#: the first run finishes; rewritten with the outcomes at the end)
SUMMARY_NAME = SWEEP_SUMMARY
RAY_HINT = "pip install 'lossrate[ray]'"


@dataclass(frozen=True)
class RunOutcome:
    """What became of one run: ``done`` (trained now), ``skipped`` (complete before) or
    ``failed`` (``error`` says why, after ``attempts`` tries); ``pending`` in the summary
    written while the sweep runs."""

    name: str
    run_dir: Path
    status: str
    attempts: int = 0
    seconds: float = 0.0
    error: str = ""


@dataclass(frozen=True)
class SweepResult:
    """The outcome of every run, in the sweep's order, and the executor that ran them."""

    out: Path
    outcomes: tuple[RunOutcome, ...]
    executor: str

    @property
    def failed(self) -> list[RunOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    def to_dict(self) -> dict[str, object]:
        return {
            "out": str(self.out),
            "executor": self.executor,
            "runs": [
                {
                    "name": o.name,
                    "run_dir": str(o.run_dir),
                    "status": o.status,
                    "attempts": o.attempts,
                    "seconds": round(o.seconds, 3),
                    "error": o.error,
                }
                for o in self.outcomes
            ],
        }


def ray_available() -> bool:
    """True when Ray can be imported (without importing it)."""
    return importlib.util.find_spec("ray") is not None


def is_done(run_dir: Path) -> bool:
    return (Path(run_dir) / DONE_NAME).is_file()


def train_run(
    config: ExperimentConfig, run_dir: str, device: str = "cpu", threads: int = 1
) -> tuple[int, float]:
    """Train (or resume) one run into ``run_dir`` and mark it done; returns (rows, seconds).

    Module-level so that Ray can ship it to a worker by reference."""
    import torch

    from .runner import run_experiment

    _arm_test_kill(config.name, Path(run_dir))
    t0 = time.perf_counter()
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        traj = run_experiment(config, run_dir, resume=True, device=device, progress=False)
    finally:
        torch.set_num_threads(before)
    if traj.n != config.train.steps:  # pragma: no cover - the runner always finishes or raises
        raise RuntimeError(f"run {config.name!r} ended with {traj.n} of {config.train.steps} rows")
    seconds = time.perf_counter() - t0
    atomic_write(
        Path(run_dir) / DONE_NAME,
        lambda f: f.write(json.dumps({"rows": traj.n, "seconds": round(seconds, 3)}) + "\n"),
    )
    return traj.n, seconds


def _arm_test_kill(name: str, run_dir: Path) -> None:
    """Test hook: ``LOSSRATE_SWEEP_KILL_ONCE=RUN:ROWS:MARKER`` SIGKILLs the process training
    run ``RUN`` once its trajectory holds ``ROWS`` lines, the first time only (``MARKER`` is
    created then), as a cluster node or an out-of-memory kill would."""
    spec = os.environ.get("LOSSRATE_SWEEP_KILL_ONCE", "")
    target, _, rest = spec.partition(":")
    rows, _, marker = rest.partition(":")
    if not spec or target != name or not marker or Path(marker).exists():
        return
    Path(marker).write_text(f"{os.getpid()}\n")

    def watch() -> None:  # pragma: no cover - it ends with the process
        path = run_dir / "trajectory.csv"
        while True:
            if path.is_file() and path.read_text().count("\n") >= int(rows):
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(0.002)

    threading.Thread(target=watch, daemon=True).start()


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:500]


def run_sweep(
    sweep: Sweep,
    out: str | Path,
    *,
    resume: bool = False,
    retries: int = 1,
    executor: str = "auto",
    address: str | None = None,
    workers: int | None = None,
    device: str = "cpu",
    threads: int = 1,
    gpus_per_run: float | None = None,
    progress: bool = True,
    notice: Callable[[str], None] | None = None,
) -> SweepResult:
    """Run every run of ``sweep`` into ``out/<run name>/``.

    Args:
        sweep: a loaded :class:`~lossrate.experiments.sweep.Sweep`.
        out: the sweep's folder (created); each run gets a subfolder.
        resume: skip complete runs and continue the others from their checkpoints. Without
            it, a folder that already holds any run of the sweep is an error.
        retries: further tries of a run that fails (each resumes from its checkpoint).
        executor: "serial", "ray", or "auto" (Ray when installed, else serial).
        address: the Ray cluster to join (default: ``$RAY_ADDRESS``, else a local Ray).
        workers: CPUs of a local Ray (default: all of the machine's).
        device: torch device of every run ("cpu", "cuda", "auto").
        threads: torch CPU threads per run (0: torch's default).
        gpus_per_run: GPUs Ray reserves for each run (default: 1 when ``device`` names
            cuda, else 0; 0.5 puts two runs on one GPU). The serial executor ignores it.
        progress: a progress bar over the runs (stderr).
        notice: where messages go (default: stderr).

    Returns:
        A :class:`SweepResult` (also written to ``out/sweep.json``).
    """
    say = notice or (lambda text: print(f"lossrate: {text}", file=sys.stderr))
    if executor not in ("auto", "serial", "ray"):
        raise InvalidArgumentError(
            f"executor={executor!r} is not known; choose 'auto', 'serial' or 'ray'."
        )
    if gpus_per_run is not None and not 0 <= gpus_per_run < float("inf"):
        raise InvalidArgumentError(f"gpus_per_run={gpus_per_run!r}: give a number >= 0.")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise InvalidArgumentError(f"retries={retries!r}: give a whole number >= 0.")
    out = Path(out).absolute()
    if out.exists() and not out.is_dir():
        raise InvalidArgumentError(f"out {str(out)!r} is a file; name a folder for the sweep.")
    plan = sweep.plan()
    started = [r.name for r in plan if (out / r.name).exists() and any((out / r.name).iterdir())]
    if started and not resume:
        raise InvalidArgumentError(
            f"{str(out)!r} already holds {len(started)} run(s) of a sweep (e.g. {started[0]!r}); "
            "continue it with resume=True (`--resume`) or choose another output folder.",
            cli=f"{str(out)!r} already holds {len(started)} run(s) of a sweep (e.g. "
            f"{started[0]!r}); continue it with --resume or choose another --out.",
        )
    out.mkdir(parents=True, exist_ok=True)
    todo = [r for r in plan if not is_done(out / r.name)]
    skipped = {r.name: RunOutcome(r.name, out / r.name, "skipped") for r in plan if r not in todo}
    if skipped:
        say(f"{len(skipped)} of {len(plan)} runs are complete; running the other {len(todo)}.")
    running = SweepResult(
        out,
        tuple(skipped.get(r.name) or RunOutcome(r.name, out / r.name, "pending") for r in plan),
        "pending",
    )
    atomic_write(out / SUMMARY_NAME, lambda f: json.dump(running.to_dict(), f, indent=2))
    use_ray = executor == "ray" or (executor == "auto" and ray_available())
    if use_ray and not ray_available():
        say(f"Ray is not installed: running the {len(todo)} runs one after another ({RAY_HINT} to "
            "run them in parallel or on a cluster).")  # fmt: skip
        use_ray = False
    if use_ray:
        from ._sweep_ray import run_on_ray

        done = run_on_ray(
            todo, out, retries=retries, address=address, workers=workers, device=device,
            threads=threads, progress=progress, say=say,
            gpus=gpus_per_run if gpus_per_run is not None else float(device.startswith("cuda")),
        )  # fmt: skip
    else:
        done = _run_serial(todo, out, retries, device, threads, progress, say)
    result = SweepResult(
        out,
        tuple(skipped.get(r.name) or done[r.name] for r in plan),
        "ray" if use_ray else "serial",
    )
    atomic_write(out / SUMMARY_NAME, lambda f: json.dump(result.to_dict(), f, indent=2))
    return result


def _run_serial(
    todo: Sequence[SweepRun],
    out: Path,
    retries: int,
    device: str,
    threads: int,
    progress: bool,
    say: Callable[[str], None],
) -> dict[str, RunOutcome]:
    from tqdm.auto import tqdm

    results: dict[str, RunOutcome] = {}
    bar = tqdm(todo, desc="sweep", unit="run", disable=not progress, file=sys.stderr)
    for run in bar:
        bar.set_postfix_str(run.name, refresh=False)
        t0 = time.perf_counter()
        error = ""
        for attempt in range(1, retries + 2):
            try:
                train_run(run.config, str(out / run.name), device, threads)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:  # a failing run must not stop the others
                error = _error_text(exc)
                if os.environ.get("LOSSRATE_SWEEP_DEBUG"):
                    traceback.print_exc()
                if attempt <= retries:
                    say(
                        f"run {run.name} failed (try {attempt} of {retries + 1}): {error}; retrying"
                    )
                continue
            results[run.name] = RunOutcome(
                run.name, out / run.name, "done", attempt, time.perf_counter() - t0
            )
            break
        else:
            results[run.name] = RunOutcome(
                run.name, out / run.name, "failed", retries + 1, time.perf_counter() - t0, error
            )
    bar.close()
    return results
