"""read_log: format detection, dispatch, lossrate trajectory files, and argument checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lossrate import DataError, InvalidArgumentError, RunMeta, Trajectory
from lossrate.readers import FORMATS, detect_format, read_log


def make(tmp_path: Path, rel: str, text: str) -> Path:
    p = tmp_path / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")
    return p


@pytest.mark.parametrize(
    ("rel", "text", "fmt"),
    [
        ("a.csv", "step,loss\n0,1.0\n", "csv"),
        ("a.tsv", "step\tloss\n0\t1.0\n", "csv"),
        ("a.txt", "step,loss\n0,1.0\n", "csv"),
        ("h.csv", ",_step,loss\n0,0,1.0\n", "wandb"),
        ("h.jsonl", '{"_step": 0, "loss": 1.0}\n', "wandb"),
        ("h.ndjson", '{"_step": 0, "loss": 1.0}\n', "wandb"),
        ("h.json", '[{"_step": 0, "loss": 1.0}]', "wandb"),
        ("history", '{"_step": 0, "loss": 1.0}\n', "wandb"),
        ("v/version_0/metrics.csv", "epoch,step,train_loss\n0,0,1.0\n", "lightning"),
    ],
)
def test_detects_and_reads_each_format(tmp_path, rel, text, fmt):
    p = make(tmp_path, rel, text)
    assert detect_format(p) == fmt
    traj = read_log(p)
    assert traj.loss[0] == 1.0 and traj.meta.extra["source_format"] == fmt
    assert read_log(p, format=fmt).loss[0] == 1.0


def test_lossrate_trajectory_files_round_trip(tmp_path):
    traj = Trajectory.from_arrays(
        [2.0, 1.0], step=[0, 1], lr=[0.1, 0.1], meta=RunMeta(loss="ce", name="x")
    )
    p = traj.write(tmp_path / "traj.csv")
    assert detect_format(p) == "trajectory"
    back = read_log(p)
    np.testing.assert_array_equal(back.t, traj.t)
    assert back.meta == traj.meta
    assert read_log(p, meta=RunMeta(name="y")).meta.name == "y"
    with pytest.raises(
        InvalidArgumentError, match=r"do\(es\) not apply to .*lossrate trajectory file"
    ):
        read_log(p, loss_tag="loss")


def test_the_sniffer_and_its_refusals(tmp_path):
    with pytest.raises(DataError, match=r"cannot tell the format .*pass format="):
        detect_format(make(tmp_path, "blob.bin", "hello"))
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DataError, match="holds no training log lossrate knows"):
        read_log(tmp_path / "nothing")
    with pytest.raises(DataError, match="does not exist"):
        read_log(tmp_path / "missing.csv")
    make(tmp_path, "two/a/h.csv", "x")
    make(tmp_path, "two/a/metrics.csv", "step,loss\n0,1\n")
    make(tmp_path, "two/a/hparams.yaml", "{}\n")
    make(tmp_path, "two/b/wandb-history.jsonl", "{}\n")
    with pytest.raises(
        DataError, match=r"holds 2 runs: .*\(lightning\), .*\(wandb\); pass one of them"
    ):
        read_log(tmp_path / "two")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"format": "excel"}, "format='excel' is not known; choose one of auto, csv"),
        ({"loss_tag": ""}, "loss_tag must be a non-empty string"),
        ({"lr_tag": "a", "columns": {"lr": "b"}}, "lr_tag='a' contradicts columns\\['lr'\\]='b'"),
        ({"max_bytes": 1.5}, "max_bytes must be a positive int"),
        ({"interpolate_lr": 1}, "interpolate_lr must be True or False"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, match):
    p = make(tmp_path, "a.csv", "step,loss\n0,1.0\n")
    with pytest.raises(InvalidArgumentError, match=match):
        read_log(p, **kwargs)


def test_loss_tag_reaches_every_format(tmp_path):
    p = make(tmp_path, "h.jsonl", json.dumps({"_step": 0, "obj": 3.0}) + "\n")
    assert read_log(p, loss_tag="obj").loss[0] == 3.0
    assert "trajectory" in FORMATS
