"""``lossrate train CONFIG --nproc N``: two gloo ranks on CPU record the same trajectory as
one process on the same global batch (L, sigma_L, R to 1e-6), only rank 0 writes, a resume
after a stop mid-way gives the same rows, and a batch that does not split is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch.distributed as dist

from lossrate import Trajectory
from lossrate._errors import InvalidArgumentError
from lossrate.cli import EXIT_OK, EXIT_USAGE, main
from lossrate.experiments import run_experiment
from lossrate.experiments.config import load_config

pytestmark = [
    pytest.mark.torch,
    pytest.mark.slow,  # about 30 s: five spawned two-rank runs
    pytest.mark.skipif(
        not dist.is_available() or not dist.is_gloo_available(), reason="no gloo backend"
    ),
]

STEPS = 20


def _cfg(**train):
    settings = {
        "train.steps": STEPS,
        "train.batch_size": 64,
        "train.eval_every": 5,
        "train.checkpoint_every": 10,
    }
    settings.update({f"train.{k}": v for k, v in train.items()})
    return load_config("teacher_student_gd").override(settings)


def _rows(path):
    return Trajectory.read(path / "trajectory.csv")


def _same(a, b, rtol=1e-6):
    assert a.n == b.n == STEPS
    np.testing.assert_array_equal(a.step, b.step)
    np.testing.assert_array_equal(a.batch_size, b.batch_size)
    for name in ("loss", "loss_std", "residual_sq", "grad_sq", "test_loss"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=rtol, err_msg=name)


def test_two_ranks_equal_one_process_and_resume(tmp_path):
    cfg = _cfg()
    one = run_experiment(cfg, tmp_path / "one", device="cpu", progress=False)
    two = run_experiment(cfg, tmp_path / "two", device="cpu", progress=False, nproc=2)
    _same(two, one)
    # only rank 0 wrote: the folder a single process writes
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(
        p.name for p in (tmp_path / "one").iterdir()
    )

    run_experiment(cfg, tmp_path / "cut", device="cpu", progress=False, nproc=2, stop_at=13)
    assert _rows(tmp_path / "cut").n == 13
    resumed = run_experiment(
        cfg, tmp_path / "cut", device="cpu", progress=False, nproc=2, resume=True
    )
    _same(resumed, two, rtol=0)


def test_a_batch_that_does_not_split_is_refused(tmp_path):
    with pytest.raises(InvalidArgumentError, match=r"--nproc 3.*batch_size is 64"):
        run_experiment(_cfg(), tmp_path / "r", device="cpu", progress=False, nproc=3)
    assert not (tmp_path / "r").exists()


def test_cli_nproc(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["train", "teacher_student_gd", "--out", str(out), "--device", "cpu", "--nproc"]
    sets = ["--set", "train.steps=4", "--set", "train.batch_size=64", "-q", "--json"]
    assert main([*argv, "3", *sets]) == EXIT_USAGE
    assert "--nproc 3" in capsys.readouterr().err
    assert main([*argv, "2", *sets]) == EXIT_OK, capsys.readouterr().err
    assert _rows(out).n == 4
