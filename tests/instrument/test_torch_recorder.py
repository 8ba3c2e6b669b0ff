"""Recorder: the Trajectory CSV format, durability, resume and the rules for bad steps."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from lossrate import DataError, InvalidArgumentError, LossrateError, RunMeta, Trajectory
from lossrate.torch import BatchStats, GradStats, NonFiniteLossError, Recorder
from lossrate.torch.recorder import COLUMNS, FILENAME

META = RunMeta(loss="ce", classes=10, optimizer="sgd", name="unit")


def _batch(k: int, loss: float | None = None) -> BatchStats:
    return BatchStats(
        loss=2.0 / (k + 1) if loss is None else loss,
        loss_std=0.1,
        residual_sq=0.5,
        alpha_eff=1.5,
        batch_size=32,
    )


def _lr(k: int) -> float:
    return 0.1 * (1 + k % 3)


def _record(rec: Recorder, steps, **kw) -> None:
    for k in steps:
        rec.log(step=k, lr=_lr(k), batch=_batch(k), grad=GradStats(1.0 + k, 2.0 + k), **kw)


def test_rows_read_back_as_a_trajectory(tmp_path):
    with Recorder(tmp_path, meta=META) as rec:
        _record(rec, range(6), wall_s=0.5, energy_j=3.0)
        rec.log(step=6, lr=0.1, loss=0.25, test_loss=0.3, k_sq=7.0)
        assert rec.last_step == 6
    traj = Trajectory.read(tmp_path / FILENAME)
    assert traj.meta == META
    np.testing.assert_array_equal(traj.step, np.arange(7))
    lrs = [_lr(k) for k in range(6)] + [0.1]
    np.testing.assert_allclose(traj.t, np.concatenate([[0.0], np.cumsum(lrs[:-1])]), rtol=1e-15)
    np.testing.assert_allclose(traj.lr, lrs)
    np.testing.assert_allclose(traj.loss, [2.0 / (k + 1) for k in range(6)] + [0.25])
    np.testing.assert_allclose(traj.pgrad_sq[:6], 2.0 + np.arange(6))
    assert np.isnan(traj.loss_std[6]) and traj.test_loss[6] == 0.3 and traj.k_sq[6] == 7.0
    assert np.isnan(traj.test_loss[:6]).all() and (traj.energy_j[:6] == 3.0).all()
    assert list(traj.columns()) == list(COLUMNS)


def test_the_file_is_byte_identical_to_trajectory_write(tmp_path):
    with Recorder(tmp_path / "run", meta=META) as rec:
        _record(rec, range(5), wall_s=0.01)
    path = tmp_path / "run" / FILENAME
    Trajectory.read(path).write(tmp_path / "again.csv")
    assert (tmp_path / "again.csv").read_bytes() == path.read_bytes()


def test_wall_time_defaults_to_the_time_between_logs(tmp_path):
    with Recorder(tmp_path) as rec:
        rec.log(step=0, lr=0.1, loss=1.0)
        time.sleep(0.05)
        rec.log(step=1, lr=0.1, loss=1.0)
    wall = Trajectory.read(tmp_path / FILENAME).wall_s
    assert wall[1] >= 0.05


def test_an_energy_meter_is_read_at_every_log(tmp_path):
    class Meter:
        source = "fake"

        def __init__(self):
            self.calls = 0

        def step_energy(self):
            self.calls += 1
            return 2.5 * self.calls

    meter = Meter()
    with Recorder(tmp_path, energy=meter) as rec:
        _record(rec, range(3))
        rec.log(step=3, lr=0.1, loss=1.0, energy_j=0.5)  # an explicit value wins
    np.testing.assert_allclose(Trajectory.read(tmp_path / FILENAME).energy_j, [2.5, 5.0, 7.5, 0.5])
    with pytest.raises(InvalidArgumentError, match="step_energy"):
        Recorder(tmp_path / "other", energy=object())


@pytest.mark.parametrize(
    ("step", "match"),
    [
        (2, "already recorded"),
        (1, "already recorded"),
        (4, "gap"),
        (2.5, "integer"),
        ("x", "integer"),
    ],
)
def test_duplicates_and_gaps_raise_and_write_nothing(tmp_path, step, match):
    with Recorder(tmp_path) as rec:
        _record(rec, range(3))
        before = (tmp_path / FILENAME).read_bytes()
        with pytest.raises(InvalidArgumentError, match=match):
            rec.log(step=step, lr=0.1, loss=1.0)
        assert (tmp_path / FILENAME).read_bytes() == before
        rec.log(step=3, lr=0.1, loss=1.0)  # the recorder is still usable


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lr": -0.1, "loss": 1.0}, "lr must be finite"),
        ({"lr": float("nan"), "loss": 1.0}, "lr must be finite"),
        ({"lr": 0.1, "loss": -1.0}, "loss must be >= 0"),
        ({"lr": 0.1}, "exactly one"),
        ({"lr": 0.1, "loss": 1.0, "batch": _batch(0)}, "exactly one"),
        ({"lr": 0.1, "batch": {"loss": 1.0}}, "BatchStats"),
        ({"lr": 0.1, "loss": 1.0, "grad": (1.0, 2.0)}, "GradStats"),
        ({"lr": 0.1, "loss": 1.0, "wall_s": -1.0}, "wall_s must be >= 0"),
        ({"lr": 0.1, "loss": 1.0, "test_loss": "high"}, "test_loss must be a number"),
    ],
)
def test_bad_values_raise_before_writing(tmp_path, kwargs, match):
    with Recorder(tmp_path) as rec:
        before = (tmp_path / FILENAME).read_bytes()
        with pytest.raises(InvalidArgumentError, match=match):
            rec.log(step=0, **kwargs)
        assert (tmp_path / FILENAME).read_bytes() == before
        assert rec.last_step is None


def test_infinite_optional_values_are_recorded_as_nan(tmp_path):
    with Recorder(tmp_path) as rec:
        rec.log(step=0, lr=0.1, loss=1.0, grad=GradStats(float("inf"), float("nan")))
    traj = Trajectory.read(tmp_path / FILENAME)
    assert np.isnan(traj.grad_sq[0]) and np.isnan(traj.pgrad_sq[0])


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_loss_is_recorded_flushed_and_raised(tmp_path, monkeypatch, bad):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    rec = Recorder(tmp_path, flush_every=1000)
    _record(rec, range(3))
    n_sync = len(synced)
    with pytest.raises(NonFiniteLossError, match=r"step 3 .*recorded") as info:
        rec.log(step=3, lr=0.1, batch=_batch(3, loss=bad))
    assert isinstance(info.value, LossrateError)
    assert len(synced) == n_sync + 1  # flushed before raising
    lines = (tmp_path / FILENAME).read_text().splitlines()
    assert lines[-1].split(",")[2] == ("nan" if math.isnan(bad) else "inf")
    with pytest.raises(DataError, match="drop_nonfinite"):
        Trajectory.read(tmp_path / FILENAME)
    assert Trajectory.read(tmp_path / FILENAME, drop_nonfinite=True).n == 3
    rec.close()


def test_rows_are_written_and_fsynced_every_n_rows(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    rec = Recorder(tmp_path, flush_every=4)
    assert len(synced) == 1  # the header, at creation

    def rows_on_disk():
        return len((tmp_path / FILENAME).read_text().splitlines()) - 2

    _record(rec, range(10))
    assert len(synced) == 1 + 2 and rows_on_disk() == 8
    rec.flush()
    assert len(synced) == 4 and rows_on_disk() == 10
    rec.flush()  # nothing new: no write, no fsync
    rec.log(step=10, lr=0.1, loss=1.0)
    rec.close()
    rec.close()
    assert len(synced) == 5 and rows_on_disk() == 11
    with pytest.raises(InvalidArgumentError, match="closed"):
        rec.log(step=11, lr=0.1, loss=1.0)


def test_an_existing_run_is_never_overwritten(tmp_path):
    with Recorder(tmp_path) as rec:
        _record(rec, range(2))
    before = (tmp_path / FILENAME).read_bytes()
    with pytest.raises(InvalidArgumentError, match="resume=True"):
        Recorder(tmp_path)
    assert (tmp_path / FILENAME).read_bytes() == before


def test_resume_continues_steps_and_intrinsic_time(tmp_path):
    with Recorder(tmp_path, meta=META) as rec:
        _record(rec, range(4))
    with Recorder(tmp_path, meta=META, resume=True) as rec:
        assert rec.last_step == 3
        with pytest.raises(InvalidArgumentError, match="continue at step 4"):
            rec.log(step=3, lr=0.1, loss=1.0)
        _record(rec, range(4, 8))
    with Recorder(tmp_path, resume=True) as rec:  # meta=None keeps the file's
        assert rec.meta == META
    traj = Trajectory.read(tmp_path / FILENAME)
    np.testing.assert_array_equal(traj.step, np.arange(8))
    expected_t = np.concatenate([[0.0], np.cumsum([_lr(k) for k in range(7)])])
    np.testing.assert_allclose(traj.t, expected_t, rtol=1e-14)


def test_resume_drops_a_torn_last_line(tmp_path):
    with Recorder(tmp_path, meta=META) as rec:
        _record(rec, range(5))
    path = tmp_path / FILENAME
    data = path.read_bytes()
    path.write_bytes(data[: data.rfind(b"\n", 0, len(data) - 1) + 7])  # half of step 4's line
    with Recorder(tmp_path, resume=True) as rec:
        assert rec.last_step == 3
        _record(rec, range(4, 6))
    traj = Trajectory.read(path)
    np.testing.assert_array_equal(traj.step, np.arange(6))


def test_resume_of_a_file_killed_while_writing_its_header(tmp_path):
    (tmp_path / FILENAME).write_text('# {"format": "lossrate-traj')
    with Recorder(tmp_path, meta=META, resume=True) as rec:
        assert rec.last_step is None
        _record(rec, range(2))
    assert Trajectory.read(tmp_path / FILENAME).n == 2


def test_resume_starts_a_missing_file(tmp_path):
    with Recorder(tmp_path / "new", resume=True) as rec:
        assert rec.last_step is None
        _record(rec, range(2))
    assert Trajectory.read(tmp_path / "new" / FILENAME).n == 2


def test_resume_errors(tmp_path):
    with Recorder(tmp_path, meta=META) as rec:
        _record(rec, range(2))
    with pytest.raises(InvalidArgumentError, match=r"\['classes'\]"):
        Recorder(
            tmp_path,
            meta=RunMeta(loss="ce", classes=100, optimizer="sgd", name="unit"),
            resume=True,
        )
    other = tmp_path / "other"
    other.mkdir()
    (other / FILENAME).write_text("step,t,loss\n0,0.0,1.0\n")
    with pytest.raises(DataError, match="not a recorder file"):
        Recorder(other, resume=True)
    bad = tmp_path / "bad"
    with Recorder(bad) as rec:
        _record(rec, range(2))
    with open(bad / FILENAME, "a") as f:
        f.write("2,0.3,oops\n")
    with pytest.raises(DataError, match="not a row of 14 numbers"):
        Recorder(bad, resume=True)


def test_resume_step_drops_rows_after_a_checkpoint(tmp_path):
    with Recorder(tmp_path, meta=META) as rec:
        _record(rec, range(10))
    with Recorder(tmp_path, resume=True, resume_step=6) as rec:
        assert rec.last_step == 5
        _record(rec, range(6, 8))
    traj = Trajectory.read(tmp_path / FILENAME)
    np.testing.assert_array_equal(traj.step, np.arange(8))
    assert traj.meta == META
    with Recorder(tmp_path, resume=True, resume_step=0) as rec:
        assert rec.last_step is None
    assert (tmp_path / FILENAME).read_text().count("\n") == 2


def test_resume_step_errors(tmp_path):
    with Recorder(tmp_path) as rec:
        _record(rec, range(3))
    with pytest.raises(DataError, match="steps are missing"):
        Recorder(tmp_path, resume=True, resume_step=5)
    with pytest.raises(InvalidArgumentError, match="needs resume=True"):
        Recorder(tmp_path / "x", resume_step=2)
    with pytest.raises(DataError, match="holds no rows"):
        Recorder(tmp_path / "empty", resume=True, resume_step=2)


def test_only_rank_zero_writes(tmp_path):
    rec = Recorder(tmp_path / "r1", rank=1)
    _record(rec, range(3))
    assert rec.last_step == 2
    with pytest.raises(InvalidArgumentError, match="gap"):
        rec.log(step=5, lr=0.1, loss=1.0)
    with pytest.raises(NonFiniteLossError):
        rec.log(step=3, lr=0.1, loss=float("nan"))
    rec.close()
    assert not (tmp_path / "r1").exists()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"flush_every": 0}, "flush_every"), ({"meta": {"loss": "ce"}}, "RunMeta")],
)
def test_bad_constructor_arguments(tmp_path, kwargs, match):
    with pytest.raises(InvalidArgumentError, match=match):
        Recorder(tmp_path, **kwargs)


_WRITER = textwrap.dedent(
    """
    import sys, time
    from lossrate import RunMeta
    from lossrate.torch import BatchStats, GradStats, Recorder
    run_dir, stop = sys.argv[1], int(sys.argv[2])
    rec = Recorder(run_dir, meta=RunMeta(loss="ce", classes=3), flush_every=7, resume=True)
    start = 0 if rec.last_step is None else rec.last_step + 1
    for k in range(start, stop):
        stats = BatchStats(1.0 / (k + 1), 0.1, 0.5, 1.2, 16)
        rec.log(step=k, lr=0.01 * (1 + k % 5), batch=stats, grad=GradStats(1.0, 2.0))
        print(k, flush=True)
        time.sleep(0.002)
    rec.close()
    print("done", flush=True)
    """
)


def test_kill_9_then_resume_in_a_real_process(tmp_path):
    """SIGKILL a writer mid-run, resume it to the end: no gap, no duplicate, exact t."""
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(run_dir), "100000"], stdout=subprocess.PIPE, text=True
    )
    for _ in range(40):  # let it log a few dozen steps
        proc.stdout.readline()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    killed_at = Trajectory.read(run_dir / FILENAME).n
    assert killed_at >= 35 and killed_at % 7 == 0  # whole flushes of 7 rows: nothing torn
    done = subprocess.run(
        [sys.executable, str(script), str(run_dir), str(killed_at + 60)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.splitlines()[0] == str(killed_at)  # continued right after the last step
    traj = Trajectory.read(run_dir / FILENAME)
    np.testing.assert_array_equal(traj.step, np.arange(killed_at + 60))
    lr = 0.01 * (1 + np.arange(killed_at + 60) % 5)
    np.testing.assert_allclose(traj.lr, lr)
    np.testing.assert_allclose(traj.t, np.concatenate([[0.0], np.cumsum(lr[:-1])]), rtol=1e-12)
