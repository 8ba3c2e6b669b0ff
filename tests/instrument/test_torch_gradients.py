"""gradient_metrics against the optimizer's real step.

The identity used: for the P an optimizer applies, the real step Delta theta satisfies
pgrad_sq = -<grad, Delta theta> / lr. It is exact for SGD without momentum, Adam/AdamW
with beta1 = 0 (every step) or at the first step, RMSprop and Adagrad without momentum
(no weight decay, or decoupled weight decay with its term subtracted). For SGD with momentum
and Adam with beta1 > 0 it holds exactly under a constant gradient (Adam at every step,
heavy ball in the limit: the flow-limit convention P = I / (1 - mu)).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from lossrate import InvalidArgumentError
from lossrate.torch import GradStats, gradient_metrics, register_preconditioner

pytestmark = pytest.mark.torch


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def _batch(k):
    g = torch.Generator().manual_seed(100 + k)
    return torch.randn(16, 6, generator=g, dtype=torch.float64), torch.randint(
        0, 3, (16,), generator=g
    )


def _applied(model, opt, steps, *, lr, decoupled_wd=0.0):
    """For each step: (gradient_metrics, -<g, Delta theta>/lr, grad_sq by hand)."""
    out = []
    for k in range(steps):
        x, y = _batch(k)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        gs = gradient_metrics(model, opt)
        before = [p.detach().clone() for p in model.parameters()]
        grads = [p.grad.detach().clone() for p in model.parameters()]
        opt.step()
        applied = sum(
            -(g * (p.detach() - b)).sum().item()
            for g, p, b in zip(grads, model.parameters(), before)
        )
        # decoupled weight decay moves theta by -lr wd theta, outside P
        applied = applied / lr - decoupled_wd * sum(
            (g * b).sum().item() for g, b in zip(grads, before)
        )
        out.append((gs, applied, sum(g.square().sum().item() for g in grads)))
    return out


@pytest.mark.parametrize(
    ("make", "steps"),
    [
        (lambda p: torch.optim.SGD(p, lr=0.1), 5),
        (lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.0, 0.99)), 5),
        (lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.9, 0.999)), 1),
        (lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.0, 0.9), amsgrad=True), 5),
        (lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.9), 5),
        (lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.9, centered=True), 5),
        (lambda p: torch.optim.Adagrad(p, lr=0.1, lr_decay=0.3, initial_accumulator_value=0.2), 5),
    ],
    ids=[
        "sgd",
        "adam-beta1=0",
        "adam-first-step",
        "adam-amsgrad",
        "rmsprop",
        "rmsprop-centered",
        "adagrad",
    ],
)
def test_pgrad_equals_the_real_step(make, steps):
    model = _model()
    opt = make(model.parameters())
    for gs, applied, grad_sq in _applied(model, opt, steps, lr=opt.param_groups[0]["lr"]):
        assert gs.grad_sq == pytest.approx(grad_sq, rel=1e-12)
        assert gs.pgrad_sq == pytest.approx(applied, rel=1e-9)


@pytest.mark.parametrize(
    "make",
    [
        lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.0, 0.9), weight_decay=0.1),
        lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.9, centered=True, weight_decay=0.05),
        lambda p: torch.optim.Adagrad(p, lr=0.1, weight_decay=0.2),
    ],
    ids=["adam", "rmsprop-centered", "adagrad"],
)
def test_l2_weight_decay_enters_the_state_not_the_task_gradient(make):
    """With L2 decay the optimizer steps along P (g + wd theta), and its state accumulates
    g + wd theta. The P it applies is read off the real step elementwise,
    P = -Delta theta / (lr (g + wd theta)), and pgrad_sq must be g^T P g."""
    model = _model()
    opt = make(model.parameters())
    lr, wd = opt.param_groups[0]["lr"], opt.param_groups[0]["weight_decay"]
    for k in range(4):
        x, y = _batch(k)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        gs = gradient_metrics(model, opt)
        before = [p.detach().clone() for p in model.parameters()]
        grads = [p.grad.detach().clone() for p in model.parameters()]
        opt.step()
        gpg = sum(
            (g * g * (-(p.detach() - b) / (lr * (g + wd * b)))).sum().item()
            for g, p, b in zip(grads, model.parameters(), before)
        )
        assert gs.pgrad_sq == pytest.approx(gpg, rel=1e-8)


def test_adamw_decoupled_weight_decay():
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=0.01, betas=(0.0, 0.99), weight_decay=0.5)
    for gs, applied, _ in _applied(model, opt, 4, lr=0.01, decoupled_wd=0.5):
        assert gs.pgrad_sq == pytest.approx(applied, rel=1e-9)


def _constant_gradient_problem():
    """L = c . theta: the gradient is c at every step."""
    theta = nn.Parameter(torch.zeros(5, dtype=torch.float64))
    c = torch.tensor([1.0, -2.0, 0.5, 3.0, -0.1], dtype=torch.float64)
    return theta, c


@pytest.mark.parametrize(
    ("kwargs", "factor"),
    [
        ({"momentum": 0.9}, 1 / 0.1),
        ({"momentum": 0.9, "nesterov": True}, 1 / 0.1),
        ({"momentum": 0.8, "dampening": 0.5}, 0.5 / 0.2),
    ],
)
def test_sgd_momentum_is_the_flow_limit(kwargs, factor):
    theta, c = _constant_gradient_problem()
    opt = torch.optim.SGD([theta], lr=0.01, **kwargs)
    for _ in range(300):
        opt.zero_grad()
        (c * theta).sum().backward()
        gs = gradient_metrics([theta], opt)
        before = theta.detach().clone()
        opt.step()
        applied = -(c * (theta.detach() - before)).sum().item() / 0.01
    assert gs.pgrad_sq == pytest.approx(factor * c.square().sum().item(), rel=1e-12)
    assert applied == pytest.approx(gs.pgrad_sq, rel=1e-9)  # the buffer has converged


def test_adam_with_momentum_under_a_constant_gradient_is_exact_every_step():
    theta, c = _constant_gradient_problem()
    opt = torch.optim.Adam([theta], lr=0.01, betas=(0.9, 0.999))
    for _ in range(10):
        opt.zero_grad()
        (c * theta).sum().backward()
        gs = gradient_metrics([theta], opt)
        before = theta.detach().clone()
        opt.step()
        applied = -(c * (theta.detach() - before)).sum().item() / 0.01
        assert gs.pgrad_sq == pytest.approx(applied, rel=1e-9)


def test_param_groups_with_different_learning_rates():
    """pgrad_sq is relative to group 0's lr: lr_0 pgrad_sq = sum_g lr_g g^T P_g g."""
    model = _model()
    first, second = list(model[0].parameters()), list(model[2].parameters())
    opt = torch.optim.SGD([{"params": first}, {"params": second, "lr": 0.3}], lr=0.1)
    (gs, applied, grad_sq), *_ = _applied(model, opt, 1, lr=0.1)
    assert gs.pgrad_sq == pytest.approx(applied, rel=1e-9)
    assert gs.pgrad_sq > grad_sq


def test_the_optimizer_state_is_not_changed():
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=0.01, amsgrad=True)
    _applied(model, opt, 2, lr=0.01)
    x, y = _batch(9)
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    state = copy.deepcopy(opt.state_dict())
    gradient_metrics(model, opt)
    after = opt.state_dict()
    for key, values in state["state"].items():
        for name, value in values.items():
            torch.testing.assert_close(after["state"][key][name], value, rtol=0, atol=0)


def test_without_an_optimizer_and_with_param_groups():
    model = _model()
    x, y = _batch(0)
    nn.functional.cross_entropy(model(x), y).backward()
    gs = gradient_metrics(model)
    assert isinstance(gs, GradStats) and math.isnan(gs.pgrad_sq)
    expected = sum(p.grad.square().sum().item() for p in model.parameters())
    assert gs.grad_sq == pytest.approx(expected, rel=1e-12)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    assert gradient_metrics(opt.param_groups).grad_sq == pytest.approx(expected, rel=1e-12)


def test_a_wrapped_optimizer_is_unwrapped():
    class Wrapper(torch.optim.Optimizer):  # like accelerate's AcceleratedOptimizer
        def __init__(self, optimizer):
            self.optimizer = optimizer

        @property
        def param_groups(self):
            return self.optimizer.param_groups

    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.5)
    x, y = _batch(0)
    nn.functional.cross_entropy(model(x), y).backward()
    assert gradient_metrics(model, Wrapper(opt)) == gradient_metrics(model, opt)


def test_errors_name_the_fix():
    model = _model()
    with pytest.raises(InvalidArgumentError, match=r"after loss\.backward\(\)"):
        gradient_metrics(model, torch.optim.SGD(model.parameters(), lr=0.1))
    x, y = _batch(0)
    nn.functional.cross_entropy(model(x), y).backward()
    with pytest.raises(InvalidArgumentError, match="register_preconditioner"):
        gradient_metrics(model, torch.optim.Adamax(model.parameters()))
    with pytest.raises(InvalidArgumentError, match="maximize"):
        gradient_metrics(model, torch.optim.SGD(model.parameters(), lr=0.1, maximize=True))
    with pytest.raises(InvalidArgumentError, match=r"nn\.Module or an iterable"):
        gradient_metrics(3)
    with pytest.raises(InvalidArgumentError, match="Optimizer subclass"):
        register_preconditioner(int, lambda *a: 1.0)


def test_a_registered_rule_is_used():
    class Scaled(torch.optim.SGD):
        pass

    register_preconditioner(Scaled, lambda group, state, p, g: 2.0)
    model = _model()
    x, y = _batch(0)
    nn.functional.cross_entropy(model(x), y).backward()
    gs = gradient_metrics(model, Scaled(model.parameters(), lr=0.1))
    assert gs.pgrad_sq == pytest.approx(2 * gs.grad_sq, rel=1e-12)
