"""The fused paths of lossrate.torch.groups against plain reference computations: update_dot
(one flat copy of the parameters, or one dot per parameter for mixed dtypes)."""

from __future__ import annotations

import math

import pytest
import torch
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
