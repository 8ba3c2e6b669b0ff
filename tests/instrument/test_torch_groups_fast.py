"""The fused paths of lossrate.torch.groups against plain reference computations: update_dot
(one flat copy of the parameters, or one dot per parameter for mixed dtypes), and DDPGradients
keeping norms only (no copy of the bucket) for SGD's P = c I against one process fed the same
global batches in two halves."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

from lossrate.torch import GradientGroups, gradient_metrics

pytestmark = pytest.mark.torch


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1).double() for t in tensors])


@pytest.mark.parametrize("dtypes", ["float64", "float32", "mixed"])
@pytest.mark.parametrize("second_order", [True, False])
def test_update_dot_is_the_previous_update_against_this_gradient(dtypes, second_order):
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 2))
    if dtypes == "float64":
        model.double()
    elif dtypes == "mixed":  # one float64 layer: the per-parameter dots
        model[2].double()
    dt = torch.float64 if dtypes != "float32" else torch.float32
    x, y = torch.randn(24, 5, dtype=dt), torch.randn(24, 2, dtype=torch.float64)

    def forward(part: slice) -> torch.Tensor:
        h = model[1](model[0](x[part].to(model[0].weight.dtype)))
        return model[2](h.to(model[2].weight.dtype)).double()

    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.5)
    groups = GradientGroups(model, second_order=second_order)
    prev = None
    for step in range(4):
        opt.zero_grad()
        for part, w in GradientGroups.split(24, 3):
            (nn.functional.mse_loss(forward(part), y[part]) * w).backward()
            groups.mark(part.stop - part.start)
        theta = _flat(model.parameters())
        grad = _flat(p.grad for p in model.parameters())
        got = gradient_metrics(model, opt, groups=groups).update_dot
        if not second_order or prev is None:
            assert math.isnan(got)
        else:
            want = float((theta - prev) @ grad)
            tol = 1e-12 if dtypes == "float64" else 1e-5
            assert got == pytest.approx(want, rel=tol, abs=1e-12), (step, got, want)
        prev = theta
        opt.step()


@pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="no gloo backend"
)
def test_ddp_norms_without_a_copy_equal_one_process_fed_two_halves(tmp_path):
    """SGD with momentum and two lr groups (norms only), then Adam (its first step has no
    copy: NaN P columns on both sides, as GradientGroups without its buffer; then copies)."""
    job = Path(__file__).with_name("ddp_groups_job.py")
    out = tmp_path / "first.json"
    if subprocess.run([sys.executable, str(job), str(out)], timeout=120).returncode != 0:
        out = tmp_path / "again.json"  # gloo start-up/teardown aborts on a loaded machine
        subprocess.run([sys.executable, str(job), str(out)], check=True, timeout=120)
    got = json.loads(out.read_text())
    assert len(got["ddp"]) == len(got["single"]) == 6
    for step, (a, b) in enumerate(zip(got["ddp"], got["single"])):
        for name, u, v in zip(("grad_sq", "pgrad_sq", "u", "up", "s", "sp", "K", "B", "ud"), a, b):
            if step == 3 and name in ("up", "sp"):  # P turned per-entry: not measured
                assert math.isnan(u) and math.isnan(v)
            elif name == "ud" and step == 0:
                assert math.isnan(u) and math.isnan(v)
            else:
                assert u == pytest.approx(v, rel=1e-9, abs=1e-12), (step, name, u, v)
