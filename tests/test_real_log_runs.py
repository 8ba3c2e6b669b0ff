"""The real-log suite's generator (benchmarks/real_log_runs.py) on tiny runs of each library.

Each run is trained for a few dozen steps by the library itself (HF Trainer +
TensorBoard, Lightning CSVLogger + LearningRateMonitor, a plain loop writing a CSV);
``lossrate.read_log`` must give back the steps, learning rates and losses the training
loop saw.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

pytestmark = [
    pytest.mark.slow,
    # Lightning 2.6 calls a torch pytree API that torch 2.13 deprecates; not ours to fix.
    pytest.mark.filterwarnings(
        "ignore:`isinstance.treespec, LeafSpec.` is deprecated:FutureWarning"
    ),
]

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "real_log_runs.py"


@pytest.fixture(scope="module")
def suite():
    spec = importlib.util.spec_from_file_location("real_log_runs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["real_log_runs"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("real_log_runs", None)


def _check(run, run_dir, steps, lr, loss):
    from lossrate import read_log

    traj = read_log(run.path)
    np.testing.assert_array_equal(traj.step, steps)
    assert traj.lr is not None and np.isfinite(traj.lr).all()
    np.testing.assert_allclose(traj.lr, lr, rtol=1e-6)
    np.testing.assert_allclose(traj.loss, loss, rtol=1e-6)
    assert (traj.loss > 0).all()
    assert traj.n == len(steps) > 3
    # training really happened: the loss fell
    assert traj.loss[-1] < traj.loss[0]
    assert Path(run.path).is_relative_to(run_dir)
    assert json.loads((run_dir / "done.json").read_text()) == dataclasses.asdict(run)
    return traj


def test_plain_loop_csv(suite, tmp_path):
    spec = suite.tiny_spec("plain", steps=30)
    run, seen = suite.run_spec(spec, tmp_path)
    assert (run.library, run.schedule, run.loss, run.classes, run.steps) == (
        "plain",
        "wsd80",
        "ce",
        10,
        30,
    )
    assert Path(run.path).suffix == ".csv"
    # the loop logs every log_every-th step: its 1-based step, the lr it used, its batch loss
    every = spec.log_every
    steps = np.arange(every, 31, every)
    np.testing.assert_array_equal(seen["step"], steps)
    np.testing.assert_allclose(
        seen["lr"], [spec.lr * suite.multiplier(spec, int(s) - 1) for s in steps]
    )
    traj = _check(run, tmp_path, steps, seen["lr"], seen["loss"])
    assert run.decay_start == 30 - round(0.8 * 30)
    # the lr falls linearly to lr/cooldown over the last 80 % of the steps
    assert traj.lr[-1] < traj.lr.max() / 10


def test_lightning_csvlogger(suite, tmp_path):
    spec = suite.tiny_spec("lightning", steps=30)
    run, seen = suite.run_spec(spec, tmp_path)
    assert run.library == "lightning" and run.schedule == "onecycle"
    assert Path(run.path).name == "version_0" and (Path(run.path) / "metrics.csv").is_file()
    # training_step saw global_step g = 0..29; Lightning writes a row after step g + 1 when
    # (g + 1) % log_every == 0, labelled with g, holding that step's loss and lr
    g = np.asarray(seen["step"])
    np.testing.assert_array_equal(g, np.arange(30))
    keep = (g + 1) % spec.log_every == 0
    traj = _check(
        run, tmp_path, g[keep], np.asarray(seen["lr"])[keep], np.asarray(seen["loss"])[keep]
    )
    assert "lr=lr-SGD" in traj.meta.extra["source_columns"]
    # OneCycleLR: up to the peak, then down
    peak = int(np.argmax(traj.lr))
    assert 0 < peak < traj.n - 1 and np.isclose(traj.lr.max(), spec.lr, rtol=0.2)


def test_hf_trainer_tensorboard(suite, tmp_path):
    spec = suite.tiny_spec("hf", steps=30)
    run, seen = suite.run_spec(spec, tmp_path)
    assert (run.library, run.dataset, run.schedule) == ("hf", "wordnet-chars", "wsd50")
    assert run.classes == len(suite._wordnet_chars()[1]) > 40
    # the Trainer logs every logging_steps: the mean loss of the window and the lr
    steps = np.arange(spec.log_every, 31, spec.log_every)
    np.testing.assert_array_equal(seen["step"], steps)
    traj = _check(run, tmp_path, steps, seen["lr"], seen["loss"])
    assert "lr=train/learning_rate" in traj.meta.extra["source_columns"]
    assert "loss=train/loss" in traj.meta.extra["source_columns"]
    assert traj.lr[-1] < traj.lr.max()  # warmup-stable-decay reached its decay


def test_generate_caches_and_redoes_unfinished_runs(suite, tmp_path, monkeypatch):
    a = dataclasses.replace(suite.tiny_spec("plain", steps=12), name="tiny-a")
    b = dataclasses.replace(a, name="tiny-b", schedule="constant", style="t")
    monkeypatch.setattr(suite, "specs", lambda: [a, b])
    partial = tmp_path / "tiny-b"
    partial.mkdir()
    (partial / "train_log.csv").write_text("step,lr,loss\n1,0.1,2.3\n")  # a killed run
    runs = suite.generate(tmp_path, jobs=1, progress=False)
    assert [r.name for r in runs] == ["tiny-a", "tiny-b"]
    assert not (partial / "train_log.csv").exists()  # the partial folder was redone
    assert Path(runs[1].path).suffix == ".tsv"
    assert all(Path(r.path).is_absolute() and Path(r.path).is_relative_to(tmp_path) for r in runs)
    again = suite.generate(tmp_path, jobs=1, progress=False)
    assert again == runs  # cached: not retrained (same recorded seconds)
    # a moved cache: the runs are found in their new place, still not retrained
    moved = tmp_path.parent / (tmp_path.name + "-moved")
    tmp_path.rename(moved)
    there = suite.generate(moved, jobs=1, progress=False)
    assert [r.seconds for r in there] == [r.seconds for r in runs]
    assert all(Path(r.path).is_relative_to(moved) and Path(r.path).exists() for r in there)
    assert "tiny-a" in suite.table(there)
