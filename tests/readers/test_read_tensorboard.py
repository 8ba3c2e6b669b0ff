"""read_tensorboard on real event files written by torch's SummaryWriter (and TF2-style tensors)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lossrate import DataError, InvalidArgumentError
from lossrate.readers import read_log, read_tensorboard

pytest.importorskip("tensorboard")
SummaryWriter = pytest.importorskip("torch.utils.tensorboard").SummaryWriter


def log_run(
    folder: Path,
    steps,
    *,
    loss=lambda s: 2.0 / (s + 1),
    lr=lambda s: 0.1,
    loss_tag="train/loss",
    lr_tag="lr",
    suffix: str = "",
) -> None:
    w = SummaryWriter(str(folder), filename_suffix=suffix)
    for s in steps:
        w.add_scalar(loss_tag, loss(s), s)
        if lr_tag:
            w.add_scalar(lr_tag, lr(s), s)
        w.add_scalar("accuracy", 0.5, s)
    w.close()


def event_file(folder: Path) -> Path:
    (f,) = sorted(folder.glob("events.out.tfevents*"))
    return f


def test_reads_loss_lr_and_wall_time_by_tag_names(tmp_path):
    log_run(tmp_path, range(0, 50, 5), lr=lambda s: 0.1 if s < 25 else 0.05)
    traj = read_tensorboard(tmp_path)
    np.testing.assert_array_equal(traj.step, np.arange(0, 50, 5))
    # TensorBoard stores float32
    np.testing.assert_allclose(traj.loss, 2.0 / (np.arange(0, 50, 5) + 1), rtol=1e-6)
    np.testing.assert_allclose(traj.lr, [0.1] * 5 + [0.05] * 5, rtol=1e-6)
    assert traj.t[-1] > 0 and traj.meta.time_unit == "intrinsic"
    assert np.isnan(traj.wall_s[0]) and np.all(traj.wall_s[1:][np.isfinite(traj.wall_s[1:])] >= 0)
    assert traj.meta.extra["source_format"] == "tensorboard"
    assert "accuracy" in traj.meta.extra["source_ignored"]
    assert traj.meta.name == tmp_path.name


def test_explicit_tags_and_the_pytorch_tutorial_naming(tmp_path):
    log_run(tmp_path, range(5), loss_tag="Loss/train", lr_tag="optim/step_size")
    traj = read_tensorboard(tmp_path)
    assert traj.lr is None  # 'optim/step_size' is not a known lr name
    traj = read_tensorboard(tmp_path, lr_tag="optim/step_size")
    np.testing.assert_allclose(traj.lr, 0.1, rtol=1e-6)
    with pytest.raises(
        DataError, match=r"tag 'nope' \(given for 'loss'\) is not in the log; available: "
    ):
        read_tensorboard(tmp_path, loss_tag="nope")
    with pytest.raises(InvalidArgumentError, match="contradicts"):
        read_tensorboard(tmp_path, loss_tag="a", columns={"loss": "b"})
    with pytest.raises(InvalidArgumentError, match="carry their own step"):
        read_tensorboard(tmp_path, columns={"step": "accuracy"})


def test_a_single_event_file_and_a_run_below_the_given_folder(tmp_path):
    log_run(tmp_path / "exp" / "run1", range(3))
    assert read_tensorboard(event_file(tmp_path / "exp" / "run1")).n == 3
    assert read_tensorboard(tmp_path).n == 3
    assert read_log(tmp_path).n == 3


def test_several_runs_are_listed_not_guessed(tmp_path):
    log_run(tmp_path / "a", range(3))
    log_run(tmp_path / "b", range(3))
    with pytest.raises(
        DataError, match=r"holds 2 TensorBoard runs \(.*/a', .*/b'\); pass one of them"
    ):
        read_tensorboard(tmp_path)


def test_resumed_run_files_are_merged_keeping_the_last_value(tmp_path):
    # event files are read in name order: their names start with the creation second
    log_run(tmp_path / "1", range(0, 10), loss=lambda s: 5.0)
    event_file(tmp_path / "1").rename(tmp_path / "events.out.tfevents.1000.host.1.0")
    log_run(tmp_path / "2", range(6, 15), loss=lambda s: 1.0)
    event_file(tmp_path / "2").rename(tmp_path / "events.out.tfevents.1001.host.1.0")
    traj = read_tensorboard(tmp_path)
    np.testing.assert_array_equal(traj.step, np.arange(15))
    np.testing.assert_allclose(traj.loss, [5.0] * 6 + [1.0] * 9)
    with pytest.raises(
        DataError,
        match=r"'loss' \('train/loss'\) is logged 2 times at step 6 \(events.*1000.* record \d+ .*, events.*1001.* record \d+",
    ):
        read_tensorboard(tmp_path, dedupe="error")


def test_unsorted_steps_and_nonfinite_values(tmp_path):
    w = SummaryWriter(str(tmp_path))
    for s, v in [(2, 0.5), (0, 2.0), (1, float("nan")), (3, 0.25)]:
        w.add_scalar("loss", v, s)
    w.close()
    with pytest.raises(
        DataError, match=r"'loss' is nan at step 1 \(events.* record \d+ \(tag 'loss'\)\)"
    ):
        read_tensorboard(tmp_path)
    traj = read_tensorboard(tmp_path, drop_nonfinite=True)
    np.testing.assert_array_equal(traj.step, [0, 2, 3])


def test_tf2_style_tensor_scalars(tmp_path):
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter
    from tensorboard.util import tensor_util

    w = EventFileWriter(str(tmp_path))
    for s in range(4):
        value = summary_pb2.Summary.Value(
            tag="epoch_loss", tensor=tensor_util.make_tensor_proto(np.float32(1.0 / (s + 1)))
        )
        if s == 0:  # TF2 writes the plugin metadata with the first value of a tag only
            value.metadata.plugin_data.plugin_name = "scalars"
        w.add_event(
            event_pb2.Event(step=s, wall_time=100.0 + s, summary=summary_pb2.Summary(value=[value]))
        )
    w.close()
    traj = read_tensorboard(tmp_path, loss_tag="epoch_loss")
    np.testing.assert_allclose(traj.loss, 1.0 / (np.arange(4) + 1), rtol=1e-6)
    np.testing.assert_allclose(traj.wall_s, [np.nan, 1.0, 1.0, 1.0])


def test_folder_without_scalars_or_logs(tmp_path):
    w = SummaryWriter(str(tmp_path / "hist"))
    w.add_histogram("weights", np.arange(10.0), 0)
    w.close()
    with pytest.raises(DataError, match=r"no scalar series \(it holds only .*weights"):
        read_tensorboard(tmp_path / "hist")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no TensorBoard event files"):
        read_tensorboard(tmp_path / "empty")


def test_truncated_event_file_raises_or_keeps_complete_records(tmp_path):
    log_run(tmp_path, range(10))
    f = event_file(tmp_path)
    f.write_bytes(f.read_bytes()[:-7])
    with pytest.raises(
        DataError, match=r"ends in a truncated record at byte \d+.*allow_truncated=True"
    ):
        read_tensorboard(tmp_path)
    traj = read_tensorboard(tmp_path, allow_truncated=True)
    assert traj.n == 10  # the cut record was the last 'accuracy' value
    assert "truncated last record" in traj.meta.extra["source_notes"]


def test_damaged_record_in_the_middle_is_reported_not_skipped(tmp_path):
    log_run(tmp_path, range(10))
    f = event_file(tmp_path)
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"is damaged: .* at byte \d+"):
        read_tensorboard(tmp_path)


def test_garbage_named_like_an_event_file(tmp_path):
    f = tmp_path / "events.out.tfevents.123.host"
    f.write_bytes(b"this is not a tfrecord at all, just text\n" * 3)
    with pytest.raises(DataError, match="is not a TensorBoard event file"):
        read_tensorboard(f)
    f.write_bytes(b"")
    with pytest.raises(DataError, match="is empty"):
        read_tensorboard(f)


def test_size_limit_covers_all_files_of_the_run(tmp_path):
    log_run(tmp_path, range(50))
    size = event_file(tmp_path).stat().st_size
    with pytest.raises(DataError, match="more than max_bytes"):
        read_tensorboard(tmp_path, max_bytes=size - 1)
    assert read_tensorboard(tmp_path, max_bytes=size).n == 50


def test_event_files_in_the_given_folder_win_over_sub_runs(tmp_path):
    log_run(tmp_path, range(4))
    w = SummaryWriter(str(tmp_path))
    w.add_scalars("cmp", {"a": 1.0, "b": 2.0}, 0)  # writes sub-runs cmp_a/, cmp_b/
    w.close()
    assert len(list(tmp_path.rglob("events*"))) > 2
    assert read_tensorboard(tmp_path).n == 4
