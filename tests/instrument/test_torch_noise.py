"""Unbiased gradient norms and tr(Sigma_g) from gradient groups (lossrate.torch.groups,
lossrate.measured): checked against per-group gradients computed independently, against the
exact per-sample covariance over many draws, against the full-data gradient on an exact case
(teacher-student regression, the shipped config), and DDP against one process fed the same
global batch in two halves."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn

from lossrate import DataError, InvalidArgumentError, RunMeta, Trajectory
from lossrate.closures import MSE
from lossrate.measured import (
    NoiseRows,
    measured_rates,
    noise_scale,
    read_gradient_noise,
)
from lossrate.torch import (
    DDPGradients,
    GradientGroups,
    InstrumentedLoss,
    Recorder,
    gradient_metrics,
)
from lossrate.torch.gradients import preconditioned_grads

pytestmark = pytest.mark.torch


def _problem(
    n: int = 48, d: int = 6, seed: int = 0
) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = x @ torch.randn(d, 2, generator=g, dtype=torch.float64) + 0.3 * torch.randn(
        n, 2, generator=g, dtype=torch.float64
    )
    torch.manual_seed(seed)
    return nn.Linear(d, 2).double(), x, y


def _grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The mean-loss gradient on (x, y), flattened, computed on its own."""
    model.zero_grad()
    nn.functional.mse_loss(model(x), y).backward()
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()]).clone()


def _grouped(model, opt, x, y, sizes, *, population=None):
    """gradient_metrics with GradientGroups over consecutive micro-batches of ``sizes``."""
    groups = GradientGroups(model, population=population)
    model.zero_grad()
    start, n = 0, sum(sizes)
    for b in sizes:
        part = slice(start, start + b)
        (nn.functional.mse_loss(model(x[part]), y[part]) * (b / n)).backward()
        groups.mark(b)
        start += b
    return gradient_metrics(model, opt, groups=groups)


@pytest.mark.parametrize("sizes", [(8, 8), (5, 7, 4), (3, 3, 3, 3)])
def test_group_estimates_equal_the_formulas_on_independent_group_gradients(sizes):
    model, x, y = _problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.5)  # P = 2 I
    gs = _grouped(model, opt, x, y, sizes)
    n, K = sum(sizes), len(sizes)
    edges = np.cumsum((0, *sizes))
    G = [_grad(model, x[a:b], y[a:b]) for a, b in itertools.pairwise(edges)]
    w = [b / n for b in sizes]
    cross = sum(w[j] * w[k] * float(G[j] @ G[k]) for j in range(K) for k in range(K) if j != k)
    u = cross / sum(w[j] * w[k] for j in range(K) for k in range(K) if j != k)
    s = sum(b * (float(g @ g) - u) for b, g in zip(sizes, G)) / K
    full = sum(wk * g for wk, g in zip(w, G))
    assert gs.groups == K and gs.batch_size == n
    assert gs.grad_sq == pytest.approx(float(full @ full), rel=1e-12)
    assert gs.grad_sq_debiased == pytest.approx(u, rel=1e-10)
    assert gs.trace_sigma == pytest.approx(s, rel=1e-10)
    assert gs.pgrad_sq_debiased == pytest.approx(2 * u, rel=1e-10)
    assert gs.ptrace_sigma == pytest.approx(2 * s, rel=1e-10)
    if K == 2:
        assert gs.grad_sq_debiased == pytest.approx(float(G[0] @ G[1]), rel=1e-10)


def test_adam_preconditioned_estimates_use_the_applied_p():
    model, x, y = _problem()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(3):  # some second-moment history
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    gs = _grouped(model, opt, x, y, (24, 24))
    P = torch.cat([P.reshape(-1) for _, _, P in preconditioned_grads(opt)])
    G1, G2 = _grad(model, x[:24], y[:24]), _grad(model, x[24:], y[24:])
    assert gs.pgrad_sq_debiased == pytest.approx(float(G1 @ (P * G2)), rel=1e-10)
    d = G1 - G2
    assert gs.ptrace_sigma == pytest.approx(24 * float(d @ (P * d)) / 2, rel=1e-10)


@pytest.mark.parametrize("make", ["sgd", "adam"])
def test_one_groups_object_over_steps_matches_the_formulas_each_step(make):
    """The buffers are reused across steps (and the per-entry one dropped for SGD's P = c I
    after the first read): every step still equals the formulas, with unequal groups."""
    model, x, y = _problem()
    opt = (
        torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.5)
        if make == "sgd"
        else torch.optim.Adam(model.parameters(), lr=0.01)
    )
    groups = GradientGroups(model)
    sizes, edges = (5, 7, 4), np.cumsum((0, 5, 7, 4))
    for step in range(3):
        model.zero_grad()
        for a, b in itertools.pairwise(edges):
            (nn.functional.mse_loss(model(x[a:b]), y[a:b]) * ((b - a) / 16)).backward()
            groups.mark(int(b - a))
        P = torch.cat([(P * torch.ones_like(g)).reshape(-1)
                       for _, g, P in preconditioned_grads(opt)])  # fmt: skip
        gs = gradient_metrics(model, opt, groups=groups)
        G = [_grad(model, x[a:b], y[a:b]) for a, b in itertools.pairwise(edges)]
        w = [b / 16 for b in sizes]
        pairs = [(j, k) for j in range(3) for k in range(3) if j != k]
        for M, u_got, s_got in ((1.0, gs.grad_sq_debiased, gs.trace_sigma),
                                (P, gs.pgrad_sq_debiased, gs.ptrace_sigma)):  # fmt: skip
            u = sum(w[j] * w[k] * float(G[j] @ (M * G[k])) for j, k in pairs)
            u /= sum(w[j] * w[k] for j, k in pairs)
            s = sum(b * (float(g @ (M * g)) - u) for b, g in zip(sizes, G)) / 3
            assert u_got == pytest.approx(u, rel=1e-9), (step, u_got, u)
            assert s_got == pytest.approx(s, rel=1e-9), (step, s_got, s)
        assert math.isnan(gs.update_dot) == (step == 0)
        model.zero_grad()
        nn.functional.mse_loss(model(x[:16]), y[:16]).backward()
        opt.step()
    quiet = GradientGroups(model, second_order=False)
    for _ in range(2):
        model.zero_grad()
        for part, w in GradientGroups.split(16):
            (nn.functional.mse_loss(model(x[part]), y[part]) * w).backward()
            quiet.mark(8)
        assert math.isnan(gradient_metrics(model, opt, groups=quiet).update_dot)


def test_a_uniform_rescale_after_the_marks_is_carried_over():
    """Clipping by norm or GradScaler.unscale_ after the marks: the estimates are those of
    the rescaled .grad (c^2 times), as the raw columns are."""
    model, x, y = _problem()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    before = _grouped(model, opt, x, y, (20, 28), population=None)
    groups = GradientGroups(model)
    model.zero_grad()
    for a, b in ((0, 20), (20, 48)):
        (nn.functional.mse_loss(model(x[a:b]), y[a:b]) * ((b - a) / 48)).backward()
        groups.mark(b - a)
    norm = float(nn.utils.clip_grad_norm_(model.parameters(), 1e-2))
    c2 = (1e-2 / (norm + 1e-6)) ** 2
    after = gradient_metrics(model, opt, groups=groups)
    assert after.grad_sq == pytest.approx(c2 * before.grad_sq, rel=1e-9)
    for name in ("grad_sq_debiased", "trace_sigma"):
        assert getattr(after, name) == pytest.approx(c2 * getattr(before, name), rel=1e-9)
    # Adam's P is read from the clipped gradient: the P columns follow the raw pgrad_sq
    ratio = after.pgrad_sq / before.pgrad_sq
    assert after.ptrace_sigma / before.ptrace_sigma == pytest.approx(ratio, rel=0.05)


def test_a_parameter_joining_mid_step_is_refused():
    torch.manual_seed(0)
    a, b = nn.Linear(3, 1).double(), nn.Linear(3, 1).double()
    groups = GradientGroups([*a.parameters(), *b.parameters()])
    x = torch.randn(4, 3, dtype=torch.float64)
    a(x).sum().backward()
    groups.mark(4)
    b(x).sum().backward()
    with pytest.raises(InvalidArgumentError, match="changed within a step"):
        groups.mark(4)


def test_estimates_are_unbiased_over_draws_with_replacement():
    """Mean over 1500 draws: debiased -> ||grad L||^2, trace -> tr Sigma (exact, from the
    per-sample gradients), raw -> ||grad L||^2 + tr Sigma / B."""
    model, x, y = _problem(n=40)
    per = torch.stack([_grad(model, x[i : i + 1], y[i : i + 1]) for i in range(40)])
    mean = per.mean(0)
    norm2, trace = float(mean @ mean), float(((per - mean) ** 2).sum(1).mean())
    g = torch.Generator().manual_seed(1)
    B, out = 8, []
    for _ in range(1500):
        idx = torch.randint(0, 40, (B,), generator=g)
        gs = _grouped(model, None, x[idx], y[idx], (4, 4))
        out.append((gs.grad_sq_debiased, gs.trace_sigma, gs.grad_sq))
    u, s, raw = np.array(out).T
    for est, truth in ((u, norm2), (s, trace), (raw, norm2 + trace / B)):
        assert abs(est.mean() - truth) < 4 * est.std() / math.sqrt(est.size), (est.mean(), truth)
    assert raw.mean() - norm2 > 10 * raw.std() / math.sqrt(raw.size)  # the raw is biased


def _teacher_student():
    from lossrate.experiments import load_config
    from lossrate.experiments.runner import load_data

    data = load_data(load_config("teacher_student_gd"))
    return data.x_train.double(), data.y_train.double().reshape(len(data.y_train), -1)


@pytest.mark.parametrize(("batch", "parts"), [(32, 2), (128, 2), (32, 4)])
def test_debiased_norm_covers_the_full_data_gradient_on_the_exact_case(batch, parts):
    """Teacher-student regression (configs/teacher_student_gd) trained with mini-batches
    split into ``parts`` gradient groups: the debiased ||grad L||^2 is within 2 standard
    errors of the full-data gradient norm at the same parameters on >= 90 % of the steps;
    the raw mini-batch value is not."""
    x, y = _teacher_student()
    n = len(y)
    torch.manual_seed(0)
    model = nn.Linear(x.shape[1], y.shape[1]).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    groups = GradientGroups(model, population=n)
    rows, order = NoiseRows(), torch.Generator().manual_seed(0)
    perm, pos, hits, raw_hits, checked = torch.randperm(n, generator=order), 0, 0, 0, 0
    for k in range(160):
        if pos + batch > n:
            perm, pos = torch.randperm(n, generator=order), 0
        idx = perm[pos : pos + batch]
        pos += batch
        full = float(_grad(model, x, y).square().sum())
        model.zero_grad()
        for part, w in GradientGroups.split(batch, parts):
            (nn.functional.mse_loss(model(x[idx][part]), y[idx][part]) * w).backward()
            groups.mark(part.stop - part.start)
        gs = gradient_metrics(model, opt, groups=groups)
        se = rows.row(k, groups=parts, batch_size=batch, grad_sq_raw=gs.grad_sq,
                      grad_sq=gs.grad_sq_debiased, pgrad_sq_raw=gs.pgrad_sq,
                      pgrad_sq=gs.pgrad_sq_debiased, trace_sigma=gs.trace_sigma,
                      ptrace_sigma=gs.ptrace_sigma)[5]  # fmt: skip
        opt.step()
        if k >= 10:
            checked += 1
            hits += abs(gs.grad_sq_debiased - full) <= 2 * se
            raw_hits += abs(gs.grad_sq - full) <= 2 * se
    assert hits / checked >= 0.9, hits / checked
    assert raw_hits / checked < 0.6, raw_hits / checked


def test_bad_use_of_groups_raises_clear_errors():
    model, x, y = _problem()
    groups = GradientGroups(model)
    model.zero_grad()
    nn.functional.mse_loss(model(x), y).backward()
    groups.mark(48)
    with pytest.raises(InvalidArgumentError, match="at least 2"):
        gradient_metrics(model, None, groups=groups)
    for b in (24, 24):
        groups.mark(b)  # two marks, then clipping by value changes .grad
    nn.utils.clip_grad_value_(model.parameters(), 1e-3)
    with pytest.raises(InvalidArgumentError, match="uniform rescale"):
        gradient_metrics(model, None, groups=groups)
    with pytest.raises(InvalidArgumentError, match="batch_size"):
        groups.mark(0)
    with pytest.raises(InvalidArgumentError, match="parts"):
        GradientGroups.split(10, parts=1)
    with pytest.raises(InvalidArgumentError, match="n=1"):
        GradientGroups.split(1)
    with pytest.raises(InvalidArgumentError, match="population"):
        GradientGroups(model, population=1)
    with pytest.raises(InvalidArgumentError, match="DistributedDataParallel"):
        DDPGradients(model)
    with pytest.raises(InvalidArgumentError, match="groups must be"):
        gradient_metrics(model, None, groups=object())


def test_recorder_writes_and_resumes_the_noise_file(tmp_path):
    model, x, y = _problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    crit = InstrumentedLoss("mse")
    groups = GradientGroups(model)

    def run(steps, resume=False):
        with Recorder(tmp_path, meta=RunMeta(loss="mse", classes=2), resume=resume) as rec:
            for k in steps:
                opt.zero_grad()
                for part, w in GradientGroups.split(48):
                    (crit(model(x[part]), y[part]) * w).backward()
                    groups.mark(24)
                gs = gradient_metrics(model, opt, groups=groups)
                opt.step()
                rec.log(step=k, loss=float(crit.last.loss), lr=0.05, grad=gs)
                if k == 4:
                    rec.flush()
                    return

    run(range(8))  # stops after step 4
    noise = read_gradient_noise(tmp_path)
    np.testing.assert_array_equal(noise.step, np.arange(5))
    traj = Trajectory.read(tmp_path / "trajectory.csv")
    np.testing.assert_array_equal(noise.grad_sq_raw, traj.grad_sq)
    assert (noise.grad_sq < noise.grad_sq_raw).all()
    assert np.isnan(noise.grad_sq_se[:2]).all() and np.isfinite(noise.grad_sq_se[2:]).all()
    with Recorder(tmp_path, resume=True, resume_step=3):
        pass
    np.testing.assert_array_equal(read_gradient_noise(tmp_path / "trajectory.csv").step, [0, 1, 2])
    (tmp_path / "gradient_noise.csv").unlink()
    with pytest.raises(DataError, match="GradientGroups"):
        read_gradient_noise(tmp_path)


def test_noise_scale_and_debiased_rates_from_the_columns():
    rows, out = NoiseRows(window=10), []
    rng = np.random.default_rng(0)
    for k in range(200):  # grad_sq 2, tr Sigma 200: B_noise = 100
        u, s = 2 + 0.2 * rng.standard_normal(), 200 + 20 * rng.standard_normal()
        out.append(rows.row(k, groups=2, batch_size=32, grad_sq_raw=u + s / 32, grad_sq=u,
                            pgrad_sq_raw=u + s / 32, pgrad_sq=u, trace_sigma=s,
                            ptrace_sigma=s))  # fmt: skip
    from lossrate.measured import GradientNoise

    noise = GradientNoise.from_rows(np.array(out))
    ns = noise_scale(noise)
    assert ns.lower < 100 < ns.upper and ns.estimate == pytest.approx(100, rel=0.05)
    assert ns.ratio == pytest.approx(32 / ns.estimate) and "0.33x B_noise" in ns.describe()
    covered = (noise.noise_scale_lo[20:] < 100) & (100 < noise.noise_scale_hi[20:])
    assert covered.mean() > 0.85
    with pytest.raises(InvalidArgumentError, match="last"):
        noise_scale(noise, last=0)
    traj = Trajectory.from_arrays(
        np.full(200, 1.0),
        lr=np.full(200, 0.1),
        residual_sq=np.full(200, 2.0),
        pgrad_sq=noise.pgrad_sq_raw,
    )
    raw = measured_rates(traj, MSE(a=0.5))
    deb = measured_rates(traj, MSE(a=0.5), noise)
    assert deb.debiased and not raw.debiased
    np.testing.assert_allclose(deb.phi_hat, noise.pgrad_sq / 2.0)
    np.testing.assert_allclose(raw.phi_hat, noise.pgrad_sq_raw / 2.0)


@pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="no gloo backend"
)
def test_ddp_per_rank_estimates_equal_one_process_fed_two_halves(tmp_path):
    job = Path(__file__).with_name("ddp_noise_job.py")
    out = tmp_path / "first"
    if subprocess.run([sys.executable, str(job), str(out)], timeout=120).returncode != 0:
        out = tmp_path / "again"  # gloo start-up/teardown aborts on a loaded machine; see above
        subprocess.run([sys.executable, str(job), str(out)], check=True, timeout=120)
    ddp, single = read_gradient_noise(out / "ddp"), read_gradient_noise(out / "single")
    assert ddp.step.size == single.step.size == 4
    np.testing.assert_array_equal(ddp.groups, 2)
    for name in ("grad_sq_raw", "grad_sq", "pgrad_sq", "trace_sigma", "ptrace_sigma"):
        a, b = getattr(ddp, name), getattr(single, name)
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9, err_msg=name)
    assert (np.abs(ddp.grad_sq - ddp.grad_sq_raw) > 1e-3).all()  # the debiasing did something


def test_lossrate_train_records_the_debiased_columns_with_gradient_groups(tmp_path):
    """train.gradient_groups = 2: the same updates (to rounding) as the plain run, plus
    gradient_noise.csv; 1 is refused with the key's name."""
    from lossrate.experiments import load_config, run_experiment

    cfg = load_config("teacher_student_gd").override(
        {"train.steps": 6, "train.batch_size": 32, "train.eval_every": 0}
    )
    run_experiment(cfg, tmp_path / "plain")
    run_experiment(cfg.override({"train.gradient_groups": 2}), tmp_path / "groups")
    plain = Trajectory.read(tmp_path / "plain" / "trajectory.csv")
    grouped = Trajectory.read(tmp_path / "groups" / "trajectory.csv")
    np.testing.assert_allclose(grouped.loss, plain.loss, rtol=1e-5)
    np.testing.assert_allclose(grouped.grad_sq, plain.grad_sq, rtol=1e-4)
    noise = read_gradient_noise(tmp_path / "groups")
    np.testing.assert_array_equal(noise.step, np.arange(6))
    np.testing.assert_array_equal(noise.groups, 2)
    assert np.isfinite(noise.grad_sq).all() and (noise.grad_sq < noise.grad_sq_raw).all()
    assert not (tmp_path / "plain" / "gradient_noise.csv").exists()
    with pytest.raises(InvalidArgumentError, match="gradient_groups"):
        cfg.override({"train.gradient_groups": 1})
    # a cadence: steps 0 and 3 split and measured, the others one backward pass; the
    # measured rows are those of the run measured at every step, the raw norms are complete
    cadence = cfg.override({"train.gradient_groups": 2, "train.gradient_groups_every": 3})
    run_experiment(cadence, tmp_path / "cadence")
    every3 = Trajectory.read(tmp_path / "cadence" / "trajectory.csv")
    np.testing.assert_allclose(every3.loss, plain.loss, rtol=1e-5)
    np.testing.assert_allclose(every3.grad_sq, plain.grad_sq, rtol=1e-4)
    sparse = read_gradient_noise(tmp_path / "cadence")
    np.testing.assert_array_equal(sparse.step, [0, 3])
    for name in ("grad_sq_raw", "grad_sq", "pgrad_sq", "trace_sigma"):
        a, b = getattr(sparse, name), getattr(noise, name)[[0, 3]]
        np.testing.assert_allclose(a, b, rtol=1e-4, err_msg=name)
    with pytest.raises(InvalidArgumentError, match="gradient_groups_every"):
        cfg.override({"train.gradient_groups_every": 0})
