"""The measurement cadence of the gradient groups (``every=N``): a measured step gives what
``every=1`` gives at that step (its update_dot included), the other steps compute nothing
and return None, and a run recorded so (NaN gradient columns between the measured rows)
still reads, replays and starts the ODE fit from its measured rows.

Run as a script (``python test_cadence.py OUT.json``) this file is the two-rank DDP job of
``test_ddp_cadence_measures_what_every_step_measures`` (gloo, as ddp_groups_job.py).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn

import lossrate
from lossrate import InvalidArgumentError, RunMeta
from lossrate.torch import GradientGroups, InstrumentedLoss, Recorder, gradient_metrics
from lossrate.torch.losses import BatchStats

pytestmark = pytest.mark.torch

SIZES = (6, 10, 8)  # unequal micro-batches: the per-entry buffer over b_k is formed too


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def _batch(step: int, n: int = sum(SIZES)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(step)
    x = torch.randn(n, 5, generator=g, dtype=torch.float64)
    return x, torch.randint(0, 3, (n,), generator=g)


def _optimizer(name: str, model: nn.Module) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.5)
    return torch.optim.Adam(model.parameters(), lr=0.02)


def _same(got: tuple, want: tuple, rel: float = 1e-12) -> None:
    for name, a, b in zip(("grad_sq", "pgrad_sq", "u", "up", "s", "sp", "K", "B", "ud"), got, want):
        if math.isnan(b):
            assert math.isnan(a), (name, a, b)
        else:
            assert a == pytest.approx(b, rel=rel, abs=1e-15), (name, a, b)


@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
def test_measured_steps_equal_every_step_and_the_others_compute_nothing(opt_name, monkeypatch):
    """every=3 against every=1 fed the same gradients (two copies of the model, trained
    alike): steps 0, 3, 6 identical GradStats; steps 1, 2, 4, 5, 7 None, with no norm taken
    (torch._foreach_norm is counted) and no increment kept by the hooks."""
    ref_model, model = _net(), _net()
    ref_opt, opt = _optimizer(opt_name, ref_model), _optimizer(opt_name, model)
    ref, groups = GradientGroups(ref_model), GradientGroups(model, every=3)
    assert groups.every == 3
    calls = [0]
    foreach_norm = torch._foreach_norm

    def counted(*args, **kwargs):
        calls[0] += 1
        return foreach_norm(*args, **kwargs)

    monkeypatch.setattr(torch, "_foreach_norm", counted)
    measured = []
    for k in range(8):
        x, y = _batch(k)
        ref_opt.zero_grad()
        opt.zero_grad()
        assert groups.measuring == (k % 3 == 0)
        taken = 0  # norms the every=3 groups take at this step
        start = 0
        for b in SIZES:
            part = slice(start, start + b)
            start += b
            w = b / sum(SIZES)
            (nn.functional.cross_entropy(ref_model(x[part]), y[part]) * w).backward()
            (nn.functional.cross_entropy(model(x[part]), y[part]) * w).backward()
            ref.mark(b)
            before = calls[0]
            groups.mark(b)
            taken += calls[0] - before
        assert groups.groups == len(SIZES)
        if k % 3:  # the hooks kept no increment, the marks no norm and no buffer
            assert all(inc is None for inc in groups._incoming)
            assert groups._norms == [] and groups._sq_b is None
        want = gradient_metrics(ref_model, ref_opt, groups=ref)
        before = calls[0]
        got = gradient_metrics(model, opt, groups=groups)
        taken += calls[0] - before
        if k % 3:
            assert got is None and taken == 0
        else:
            assert taken > 0
            _same(dataclasses.astuple(got), dataclasses.astuple(want))
            measured.append(got.update_dot)
        assert groups.groups == 0  # the read reset it
        ref_opt.step()
        opt.step()
    # the first step has no previous update; steps 3 and 6 the update of steps 2 and 5
    assert math.isnan(measured[0]) and all(math.isfinite(u) for u in measured[1:])
    for p, q in zip(ref_model.parameters(), model.parameters()):
        assert torch.equal(p, q)  # the cadence changed nothing in training


def test_a_step_reset_instead_of_read_before_a_measured_one_leaves_update_dot_nan():
    """The copy of the parameters is taken by the read of the step before a measured one; a
    reset() there (a skipped step) leaves none, so that update_dot is NaN, not an update
    over several steps; the next measured step after a read has it again."""
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    groups = GradientGroups(model, every=2)
    got = []
    for k in range(5):
        opt.zero_grad()
        x, y = _batch(k, 16)
        for part, w in GradientGroups.split(16, 2):
            (nn.functional.cross_entropy(model(x[part]), y[part]) * w).backward()
            groups.mark(part.stop - part.start)
        if k == 1:
            groups.reset()
        else:
            got.append(gradient_metrics(model, opt, groups=groups))
        opt.step()
    assert [g is None for g in got] == [False, False, True, False]  # steps 0, 2, 3, 4
    assert math.isnan(got[0].update_dot) and math.isnan(got[1].update_dot)
    assert math.isfinite(got[3].update_dot)


def _step_log(tmp_path, **debias):
    """The callbacks' shared step log, with the given debias options."""
    from lossrate.torch.callbacks import _StepLog

    return _StepLog(
        tmp_path,
        None,
        criterion=None,
        gradients=True,
        flush_every=50,
        resume=False,
        energy=None,
        **debias,
    )


@pytest.mark.parametrize("bad", [0, -2, 2.0, True, "3", None])
def test_a_bad_cadence_is_refused_naming_the_argument_and_the_fix(bad, tmp_path):
    with pytest.raises(InvalidArgumentError, match=r"every must be an integer >= 1") as err:
        GradientGroups(_net(), every=bad)
    assert repr(bad) in str(err.value) and "every=10" in str(err.value)
    with pytest.raises(InvalidArgumentError, match=r"debias_every must be an integer >= 1"):
        _step_log(tmp_path, debias="accumulation", debias_every=bad)


def test_debias_every_needs_debias(tmp_path):
    with pytest.raises(InvalidArgumentError, match=r"debias_every=4 .* needs debias="):
        _step_log(tmp_path, debias_every=4)


def _record(run_dir: Path, steps: int, every: int) -> None:
    """A small CE run, 3 micro-batches per step, recorded as the callbacks do."""
    g = torch.Generator().manual_seed(1)
    X = torch.randn(512, 6, generator=g)
    Y = (X[:, 0] + 0.5 * X[:, 1] > 0).long() + (X[:, 2] > 1).long()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
    crit = InstrumentedLoss("ce")
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    groups = GradientGroups(model, every=every)
    with Recorder(run_dir, RunMeta(loss="ce", classes=3, optimizer="sgd")) as rec:
        for k in range(steps):
            idx = torch.randint(0, 512, (48,), generator=g)
            x, y = X[idx], Y[idx]
            opt.zero_grad()
            stats = []
            for part, w in GradientGroups.split(48, 3):
                (crit(model(x[part]), y[part]) * w).backward()
                groups.mark(part.stop - part.start)
                stats.append(crit.last)
            gs = gradient_metrics(model, opt, groups=groups)
            opt.step()
            rec.log(step=k, lr=0.2, batch=BatchStats.combine(stats), grad=gs)


def test_a_run_recorded_every_4_steps_reads_replays_and_starts_the_fit(tmp_path):
    from lossrate._model import RunData
    from lossrate.closures import get_closure
    from lossrate.fitting.ode_models import _measured_phi
    from lossrate.measured import measured_rates, read_gradient_noise
    from lossrate.replay import replay

    steps = 120
    _record(tmp_path, steps, every=4)
    traj = lossrate.read_log(tmp_path / "trajectory.csv")
    noise = read_gradient_noise(tmp_path)
    on = np.arange(steps) % 4 == 0
    np.testing.assert_array_equal(noise.step, np.arange(0, steps, 4))  # one row per measured
    assert np.isfinite(traj.loss).all() and np.isfinite(traj.residual_sq).all()
    for col in (traj.grad_sq, traj.pgrad_sq, traj.pgrad_sq_debiased):
        assert np.isfinite(col[on]).all() and np.isnan(col[~on]).all()
    assert np.isnan(noise.update_dot[0]) and np.isfinite(noise.update_dot[1:]).all()
    rates = measured_rates(traj, get_closure("ce", classes=3), noise)
    assert np.isfinite(rates.phi_hat[on]).all() and np.isnan(rates.phi_hat[~on]).all()
    # the ODE fit's measured start bins the debiased rows
    _, phi, source = _measured_phi(RunData.from_trajectory(traj), get_closure("ce", classes=3).g)
    assert source == "debiased" and len(phi) >= 5 and np.isfinite(phi).all() and (phi > 0).all()
    # replay smooths over the measured rows; its second-order curve needs two consecutive
    # measured steps, so it is left out
    r = replay(tmp_path)
    assert r.debiased and np.isfinite(r.loss).all() and np.isfinite(r.phi_hat).all()
    assert r.loss_second is None and r.loss_noise is not None
    assert r.error("loss")[0] < 0.5  # the measured rate accounts for the observed decrease


# ------------------------------------------------------------------------------------ DDP
@pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="no gloo backend"
)
def test_ddp_cadence_measures_what_every_step_measures(tmp_path):
    """Two gloo ranks, two DDP copies of one model trained alike (Adam: the bucket copies
    too), DDPGradients(every=1) and (every=3): the same GradStats at steps 0, 3, 6; at the
    others None, and the comm hook kept no norm and no copy."""
    out = tmp_path / "first.json"
    this = Path(__file__)
    if subprocess.run([sys.executable, str(this), str(out)], timeout=120).returncode != 0:
        out = tmp_path / "again.json"  # gloo start-up/teardown aborts on a loaded machine
        subprocess.run([sys.executable, str(this), str(out)], check=True, timeout=120)
    got = json.loads(out.read_text())
    assert got["skipped_clean"] == [True] * 4  # steps 1, 2, 4, 5
    assert [s is None for s in got["every3"]] == [k % 3 != 0 for k in range(7)]
    for k in (0, 3, 6):
        _same(got["every3"][k], got["every1"][k], rel=1e-12)
    assert math.isfinite(got["every3"][3][-1]) and math.isfinite(got["every3"][6][-1])
    assert got["params_equal"]


def _ddp_worker(rank: int, port: int, path: str) -> None:
    from lossrate.torch import DDPGradients

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        models = [nn.parallel.DistributedDataParallel(_net()) for _ in range(2)]
        groups = [DDPGradients(models[0]), DDPGradients(models[1], every=3)]
        opts = [torch.optim.Adam(m.parameters(), lr=0.02) for m in models]
        out: dict = {"every1": [], "every3": [], "skipped_clean": []}
        for k in range(7):
            x, y = _batch(k, 16)
            part = slice(8 * rank, 8 * rank + 8)
            for m, grp, opt in zip(models, groups, opts):
                opt.zero_grad()
                nn.functional.cross_entropy(m(x[part]), y[part]).backward()
                if grp.every == 3 and not grp.measuring:
                    out["skipped_clean"].append(grp._norms == {} and grp._local == {})
                grp.mark(8)
                gs = gradient_metrics(m, opt, groups=grp)
                out[f"every{grp.every}"].append(None if gs is None else dataclasses.astuple(gs))
                opt.step()
        out["params_equal"] = all(
            torch.equal(p, q) for p, q in zip(models[0].parameters(), models[1].parameters())
        )
        if rank == 0:
            with open(path, "w") as f:
                json.dump(out, f)
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    import torch.multiprocessing as mp

    torch.set_num_threads(1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(free, sys.argv[1]), nprocs=2, join=True)
