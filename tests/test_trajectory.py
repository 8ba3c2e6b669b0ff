"""Trajectory: construction, intrinsic time, validation errors and lossless IO."""

from __future__ import annotations

import numpy as np
import pytest

from lossrate import DataError, InvalidArgumentError, RunMeta, Schedule, Trajectory
from lossrate.trajectory import intrinsic_time


def _traj(n: int = 50, **kw: object) -> Trajectory:
    rng = np.random.default_rng(0)
    loss = 2.0 * np.exp(-np.linspace(0, 3, n)) + 0.1
    cols = dict(
        loss_std=rng.uniform(0.1, 1.0, n),
        residual_sq=rng.uniform(0.1, 1.0, n),
        wall_s=rng.uniform(0.01, 0.02, n),
    )
    cols.update(kw)
    meta = RunMeta(loss="ce", classes=10, optimizer="sgd", schedule="cosine", extra={"seed": 3})
    return Trajectory.from_arrays(loss, lr=Schedule.cosine(0.1, n).lr, meta=meta, **cols)


def test_intrinsic_time_is_sum_of_previous_learning_rates() -> None:
    lr = np.array([0.1, 0.2, 0.3, 0.4])
    tr = Trajectory.from_arrays([3.0, 2.0, 1.0, 0.5], lr=lr)
    np.testing.assert_allclose(tr.t, [0.0, 0.1, 0.3, 0.6])
    assert tr.meta.time_unit == "intrinsic"


def test_sparse_logging_matches_schedule_for_linear_segments() -> None:
    sched = Schedule.make("linear", peak=1.0, final=0.0, n_steps=1001)
    steps = np.arange(0, 1001, 50)
    t = intrinsic_time(steps.astype(float), sched.at(steps))
    np.testing.assert_allclose(t, sched.S(steps), rtol=1e-12, atol=1e-12)


def test_without_lr_time_is_step_and_marked() -> None:
    tr = Trajectory.from_arrays([3.0, 2.0, 1.5], step=[10, 20, 30])
    np.testing.assert_array_equal(tr.t, [0.0, 10.0, 20.0])
    assert tr.meta.time_unit == "step"


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_round_trip_is_lossless(tmp_path, suffix: str) -> None:
    tr = _traj(test_loss=np.where(np.arange(50) % 10 == 0, 1.5, np.nan))
    path = tr.write(tmp_path / f"run{suffix}")
    back = Trajectory.read(path)
    assert back.meta == tr.meta
    assert set(back.columns()) == set(tr.columns())
    for name, arr in tr.columns().items():
        np.testing.assert_array_equal(getattr(back, name), arr)  # bit-exact, NaN included


def test_write_never_leaves_partial_file(tmp_path, monkeypatch) -> None:
    path = tmp_path / "run.csv"
    _traj().write(path)
    good = path.read_text()

    def boom(self: Trajectory) -> str:
        raise RuntimeError("disk full")

    monkeypatch.setattr(Trajectory, "_csv_text", boom)
    with pytest.raises(RuntimeError):
        _traj(10).write(path)
    assert path.read_text() == good
    assert [p.name for p in tmp_path.iterdir()] == ["run.csv"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(loss=[]), "empty"),
        (dict(loss=[1.0, np.nan]), "'loss' holds nan"),
        (dict(loss=[1.0, np.inf]), "'loss' holds inf"),
        (dict(loss=[1.0, -0.5]), "negative"),
        (dict(loss=[1.0, 0.5], step=[0, 0]), "strictly increasing"),
        (dict(loss=[1.0, 0.5], step=[3, 1]), "strictly increasing"),
        (dict(loss=[1.0, 0.5], step=[0, 1, 2]), "has 3 values"),
        (dict(loss=[1.0, 0.5], t=[0.5, 0.0]), "'t' .* must not decrease"),
        (dict(loss=[1.0, 0.5], lr=[0.1, np.nan]), "'lr' must be finite"),
        (dict(loss=[1.0, 0.5], bogus=[1, 2]), "unknown column"),
        (dict(loss=[1.0, 0.5], loss_std=[0.1, np.inf]), "infinite"),
        (dict(loss=[1.0, 0.5], step=[0.5, 1]), "whole numbers"),
        (dict(loss=[[1.0, 0.5]]), "one-dimensional"),
        (dict(loss=["a", "b"]), "must hold numbers"),
    ],
)
def test_validation_errors_are_specific(kwargs: dict, match: str) -> None:
    with pytest.raises(DataError, match=match):
        Trajectory.from_arrays(**kwargs)


def test_sort_keeps_last_duplicate() -> None:
    tr = Trajectory.from_arrays([1.0, 2.0, 0.5, 0.7], step=[2, 0, 1, 2], sort=True)
    np.testing.assert_array_equal(tr.step, [0, 1, 2])
    np.testing.assert_array_equal(tr.loss, [2.0, 0.5, 0.7])


def test_optional_nan_is_allowed_but_required_nan_is_not() -> None:
    tr = Trajectory.from_arrays([1.0, 0.5], loss_std=[np.nan, 0.2])
    assert tr.has("loss_std") and not tr.has("grad_sq")


def test_prefix_cuts_by_step() -> None:
    tr = _traj(101)
    assert len(tr.prefix(0.3)) == 31
    with pytest.raises(InvalidArgumentError, match="fraction"):
        tr.prefix(0)


def test_read_rejects_foreign_and_broken_files(tmp_path) -> None:
    p = tmp_path / "x.csv"
    p.write_text("step,loss,accuracy\n0,1.0,0.5\n")
    with pytest.raises(DataError, match="unknown column"):
        Trajectory.read(p)
    p.write_text("step,t,loss\n0,0,1.0\n1,0.1\n")
    with pytest.raises(DataError, match="row 2 has 2 fields"):
        Trajectory.read(p)
    p.write_bytes(b"\x00\xff\xfe garbage")
    with pytest.raises(DataError):
        Trajectory.read(p)
    with pytest.raises(DataError, match="does not exist"):
        Trajectory.read(tmp_path / "missing.csv")
    with pytest.raises(InvalidArgumentError, match="suffix"):
        _traj().write(tmp_path / "run.txt")


def test_drop_nonfinite_on_read(tmp_path) -> None:
    p = tmp_path / "run.csv"
    _traj(5).write(p)
    lines = p.read_text().splitlines()
    cells = lines[-1].split(",")
    header = lines[1].split(",")
    cells[header.index("loss")] = "nan"
    p.write_text("\n".join([*lines[:-1], ",".join(cells)]) + "\n")
    with pytest.raises(DataError, match="drop_nonfinite"):
        Trajectory.read(p)
    assert len(Trajectory.read(p, drop_nonfinite=True)) == 4


def test_metadata_unknown_key_is_an_error() -> None:
    with pytest.raises(DataError, match="unknown metadata key"):
        RunMeta.from_dict({"loss": "ce", "colour": "red"})


def test_a_step_with_zero_lr_is_kept_and_round_trips(tmp_path) -> None:
    """A warmup from lr = 0 (Hugging Face's linear warmup) leaves t unchanged for a step."""
    t = Trajectory.from_arrays([2.3, 2.3, 2.0, 1.5], lr=[0.0, 0.05, 0.1, 0.1])
    np.testing.assert_allclose(t.t, [0.0, 0.0, 0.05, 0.15])
    back = Trajectory.read(t.write(tmp_path / "warm.csv"))
    np.testing.assert_array_equal(back.t, t.t)
    np.testing.assert_array_equal(back.loss, t.loss)
