"""Training killed with SIGKILL and resumed, in real subprocesses, equals one uninterrupted run.

A child process (``_kill_target.py``) runs ``run_experiment(..., resume=True)`` on a small
minibatch Adam/cosine MLP regression. It is killed several times: twice by itself at the
two delicate points of a checkpoint (rows flushed but checkpoint not yet written; the
checkpoint's temporary file written but not renamed), then three times by this process
with SIGKILL at seeded random moments (once the trajectory file holds at least a random
number of rows, after a further random delay). After every kill the file on disk must be a
readable trajectory of steps 0..m-1 whose rows equal the first m rows of an uninterrupted
in-process run with the same seed, and the checkpoint must not run ahead of it. The run is
then finished, and its whole trajectory (every column except the timings ``wall_s`` and
``energy_j``, which legitimately differ between processes) and its final model and
optimizer states must equal the uninterrupted run's bit for bit (CPU, one torch thread).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lossrate import Trajectory  # noqa: E402
from lossrate.experiments import load_config, run_experiment  # noqa: E402
from lossrate.experiments.checkpoint import load_checkpoint  # noqa: E402
from lossrate.experiments.config import ExperimentConfig  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="needs POSIX SIGKILL"),
]

TARGET = Path(__file__).with_name("_kill_target.py")
STEPS = 80
CHECKPOINT_EVERY = 7
TIMING = ("wall_s", "energy_j")  # measured per process: the only columns allowed to differ
LAUNCH_TIMEOUT = 120.0  # seconds one child may take (startup on a loaded machine included)


def kill_config() -> ExperimentConfig:
    """100 samples in batches of 32 (an epoch is 3 batches, so the data order's generator,
    permutation and position all matter), Adam (moment buffers and step counts), a cosine
    schedule with warmup, test loss every 5 steps, K^2 every 9, checkpoints every 7 steps
    and a flush every 3 rows (so rows after the last checkpoint are often on disk)."""
    return load_config("teacher_student_gd").override(
        {
            "data.teacher.n_train": 100,
            "data.teacher.n_test": 50,
            "model.kind": "mlp",
            "model.width": 32,
            "model.depth": 2,
            "optim.name": "adam",
            "optim.lr": 0.01,
            "schedule.shape": "cosine",
            "schedule.warmup": 5,
            "train.steps": STEPS,
            "train.batch_size": 32,
            "train.eval_every": 5,
            "train.kernel_every": 9,
            "train.kernel_samples": 4,
            "train.checkpoint_every": CHECKPOINT_EVERY,
            "train.log_flush_every": 3,
        }
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Trajectory, Path]:
    """The config file and the uninterrupted reference run (in this process, one thread)."""
    base = tmp_path_factory.mktemp("kill")
    cfg = kill_config()
    config_path = base / "config.toml"
    config_path.write_text(cfg.to_toml(), encoding="utf-8")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        whole = run_experiment(cfg, base / "whole", device="cpu", progress=False)
    finally:
        torch.set_num_threads(before)
    assert whole.n == STEPS
    return config_path, whole, base / "whole"


def launch(config: Path, run_dir: Path, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, str(TARGET), str(config), str(run_dir), *extra],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )


def rows_on_disk(run_dir: Path) -> int:
    """Complete data lines in the trajectory file (0 when it does not exist yet)."""
    try:
        raw = (run_dir / "trajectory.csv").read_bytes()
    except FileNotFoundError:
        return 0
    return max(raw.count(b"\n") - 2, 0)


def wait(proc: subprocess.Popen[bytes], log: Path) -> int:
    try:
        return proc.wait(timeout=LAUNCH_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"the child ran past {LAUNCH_TIMEOUT} s:\n{log.read_text()[-3000:]}")


def same_rows(part: Trajectory, whole: Trajectory, what: str) -> None:
    """The rows of ``part`` equal the first ``part.n`` rows of ``whole``, timings aside."""
    assert np.array_equal(part.step, np.arange(part.n)), f"{what}: steps are not 0..{part.n - 1}"
    for col, values in part.columns().items():
        if col in TIMING:
            continue
        ref = getattr(whole, col)[: part.n]
        assert np.array_equal(values, ref, equal_nan=True), f"{what}: column {col} differs"


def check_after_kill(run_dir: Path, whole: Trajectory, what: str) -> int:
    """The state a kill leaves: a readable prefix of the reference run, and a checkpoint
    that does not run ahead of it. Returns the number of rows on disk."""
    part = Trajectory.read(run_dir / "trajectory.csv")
    same_rows(part, whole, what)
    ck = load_checkpoint(run_dir)
    assert ck is not None, f"{what}: no checkpoint"
    assert ck.step <= part.n, f"{what}: checkpoint at {ck.step} runs ahead of {part.n} rows"
    return part.n


def finish_and_compare(
    config: Path, run_dir: Path, whole: Trajectory, whole_dir: Path, log: Path
) -> None:
    proc = launch(config, run_dir, log)
    rc = wait(proc, log)
    assert rc == 0, f"the final resume failed (rc {rc}):\n{log.read_text()[-3000:]}"
    traj = Trajectory.read(run_dir / "trajectory.csv")
    assert traj.n == STEPS
    same_rows(traj, whole, "finished run")
    assert traj.meta == whole.meta
    a, b = load_checkpoint(run_dir), load_checkpoint(whole_dir)
    assert a is not None and b is not None and a.step == b.step == STEPS
    assert a.model.keys() == b.model.keys()
    for key in a.model:
        assert torch.equal(a.model[key], b.model[key]), f"parameter {key} differs"
    assert a.optimizer["param_groups"] == b.optimizer["param_groups"]
    for i, state in b.optimizer["state"].items():
        for key, value in state.items():
            assert torch.equal(a.optimizer["state"][i][key], value), f"Adam state {i}.{key}"
    assert torch.equal(a.order_state, b.order_state) and torch.equal(a.perm, b.perm)
    assert a.pos == b.pos


def test_sigkill_at_checkpoints_and_random_steps_then_resume_equals_uninterrupted_run(
    setup: tuple[Path, Trajectory, Path], tmp_path: Path
) -> None:
    config, whole, whole_dir = setup
    run_dir = tmp_path / "run"

    # 1, 2: at the two delicate points of the checkpoints at steps 14 and 28
    for n, (die, rows, ck_step) in enumerate([("flush:14", 14, 7), ("ckpt:28", 28, 21)], start=1):
        log = tmp_path / f"child{n}.log"
        rc = wait(launch(config, run_dir, log, "--die", die), log)
        assert rc == -signal.SIGKILL, f"kill {n} ({die}): rc {rc}\n{log.read_text()[-3000:]}"
        assert check_after_kill(run_dir, whole, f"kill {n} ({die})") == rows
        ck = load_checkpoint(run_dir)
        assert ck is not None and ck.step == ck_step, f"kill {n} ({die}): checkpoint {ck}"

    # 3..5: SIGKILL from outside at seeded random moments
    rng = random.Random(6)
    for n in range(3, 6):
        have = rows_on_disk(run_dir)
        target = min(have + rng.randint(2, 6), STEPS - 6)
        delay = rng.uniform(0.0, 0.03)  # up to two steps more
        log = tmp_path / f"child{n}.log"
        proc = launch(config, run_dir, log, "--sleep", "0.015")
        deadline = time.monotonic() + LAUNCH_TIMEOUT
        while rows_on_disk(run_dir) < target and proc.poll() is None:
            assert time.monotonic() < deadline, f"kill {n}: no progress to {target} rows"
            time.sleep(0.003)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        rc = wait(proc, log)
        assert rc == -signal.SIGKILL, f"kill {n}: rc {rc}\n{log.read_text()[-3000:]}"
        got = check_after_kill(run_dir, whole, f"kill {n} (>= {target} rows + {delay:.3f} s)")
        assert got >= target

    finish_and_compare(config, run_dir, whole, whole_dir, tmp_path / "final.log")


def test_sigkill_before_the_first_checkpoint_then_resume_equals_uninterrupted_run(
    setup: tuple[Path, Trajectory, Path], tmp_path: Path
) -> None:
    config, whole, whole_dir = setup
    run_dir = tmp_path / "run"
    log = tmp_path / "child.log"
    rc = wait(launch(config, run_dir, log, "--die", "step:5"), log)
    assert rc == -signal.SIGKILL, log.read_text()[-3000:]
    part = Trajectory.read(run_dir / "trajectory.csv")  # rows 0..2 (flushed every 3)
    assert part.n == 3 and load_checkpoint(run_dir) is None
    same_rows(part, whole, "kill at step 5")
    finish_and_compare(config, run_dir, whole, whole_dir, tmp_path / "final.log")
