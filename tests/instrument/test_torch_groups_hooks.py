"""GradientGroups takes each micro-batch's increment from autograd (a parameter hook) instead
of differencing copies of ``.grad``: the estimates equal the formulas on independently
computed group gradients, parameters a micro-batch does not reach add a zero increment, and
misuse between marks is refused."""

from __future__ import annotations

import gc
import math

import pytest
import torch
from torch import nn

from lossrate import InvalidArgumentError
from lossrate.measured import group_estimates
from lossrate.torch import GradientGroups, gradient_metrics

pytestmark = pytest.mark.torch


class _TwoHeads(nn.Module):
    """A trunk and two heads; a micro-batch may use one head only."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Linear(5, 4).double()
        self.heads = nn.ModuleList([nn.Linear(4, 2).double(), nn.Linear(4, 2).double()])

    def forward(self, x: torch.Tensor, heads=(0, 1)) -> torch.Tensor:
        h = torch.tanh(self.trunk(x))
        return sum(self.heads[k](h) for k in heads)


def _flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])


def test_estimates_equal_the_formulas_with_a_parameter_missing_from_a_micro_batch():
    torch.manual_seed(0)
    model = _TwoHeads()
    x, y = torch.randn(30, 5, dtype=torch.float64), torch.randn(30, 2, dtype=torch.float64)
    plan = [(slice(0, 10), (0, 1)), (slice(10, 22), (0,)), (slice(22, 30), (0, 1))]
    # the group gradients w_k G_k, each on its own
    incs = []
    for part, heads in plan:
        model.zero_grad(set_to_none=False)
        w = (part.stop - part.start) / 30
        (nn.functional.mse_loss(model(x[part], heads), y[part]) * w).backward()
        incs.append(_flat(model).clone())
    groups = GradientGroups(model)
    model.zero_grad()
    for part, heads in plan:
        w = (part.stop - part.start) / 30
        (nn.functional.mse_loss(model(x[part], heads), y[part]) * w).backward()
        groups.mark(part.stop - part.start)
    got = gradient_metrics(model, None, groups=groups)
    total = torch.stack(incs).sum(0)
    sizes = [p.stop - p.start for p, _ in plan]
    ws = [b / 30 for b in sizes]
    u, s = group_estimates(
        total_sq=float(total @ total),
        sum_w2=sum(w * w for w in ws),
        sum_group_sq=sum(float(i @ i) for i in incs),
        groups=3,
        sum_b=30.0,
        sum_b_group_sq=sum(b * float(i @ i) / w**2 for b, i, w in zip(sizes, incs, ws)),
    )
    assert got.grad_sq == pytest.approx(float(total @ total), rel=1e-12)
    assert got.grad_sq_debiased == pytest.approx(u, rel=1e-9)
    assert got.trace_sigma == pytest.approx(s, rel=1e-9)


def _step(model, groups, x, y, *, between=None):
    model.zero_grad()
    for k, part in enumerate((slice(0, 8), slice(8, 16))):
        if k and between is not None:
            between()
        (nn.functional.mse_loss(model(x[part]), y[part]) * 0.5).backward()
        groups.mark(8)


def test_misuse_between_marks_is_refused():
    torch.manual_seed(1)
    model = nn.Linear(3, 2).double()
    x, y = torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 2, dtype=torch.float64)
    groups = GradientGroups(model)
    model.zero_grad()
    nn.functional.mse_loss(model(x[:8]), y[:8]).backward()
    groups.mark(8)
    for _ in range(2):  # two micro-batches, one mark
        nn.functional.mse_loss(model(x[8:]), y[8:]).backward()
    with pytest.raises(InvalidArgumentError, match="two backward"):
        groups.mark(8)
    groups.reset()

    def clip() -> None:  # a per-micro-batch edit of .grad
        nn.utils.clip_grad_norm_(model.parameters(), 1e-3)

    with pytest.raises(InvalidArgumentError, match=r"between two groups\.mark"):
        _step(model, groups, x, y, between=clip)
    groups.reset()
    _step(model, groups, x, y)  # and the object still works afterwards
    assert gradient_metrics(model, None, groups=groups).groups == 2


def test_hooks_go_with_the_object():
    model = nn.Linear(3, 2).double()
    groups = GradientGroups(model)
    assert all(len(p._backward_hooks) == 1 for p in model.parameters())
    del groups
    gc.collect()
    assert all(not p._backward_hooks for p in model.parameters())


def test_an_occasional_rescale_after_plain_steps_is_recorded_as_not_measured():
    """After a step read with .grad unchanged, .grad's norms are no longer taken at the
    marks: a rescale then makes that step's debiased columns NaN (never a wrong number) and
    turns them back on, so the next rescaled step is carried over exactly."""
    torch.manual_seed(2)
    model = nn.Linear(4, 3).double()
    x, y = torch.randn(16, 4, dtype=torch.float64), torch.randn(16, 3, dtype=torch.float64)
    groups = GradientGroups(model)

    def clip() -> None:
        nn.utils.clip_grad_norm_(model.parameters(), 1e-3)

    def read(after=None):
        _step(model, groups, x, y)
        if after is not None:
            after()
        return gradient_metrics(model, None, groups=groups)

    plain = read()
    assert math.isfinite(plain.grad_sq_debiased)
    assert math.isnan(read(clip).grad_sq_debiased)  # norms were off: not measured
    clipped = read(clip)  # back on: carried over
    c2 = clipped.grad_sq / plain.grad_sq
    assert clipped.grad_sq_debiased == pytest.approx(c2 * plain.grad_sq_debiased, rel=1e-9)
    assert clipped.trace_sigma == pytest.approx(c2 * plain.trace_sigma, rel=1e-9)
