"""read_wandb on history exports in W&B's formats (JSON lines, JSON, CSV), written by the tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lossrate import DataError
from lossrate.readers import read_log, read_wandb


def history_rows() -> list[dict]:
    """Rows as a Lightning run under WandbLogger logs them: loss and lr in separate log calls."""
    rows, k = [], 0
    for step in range(0, 40, 10):
        rows.append(
            {
                "_step": k,
                "_runtime": 1.0 + step * 0.5,
                "_timestamp": 1.7e9 + step,
                "lr-AdamW": 1e-3,
                "trainer/global_step": step,
            }
        )
        rows.append(
            {
                "_step": k + 1,
                "_runtime": 1.1 + step * 0.5,
                "_timestamp": 1.7e9 + step,
                "train/loss": 3.0 - step / 20,
                "epoch": 0,
                "trainer/global_step": step,
                "samples": {"_type": "table-file", "path": "media/x.json"},
            }
        )
        k += 2
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_jsonl_history_merges_rows_by_trainer_step(tmp_path):
    p = write_jsonl(tmp_path / "history.jsonl", history_rows())
    traj = read_wandb(p)
    np.testing.assert_array_equal(traj.step, [0, 10, 20, 30])
    np.testing.assert_allclose(traj.loss, [3.0, 2.5, 2.0, 1.5])
    np.testing.assert_allclose(traj.lr, 1e-3)
    np.testing.assert_allclose(traj.wall_s, [np.nan, 0.5, 0.5, 0.5])  # from _runtime
    cols = traj.meta.extra["source_columns"]
    assert (
        "step=trainer/global_step" in cols and "loss=train/loss" in cols and "lr=lr-AdamW" in cols
    )
    assert "_step" in traj.meta.extra["source_ignored"]
    assert "samples" not in traj.meta.extra["source_ignored"]  # media entries are skipped


def test_run_folder_with_files_history(tmp_path):
    write_jsonl(
        tmp_path / "run-20240101_000000-abc" / "files" / "wandb-history.jsonl", history_rows()
    )
    traj = read_wandb(tmp_path / "run-20240101_000000-abc")
    assert traj.meta.name == "run-20240101_000000-abc"
    assert read_log(tmp_path).n == 4  # detected through the folder tree


def test_nan_and_infinity_tokens(tmp_path):
    p = tmp_path / "h.jsonl"
    p.write_text(
        '{"_step": 0, "loss": 2.0}\n{"_step": 1, "loss": NaN}\n{"_step": 2, "loss": Infinity}\n'
    )
    with pytest.raises(DataError, match=r"'loss' is nan at step 1 \(line 2\)"):
        read_wandb(p)
    assert read_wandb(p, drop_nonfinite=True).n == 1


def test_nested_dicts_are_flattened(tmp_path):
    p = write_jsonl(
        tmp_path / "h.jsonl", [{"_step": i, "train": {"loss": 1.0 / (i + 1)}} for i in range(3)]
    )
    traj = read_wandb(p)
    np.testing.assert_allclose(traj.loss, [1.0, 0.5, 1 / 3])
    assert "loss=train.loss" in traj.meta.extra["source_columns"]


def test_json_list_and_dict_of_columns(tmp_path):
    p = tmp_path / "h.json"
    p.write_text(json.dumps([{"_step": 0, "loss": 1.0}, {"_step": 1, "loss": 0.5}]))
    np.testing.assert_allclose(read_wandb(p).loss, [1.0, 0.5])
    p.write_text(json.dumps({"_step": [0, 1], "loss": [1.0, 0.5], "lr": [0.1, 0.1]}))
    np.testing.assert_allclose(read_log(p).lr, [0.1, 0.1])


def test_csv_exports(tmp_path):
    p = tmp_path / "history.csv"
    p.write_text(
        ",_step,_runtime,train/loss,train/learning_rate\n0,0,1.0,2.0,0.1\n1,1,2.0,1.0,0.1\n"
    )
    traj = read_log(p)
    assert traj.meta.extra["source_format"] == "wandb"
    np.testing.assert_allclose(traj.loss, [2.0, 1.0])
    np.testing.assert_allclose(traj.lr, [0.1, 0.1])
    chart = tmp_path / "chart.csv"  # the W&B UI's "export CSV" of one chart
    chart.write_text(
        '"Step","bright-sun-3 - train/loss","bright-sun-3 - train/loss__MIN","bright-sun-3 - train/loss__MAX"\n'
        '"0","2.0","2.0","2.0"\n"50","1.0","1.0","1.0"\n'
    )
    traj = read_log(chart)
    np.testing.assert_array_equal(traj.step, [0, 50])
    np.testing.assert_allclose(traj.loss, [2.0, 1.0])


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("h.json", '{"loss": 1.0, "_step": 5}', "not a history \\(a run summary\\?\\)"),
        ("h.json", "[1, 2]", "record 0 is a JSON int, not an object"),
        ("h.json", "[]", "empty list"),
        ("h.json", '{"_step": [0, 1], "loss": [1.0]}', "different or zero lengths"),
        ("h.json", '{"_step": [0, 1', "not valid JSON"),
        ("h.jsonl", '{"_step": 0, "loss": 1.0}\n[1]\n', "line 2 holds a JSON list, not an object"),
        (
            "h.jsonl",
            '{"_step": 0, "loss": 1.0}\n{oops}\n{"_step": 1, "loss": 1.0}\n',
            "line 2 is not valid JSON",
        ),
        (
            "h.jsonl",
            '{"_step": 0, "loss": "low"}\n',
            "'loss' holds 'low' \\(str\\), which is not a number",
        ),
        ("h.jsonl", '{"_step": 0, "loss": true}\n', "'loss' holds 'True' \\(bool\\)"),
        ("h.jsonl", '{"_step": 0, "loss": [1]}\n', "which is not a number"),
        ("h.jsonl", '{"_step": 0, "loss": 1e999, "lr": 0.1}\n', "'loss' is inf at step 0"),
        ("h.jsonl", '{"_step": 0, "loss": 1%s}\n' % ("0" * 400), "'loss' is inf at step 0"),
        ("h.jsonl", '{"_step": 0, "loss": %s}\n' % ("1" * 5000), "not valid JSON|not usable"),
        ("h.jsonl", "[" * 100_000 + "\n", "not valid JSON|not usable"),
        ("h.jsonl", "\n\n\n", "no history rows"),
        ("h.jsonl", '{"_step": 0.5, "loss": 1.0}\n', "has step 0.5"),
    ],
)
def test_malformed_histories(tmp_path, name, text, match):
    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(DataError, match=match) as info:
        read_wandb(p)
    assert str(p) in str(info.value)


def test_truncated_last_line(tmp_path):
    p = tmp_path / "h.jsonl"
    p.write_text('{"_step": 0, "loss": 1.0}\n{"_step": 1, "loss": 0.5}\n{"_step": 2, "lo')
    with pytest.raises(DataError, match=r"last line \(3\).*truncated.*allow_truncated=True"):
        read_wandb(p)
    assert read_wandb(p, allow_truncated=True).n == 2


def test_folder_without_history(tmp_path):
    with pytest.raises(DataError, match="holds no W&B run folders"):
        read_wandb(tmp_path)
