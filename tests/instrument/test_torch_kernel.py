"""kernel_trace (K^2) against a loop of ordinary backward passes, one per output component."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lossrate import InvalidArgumentError
from lossrate.torch import gradient_metrics, kernel_trace
from lossrate.torch.gradients import preconditioned_grads

pytestmark = pytest.mark.torch


def _model():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 3)).double()


def _by_loop(model, x, weights):
    """(1/m) sum_i sum_c sum_j (d z_ic / d theta_j)^2 P_j with autograd, eval mode."""
    model.eval()
    total = 0.0
    for i in range(x.shape[0]):
        z = model(x[i : i + 1])[0]
        for c in range(z.shape[0]):
            grads = torch.autograd.grad(z[c], list(weights), retain_graph=True)
            for g, P in zip(grads, weights.values()):
                total += (g.square() * P).sum().item()
    model.train()
    return total / x.shape[0]


def test_identity_preconditioner():
    model = _model()
    x = torch.randn(5, 4, dtype=torch.float64)
    expected = _by_loop(model, x, {p: 1.0 for p in model.parameters()})
    assert kernel_trace(model, x) == pytest.approx(expected, rel=1e-10)
    assert kernel_trace(model, torch.cat([x, x]), max_samples=5) == pytest.approx(
        expected, rel=1e-10
    )


def test_adam_preconditioner_and_frozen_parameters():
    model = _model()
    model[0].bias.requires_grad_(False)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.01)
    x = torch.randn(8, 4, dtype=torch.float64)
    nn.functional.cross_entropy(model(x), torch.randint(0, 3, (8,))).backward()
    weights = {p: P for p, _, P in preconditioned_grads(opt)}
    expected = _by_loop(model, x[:3], weights)
    assert kernel_trace(model, x, optimizer=opt, max_samples=3) == pytest.approx(
        expected, rel=1e-10
    )
    gradient_metrics(model, opt)  # the state is untouched: the optimizer still steps normally
    opt.step()


def test_buffers_and_mode_are_left_alone():
    model = _model()
    x = torch.randn(6, 4, dtype=torch.float64)
    model(x)  # some running statistics
    before = {k: v.clone() for k, v in model.state_dict().items()}
    kernel_trace(model, x)
    assert model.training
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_bad_arguments():
    model = _model()
    with pytest.raises(InvalidArgumentError, match="max_samples"):
        kernel_trace(model, torch.randn(2, 4), max_samples=0)
    with pytest.raises(InvalidArgumentError, match="non-empty batch"):
        kernel_trace(model, torch.randn(0, 4))
    with pytest.raises(InvalidArgumentError, match="no parameter"):
        kernel_trace(
            model,
            torch.randn(2, 4, dtype=torch.float64),
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        )
