"""read_csv: column recognition, merging, non-finite rows, lr gaps, and every refusal."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from lossrate import DataError, InvalidArgumentError, RunMeta
from lossrate.readers import read_csv
from lossrate.trajectory import intrinsic_time


def write(tmp_path: Path, text: str, name: str = "log.csv") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize(
    ("header", "step_name", "loss_name", "lr_name"),
    [
        ("step,loss,lr", "step", "loss", "lr"),
        ("global_step,train_loss,learning_rate", "global_step", "train_loss", "learning_rate"),
        ("iteration,training_loss,lr-Adam", "iteration", "training_loss", "lr-Adam"),
        (
            "trainer/global_step,train/loss,train/lr",
            "trainer/global_step",
            "train/loss",
            "train/lr",
        ),
        ("_step,Loss/train,LR", "_step", "Loss/train", "LR"),
        ("Step,run7 - train/loss,run7 - lr", "Step", "run7 - train/loss", "run7 - lr"),
    ],
)
def test_common_column_names_are_recognised(tmp_path, header, step_name, loss_name, lr_name):
    p = write(tmp_path, f"{header}\n0,2.0,0.1\n1,1.5,0.1\n2,1.2,0.05\n")
    traj = read_csv(p)
    np.testing.assert_array_equal(traj.step, [0, 1, 2])
    np.testing.assert_allclose(traj.loss, [2.0, 1.5, 1.2])
    np.testing.assert_allclose(traj.lr, [0.1, 0.1, 0.05])
    np.testing.assert_allclose(traj.t, intrinsic_time(np.array([0, 1, 2]), traj.lr))
    assert f"loss={loss_name}" in traj.meta.extra["source_columns"]
    assert f"step={step_name}" in traj.meta.extra["source_columns"]
    assert f"lr={lr_name}" in traj.meta.extra["source_columns"]
    assert traj.meta.name == "log"


def test_loss_std_wall_clock_and_other_trajectory_columns(tmp_path):
    p = write(
        tmp_path,
        "step,loss,loss_std,_runtime,batch_size,val_loss\n"
        "0,2.0,0.5,10.0,32,\n10,1.0,0.4,12.0,32,1.1\n20,0.5,0.3,15.0,32,\n",
    )
    traj = read_csv(p)
    np.testing.assert_allclose(traj.loss_std, [0.5, 0.4, 0.3])
    # cumulative clock -> seconds per optimizer step over each logging interval
    np.testing.assert_allclose(traj.wall_s, [np.nan, 0.2, 0.3])
    np.testing.assert_allclose(traj.batch_size, [32, 32, 32])
    np.testing.assert_allclose(traj.test_loss, [np.nan, 1.1, np.nan])
    assert traj.meta.time_unit == "step"  # no lr column


def test_explicit_mapping_overrides_and_none_disables(tmp_path):
    p = write(tmp_path, "it,obj,loss,lr\n0,5.0,9.0,0.1\n1,4.0,9.0,0.1\n")
    traj = read_csv(p, columns={"step": "it", "loss": "obj", "lr": None})
    np.testing.assert_allclose(traj.loss, [5.0, 4.0])
    assert traj.lr is None
    assert "loss" in traj.meta.extra["source_ignored"]
    assert "lr" in traj.meta.extra["source_ignored"]


def test_unmapped_columns_are_ignored_and_listed(tmp_path):
    p = write(tmp_path, "step,loss,epoch,notes\n0,1.0,0,hello\n1,0.5,0,world\n")
    traj = read_csv(p)
    assert traj.meta.extra["source_ignored"] == "epoch, notes"


def test_mapping_a_missing_column_lists_the_available_ones(tmp_path):
    p = write(tmp_path, "step,loss\n0,1.0\n")
    with pytest.raises(DataError, match=r"'nope'.*available: 'step', 'loss'"):
        read_csv(p, columns={"loss": "nope"})


def test_no_loss_column_names_the_fix(tmp_path):
    p = write(tmp_path, "step,accuracy\n0,0.1\n")
    with pytest.raises(DataError, match=r"no loss column.*columns=\{'loss'"):
        read_csv(p)


def test_ambiguous_columns_are_an_error_not_a_guess(tmp_path):
    p = write(tmp_path, "step,train/loss,train_loss\n0,1.0,2.0\n")
    with pytest.raises(DataError, match=r"several columns could be the 'loss'"):
        read_csv(p)
    assert read_csv(p, columns={"loss": "train_loss"}).loss[0] == 2.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"columns": {"los": "x"}}, "unknown role 'los'"),
        ({"columns": {"loss": 3}}, "must be a column name"),
        ({"columns": ["loss"]}, "must be a mapping"),
        ({"sep": ";;"}, "sep must be one character"),
        ({"dedupe": "first"}, "dedupe='first' is not known"),
        ({"max_bytes": 0}, "max_bytes must be a positive int"),
        ({"drop_nonfinite": "yes"}, "drop_nonfinite must be True or False"),
        ({"meta": {"loss": "ce"}}, "meta must be a RunMeta"),
    ],
)
def test_bad_arguments_raise_invalid_argument(tmp_path, kwargs, match):
    p = write(tmp_path, "step,loss\n0,1.0\n")
    with pytest.raises(InvalidArgumentError, match=match):
        read_csv(p, **kwargs)


def test_tsv_separator_comments_and_bom(tmp_path):
    p = write(
        tmp_path, "\ufeff# exported by my trainer\nstep\tloss\n0\t1.0\n1\t0.5\n", name="log.tsv"
    )
    np.testing.assert_allclose(read_csv(p).loss, [1.0, 0.5])
    q = write(tmp_path, "step;loss\n0;1.0\n", name="semi.csv")
    np.testing.assert_allclose(read_csv(q, sep=";").loss, [1.0])


def test_sparse_rows_of_one_step_are_merged(tmp_path):
    p = write(tmp_path, "step,loss,lr\n0,,0.1\n0,2.0,\n1,,0.1\n1,1.0,\n")
    traj = read_csv(p)
    np.testing.assert_allclose(traj.loss, [2.0, 1.0])
    np.testing.assert_allclose(traj.lr, [0.1, 0.1])


def test_unsorted_steps_are_sorted(tmp_path):
    p = write(tmp_path, "step,loss\n2,0.5\n0,2.0\n1,1.0\n")
    traj = read_csv(p)
    np.testing.assert_array_equal(traj.step, [0, 1, 2])
    np.testing.assert_allclose(traj.loss, [2.0, 1.0, 0.5])


def test_duplicated_steps_keep_last_or_raise(tmp_path):
    p = write(tmp_path, "step,loss\n0,2.0\n1,1.5\n2,1.2\n1,1.4\n2,1.1\n3,1.0\n")
    traj = read_csv(p)
    np.testing.assert_allclose(traj.loss, [2.0, 1.4, 1.1, 1.0])
    with pytest.raises(
        DataError, match=r"'loss' is logged 2 times at step 1 \(line 3, line 5\).*dedupe='last'"
    ):
        read_csv(p, dedupe="error")


def test_nonfinite_loss_raises_naming_line_and_step_or_is_dropped(tmp_path):
    p = write(tmp_path, "step,loss\n0,2.0\n1,nan\n2,1.0\n3,inf\n")
    with pytest.raises(DataError, match=r"'loss' is nan at step 1 \(line 3\).*drop_nonfinite=True"):
        read_csv(p)
    traj = read_csv(p, drop_nonfinite=True)
    np.testing.assert_array_equal(traj.step, [0, 2])
    assert "dropped 2 row(s)" in traj.meta.extra["source_notes"]


def test_infinite_lr_is_refused(tmp_path):
    p = write(tmp_path, "step,loss,lr\n0,2.0,0.1\n1,1.0,inf\n")
    with pytest.raises(DataError, match=r"'lr' is inf at step 1 \(line 3\)"):
        read_csv(p)
    assert read_csv(p, drop_nonfinite=True).n == 1


def test_lr_with_gaps_is_left_out_unless_interpolation_is_asked(tmp_path):
    p = write(tmp_path, "step,loss,lr\n0,2.0,0.1\n1,1.5,\n2,1.2,0.3\n3,1.0,\n")
    traj = read_csv(p)
    assert traj.lr is None
    assert traj.meta.time_unit == "step"
    assert "interpolate_lr=True" in traj.meta.extra["source_notes"]
    filled = read_csv(p, interpolate_lr=True)
    np.testing.assert_allclose(filled.lr, [0.1, 0.2, 0.3, 0.3])
    assert filled.meta.time_unit == "intrinsic"


def test_no_step_column_uses_row_numbers(tmp_path):
    p = write(tmp_path, "loss\n3.0\n2.0\n")
    traj = read_csv(p)
    np.testing.assert_array_equal(traj.step, [0, 1])
    assert "row numbers" in traj.meta.extra["source_notes"]


def test_meta_is_kept_and_extended(tmp_path):
    p = write(tmp_path, "step,loss\n0,1.0\n")
    traj = read_csv(p, meta=RunMeta(loss="ce", classes=10, name="mine", extra={"seed": 3}))
    assert (traj.meta.loss, traj.meta.classes, traj.meta.name) == ("ce", 10, "mine")
    assert traj.meta.extra["seed"] == 3
    assert traj.meta.extra["source"] == str(p)


def test_huge_finite_loss_is_read(tmp_path):
    p = write(tmp_path, "step,loss\n0,1e308\n1,1.0\n")
    assert read_csv(p).loss[0] == 1e308


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("step,loss,lr\n0,1.0,1e308\n1,0.5,1e308\n2,0.2,1e308\n", "t = sum\\(lr\\) overflows"),
        ("step,loss\n1e300,1.0\n", "steps must be whole numbers"),
        ("step,loss\n0.5,1.0\n", "has step 0.5"),
        ("step,loss\n,1.0\n", "line 2 has a loss but no step"),
        ("step,loss\n0,abc\n", "line 2, column 'loss' holds 'abc', which is not a number"),
        ("step,loss\n0,-1.0\n", "'loss' is negative"),
        ("step,loss,lr\n0,1.0,-0.1\n", "learning rate 'lr' is negative"),
        ("step,loss,lr\n0,2.0,0\n1,1.0,0\n", "0 at every logged step"),
        ("step,loss\n0,1.0,7\n1,0.5\n", "line 2 has 3 fields but the header has 2"),
        ("step,loss\n", "holds no value"),
        ("# only a comment\n\n", "no header row"),
        ('step,loss\n0,"1.0\n', "not valid CSV"),
        ("step,loss,loss\n0,1.0,2.0\n", "column 'loss' appears 2 times in the header; rename"),
        ("step,loss\n0,\n1,\n", "holds no value"),
    ],
)
def test_malformed_tables_raise_one_clear_data_error(tmp_path, text, match):
    p = write(tmp_path, text)
    with pytest.raises(DataError, match=match) as info:
        read_csv(p)
    assert str(p) in str(info.value)


def test_truncated_last_line_raises_or_is_dropped(tmp_path):
    p = write(tmp_path, "step,loss,lr\n0,2.0,0.1\n1,1.5,0.1\n2,1.")
    with pytest.raises(DataError, match=r"last line \(4\).*truncated.*allow_truncated=True"):
        read_csv(p)
    traj = read_csv(p, allow_truncated=True)
    np.testing.assert_array_equal(traj.step, [0, 1])
    assert "truncated last line 4" in traj.meta.extra["source_notes"]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "is empty"),
        (b"\x00\x01\x02garbage\xff", "NUL bytes"),
        (b"step,loss\n0,\xff\xfe\n", "not UTF-8 text"),
    ],
)
def test_empty_and_binary_files(tmp_path, content, match):
    p = tmp_path / "log.csv"
    p.write_bytes(content)
    with pytest.raises(DataError, match=match):
        read_csv(p)


def test_missing_path_directory_and_size_limit(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_csv(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="is a directory"):
        read_csv(tmp_path)
    p = write(tmp_path, "step,loss\n" + "".join(f"{i},1.0\n" for i in range(100)))
    with pytest.raises(DataError, match=r"more than max_bytes=100 .*larger max_bytes"):
        read_csv(p, max_bytes=100)
    assert read_csv(p, max_bytes=None).n == 100


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_named_pipe_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="not a regular file"):
        read_csv(fifo)


def test_unreadable_file_is_a_data_error(tmp_path, monkeypatch):
    p = write(tmp_path, "step,loss\n0,1.0\n")
    real_open = Path.open

    def deny(self, *args, **kwargs):
        if self == p:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", deny)
    with pytest.raises(DataError, match=r"permission denied.*readable"):
        read_csv(p)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any file")
def test_file_without_read_permission(tmp_path):
    p = write(tmp_path, "step,loss\n0,1.0\n")
    p.chmod(0)
    try:
        with pytest.raises(DataError, match="permission denied"):
            read_csv(p)
    finally:
        p.chmod(stat.S_IRUSR | stat.S_IWUSR)


def test_reading_never_writes(tmp_path):
    good = write(tmp_path, "step,loss\n0,1.0\n1,0.5\n")
    bad = write(tmp_path, "step,loss\n0,nan\n", name="bad.csv")
    before = snapshot(tmp_path)
    read_csv(good)
    with pytest.raises(DataError):
        read_csv(bad)
    assert snapshot(tmp_path) == before


def test_a_warmup_from_zero_lr_reads(tmp_path) -> None:
    path = tmp_path / "warm.csv"
    path.write_text("step,loss,lr\n0,2.3,0\n1,2.2,0.05\n2,2.0,0.1\n3,1.8,0.1\n")
    traj = read_csv(path)
    np.testing.assert_allclose(traj.t, [0.0, 0.0, 0.05, 0.15])
