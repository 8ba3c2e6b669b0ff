"""InstrumentedLoss: every recorded statistic against an independent computation.

References: per-sample losses by a Python loop over samples with the reducing torch loss,
r_i = d l_i / d z_i by autograd on each sample separately (torch.func.grad under vmap), the
population std with numpy, alpha_eff = sum ||r||^2 / sum (1 - e^{-l})^2 with numpy.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import grad, vmap

from lossrate import InvalidArgumentError
from lossrate.torch import BatchStats, InstrumentedLoss

pytestmark = pytest.mark.torch


def _reference(sample_loss, z, y, ce: bool):
    """(per-sample losses, ||r_i||^2) by autograd on each sample alone, in float64."""
    z64 = z.detach().double()
    y64 = y.double() if y.is_floating_point() else y
    losses = torch.stack([sample_loss(z64[i], y64[i]) for i in range(z.shape[0])])
    r = vmap(grad(sample_loss))(z64, y64)
    rsq = r.reshape(r.shape[0], -1).square().sum(1)
    return losses.numpy(), rsq.numpy()


def _check(stats: BatchStats, losses: np.ndarray, rsq: np.ndarray, ce: bool, rtol=1e-5):
    assert stats.batch_size == losses.size
    assert stats.loss == pytest.approx(losses.mean(), rel=rtol, abs=1e-7)
    assert stats.loss_std == pytest.approx(losses.std(ddof=0), rel=rtol, abs=1e-7)
    assert stats.residual_sq == pytest.approx(rsq.mean(), rel=rtol, abs=1e-9)
    if ce:
        q = -np.expm1(-losses)
        assert stats.alpha_eff == pytest.approx(rsq.sum() / (q**2).sum(), rel=rtol)
    else:
        assert math.isnan(stats.alpha_eff)


def _ce_sample(eps=0.0):
    def f(zi, yi):
        return nn.functional.cross_entropy(zi.unsqueeze(0), yi.unsqueeze(0), label_smoothing=eps)

    return f


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_ce_hard_labels(gen, eps):
    z = torch.randn(64, 7, generator=gen) * 3
    y = torch.randint(0, 7, (64,), generator=gen)
    crit = InstrumentedLoss("ce", label_smoothing=eps)
    loss = crit(z, y)
    assert loss.item() == pytest.approx(
        nn.CrossEntropyLoss(label_smoothing=eps)(z, y).item(), rel=1e-6
    )
    _check(crit.last, *_reference(_ce_sample(eps), z, y, True), ce=True)


@pytest.mark.parametrize("C", [3, 40])  # both softmax code paths (C < 16 transposed)
def test_ce_soft_targets_and_class_counts(gen, C):
    z = torch.randn(32, C, generator=gen)
    y = torch.softmax(torch.randn(32, C, generator=gen), 1)
    crit = InstrumentedLoss("ce", label_smoothing=0.05)
    crit(z, y)
    _check(crit.last, *_reference(_ce_sample(0.05), z, y, True), ce=True)


def test_ce_k_dimensional_and_ignore_index(gen):
    """(N, C, T) logits: every position is a sample; ignored positions leave every statistic."""
    z = torch.randn(4, 5, 6, generator=gen)
    y = torch.randint(0, 5, (4, 6), generator=gen)
    y[0, :3] = -100
    crit = InstrumentedLoss("ce", ignore_index=-100)
    zg = z.clone().requires_grad_()
    loss = crit(zg, y)
    assert loss.item() == pytest.approx(nn.CrossEntropyLoss()(z, y).item(), rel=1e-6)
    loss.backward()
    expected = torch.func.grad(lambda w: nn.functional.cross_entropy(w, y))(z)
    torch.testing.assert_close(zg.grad, expected)
    zf, yf = z.movedim(1, -1).reshape(-1, 5), y.reshape(-1)
    keep = yf != -100
    _check(crit.last, *_reference(_ce_sample(), zf[keep], yf[keep], True), ce=True)
    assert crit.last.batch_size == 21


def test_ce_tiny_loss_keeps_relative_accuracy():
    """Margins of 25 nats: 1 - p_y ~ 1e-10 is below float32 resolution of p_y; R must still be
    right to float32 relative accuracy (the naive p - onehot gives (C-1) p_k^2 only)."""
    z64 = torch.zeros(8, 10, dtype=torch.float64)
    z64[:, 0] = 25.0 + torch.arange(8, dtype=torch.float64)
    y = torch.zeros(8, dtype=torch.long)
    p = torch.softmax(z64, 1)
    r = p.clone()
    r[:, 0] = -p[:, 1:].sum(1)
    exact = r.square().sum(1).mean().item()
    crit = InstrumentedLoss("ce")
    crit(z64.float(), y)
    assert crit.last.residual_sq == pytest.approx(exact, rel=1e-5)
    q = p[:, 1:].sum(1)
    assert crit.last.alpha_eff == pytest.approx(
        (r.square().sum() / q.square().sum()).item(), rel=1e-5
    )


@pytest.mark.parametrize("shape", [(16,), (16, 3), (16, 2, 3)])
def test_mse(gen, shape):
    z = torch.randn(*shape, generator=gen)
    y = torch.randn(*shape, generator=gen)
    crit = InstrumentedLoss("mse")
    loss = crit(z, y)
    assert loss.item() == pytest.approx(nn.MSELoss()(z, y).item(), rel=1e-6)
    ref = _reference(lambda zi, yi: nn.functional.mse_loss(zi, yi), z, y, False)
    _check(crit.last, *ref, ce=False)
    C = int(np.prod(shape[1:]))
    assert crit.last.residual_sq == pytest.approx(4 * crit.last.loss / C, rel=1e-6)  # g = 4aL


@pytest.mark.parametrize("soft", [False, True])
def test_bce_with_logits(gen, soft):
    z = torch.randn(16, 4, generator=gen) * 4
    y = (
        torch.rand(16, 4, generator=gen)
        if soft
        else torch.randint(0, 2, (16, 4), generator=gen).float()
    )
    crit = InstrumentedLoss("bce")
    loss = crit(z, y)
    assert loss.item() == pytest.approx(nn.BCEWithLogitsLoss()(z, y).item(), rel=1e-6)
    # each logit is a sample: the statistics of the 64 logits of a (16, 4) batch
    ref = _reference(
        lambda zi, yi: nn.functional.binary_cross_entropy_with_logits(zi, yi),
        z.reshape(-1, 1),
        y.reshape(-1, 1),
        False,
    )
    _check(crit.last, *ref, ce=False)
    assert crit.last.batch_size == 64
    if not soft:  # hard labels: |r| = 1 - e^{-l} per logit, so R = mean D(l) = the closure's
        per = nn.functional.binary_cross_entropy_with_logits(z, y, reduction="none").double()
        D = (-torch.expm1(-per)).square().mean().item()
        assert crit.last.residual_sq == pytest.approx(D, rel=1e-5)


def test_bce_confident_logits_stay_accurate():
    """y = 1, z = 20: sigmoid(z) - 1 is 0 in float32, the stable form gives -sigmoid(-20)."""
    z = torch.full((4, 1), 20.0)
    crit = InstrumentedLoss("bce")
    crit(z, torch.ones(4, 1))
    assert crit.last.residual_sq == pytest.approx(
        torch.sigmoid(torch.tensor(-20.0)).item() ** 2, rel=1e-5
    )


def test_mae(gen):
    z = torch.randn(16, 3, generator=gen)
    y = torch.randn(16, 3, generator=gen)
    y[0, 0] = z[0, 0]  # an exact fit contributes no gradient (torch's sign(0) = 0)
    crit = InstrumentedLoss("mae")
    loss = crit(z, y)
    assert loss.item() == pytest.approx(nn.L1Loss()(z, y).item(), rel=1e-6)
    ref = _reference(lambda zi, yi: nn.functional.l1_loss(zi, yi), z, y, False)
    _check(crit.last, *ref, ce=False)


@pytest.mark.parametrize(
    ("kind", "eps", "reference"),
    [
        ("ce", 0.0, nn.CrossEntropyLoss()),
        ("ce", 0.1, nn.CrossEntropyLoss(label_smoothing=0.1)),
        ("ce-soft", 0.0, nn.CrossEntropyLoss()),
        ("mse", 0.0, nn.MSELoss()),
        ("bce", 0.0, nn.BCEWithLogitsLoss()),
        ("mae", 0.0, nn.L1Loss()),
    ],
)
def test_gradient_is_the_usual_one(gen, kind, eps, reference):
    model = nn.Linear(5, 3)
    x = torch.randn(20, 5, generator=gen)
    if kind == "ce":
        y = torch.randint(0, 3, (20,), generator=gen)
    elif kind == "ce-soft":
        y = torch.softmax(torch.randn(20, 3, generator=gen), 1)
    else:
        y = torch.rand(20, 3, generator=gen)
    reference(model(x), y).backward()
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    InstrumentedLoss(kind.removesuffix("-soft"), label_smoothing=eps)(model(x), y).backward()
    for p, e in zip(model.parameters(), expected):
        torch.testing.assert_close(p.grad, e)


@pytest.mark.parametrize(
    ("module", "kind"),
    [
        (nn.CrossEntropyLoss(reduction="none", label_smoothing=0.1), "ce"),
        (nn.MSELoss(reduction="none"), "mse"),
        (nn.BCEWithLogitsLoss(reduction="none"), "bce"),
        (nn.L1Loss(reduction="none"), "mae"),
    ],
)
def test_wrapping_a_torch_module(gen, module, kind):
    z = torch.randn(12, 4, generator=gen)
    y = (
        torch.randint(0, 4, (12,), generator=gen)
        if kind == "ce"
        else torch.rand(12, 4, generator=gen)
    )
    wrapped = InstrumentedLoss(module)
    assert wrapped.kind == kind
    by_name = InstrumentedLoss(kind, label_smoothing=0.1 if kind == "ce" else 0.0)
    assert wrapped(z, y).item() == pytest.approx(by_name(z, y).item(), rel=1e-6)
    for field in ("loss", "loss_std", "residual_sq"):
        assert getattr(wrapped.last, field) == pytest.approx(getattr(by_name.last, field), rel=1e-6)
    assert InstrumentedLoss(kind, loss_fn=module).kind == kind


def test_reduced_loss_is_an_error_naming_the_fix(gen):
    with pytest.raises(InvalidArgumentError, match="reduction='none'"):
        InstrumentedLoss("ce", loss_fn=nn.CrossEntropyLoss())
    with pytest.raises(InvalidArgumentError, match="reduction='none'"):
        InstrumentedLoss(nn.MSELoss())
    crit = InstrumentedLoss("ce", loss_fn=lambda z, y: nn.functional.cross_entropy(z, y))
    with pytest.raises(InvalidArgumentError, match=r"shape \(\).*one loss per sample"):
        crit(torch.randn(4, 3, generator=gen), torch.tensor([0, 1, 2, 0]))


def test_a_custom_per_sample_callable(gen):
    z, y = torch.randn(8, 3, generator=gen), torch.randint(0, 3, (8,), generator=gen)
    crit = InstrumentedLoss(
        "ce", loss_fn=lambda z, y: nn.functional.cross_entropy(z, y, reduction="none")
    )
    crit(z, y)
    ref = InstrumentedLoss("ce")
    ref(z, y)
    # the built-in CE's common case sums in fewer ops (_ce_hard): equal to rounding
    for field in ("loss", "loss_std", "residual_sq", "alpha_eff"):
        assert getattr(crit.last, field) == pytest.approx(getattr(ref.last, field), rel=1e-6)
    assert crit.last.batch_size == ref.last.batch_size


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"loss": "hinge"}, "hinge"),
        ({"loss": "mse", "label_smoothing": 0.1}, "'ce' only"),
        ({"loss": "ce", "label_smoothing": 1.0}, "label_smoothing"),
        ({"loss": nn.BCELoss(reduction="none")}, "logits"),
        ({"loss": nn.CrossEntropyLoss(reduction="none", weight=torch.ones(3))}, "weight"),
        ({"loss": "mse", "loss_fn": nn.CrossEntropyLoss(reduction="none")}, "'ce' loss"),
        ({"loss": "ce", "loss_fn": 3}, "callable"),
        ({"loss": "ce", "distributed": "yes"}, "distributed"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(InvalidArgumentError, match=match):
        InstrumentedLoss(**kwargs)


def test_bad_targets_name_the_fix(gen):
    crit = InstrumentedLoss("ce")
    with pytest.raises(InvalidArgumentError, match="ignore_index"):
        crit(torch.randn(3, 4, generator=gen), torch.tensor([0, -100, 1]))
    with pytest.raises(InvalidArgumentError, match="batch dimension"):
        crit(torch.tensor(1.0), torch.tensor(0))


def test_last_is_none_before_the_first_call_and_calls_count(gen):
    crit = InstrumentedLoss("mse")
    assert crit.last is None and crit.calls == 0
    crit(torch.randn(3, 2, generator=gen), torch.randn(3, 2, generator=gen))
    assert crit.calls == 1 and crit.last.batch_size == 3


def test_combine_equals_the_concatenated_batch(gen):
    z = torch.randn(30, 6, generator=gen) * 2
    y = torch.randint(0, 6, (30,), generator=gen)
    crit = InstrumentedLoss("ce")
    parts = []
    for sl in (slice(0, 7), slice(7, 19), slice(19, 30)):
        crit(z[sl], y[sl])
        parts.append(crit.last)
    crit(z, y)
    whole, combined = crit.last, BatchStats.combine(parts)
    assert combined.batch_size == whole.batch_size
    for field in ("loss", "loss_std", "residual_sq", "alpha_eff"):
        assert getattr(combined, field) == pytest.approx(getattr(whole, field), rel=1e-6)
    with pytest.raises(InvalidArgumentError, match="at least one"):
        BatchStats.combine([])


def test_a_per_sample_callable_that_already_averages_over_outputs(gen):
    """R uses the outputs per sample C of the outputs, whatever shape loss_fn returns."""
    z, y = torch.randn(10, 4, generator=gen), torch.randn(10, 4, generator=gen)
    crit = InstrumentedLoss("mse", loss_fn=lambda z, y: ((z - y) ** 2).mean(1))
    crit(z, y)
    ref = InstrumentedLoss("mse")
    ref(z, y)
    assert crit.last.residual_sq == pytest.approx(ref.last.residual_sq, rel=1e-6)


def _every_cases(gen):
    """(loss name or module, kwargs, outputs, targets) covering each path of the light calls."""
    z2 = torch.randn(16, 5, generator=gen, requires_grad=True)
    hard = torch.randint(0, 5, (16,), generator=gen)
    soft = torch.softmax(torch.randn(16, 5, generator=gen), 1)
    zk = torch.randn(4, 5, 3, generator=gen, requires_grad=True)
    yk = torch.randint(0, 5, (4, 3), generator=gen)
    yk[0, 1] = yk[2, 2] = -100
    real = torch.rand(16, 5, generator=gen)
    return [
        ("ce", {}, z2, hard),
        ("ce", {"label_smoothing": 0.1}, z2, soft),
        ("ce", {"ignore_index": -100}, zk, yk),
        (nn.CrossEntropyLoss(reduction="none"), {}, zk, yk),
        ("mse", {}, z2, real),
        ("bce", {}, z2, real),
        ("mae", {}, z2, real),
        (nn.MSELoss(reduction="none"), {}, z2, real),
    ]


@pytest.mark.parametrize("case", range(8))
def test_every_k_keeps_the_loss_and_gradient_and_skips_the_statistics(gen, case):
    """every=3: calls 1, 4, 7 record the full statistics, the others the same loss and count
    with NaN sigma_L, R, alpha; the returned loss and its gradient equal the full wrapper's."""
    loss, kwargs, z, y = _every_cases(gen)[case]
    full = InstrumentedLoss(loss, **kwargs)
    light = InstrumentedLoss(loss, every=3, **kwargs)
    assert "every=3" in repr(light)
    for call in range(1, 8):
        z.grad = None
        expected = full(z, y)
        expected.backward()
        g_full = z.grad.clone()
        z.grad = None
        got = light(z, y)
        got.backward()
        torch.testing.assert_close(got, expected)
        torch.testing.assert_close(z.grad, g_full)
        a, b = light.last, full.last
        assert a.loss == pytest.approx(b.loss, rel=1e-6) and a.batch_size == b.batch_size
        if call % 3 == 1:
            assert a == b
        else:
            assert math.isnan(a.loss_std) and math.isnan(a.residual_sq)
            assert math.isnan(a.alpha_eff)
    assert light.calls == 7


def test_every_k_rows_go_through_the_recorder(tmp_path, gen):
    from lossrate import RunMeta, Trajectory
    from lossrate.torch import Recorder

    crit = InstrumentedLoss("ce", every=4)
    z, y = torch.randn(32, 10, generator=gen), torch.randint(0, 10, (32,), generator=gen)
    with Recorder(tmp_path, meta=RunMeta(loss="ce", classes=10)) as rec:
        for step in range(12):
            crit(z * (1 + step / 10), y)
            rec.log(step=step, lr=0.1, batch=crit.last)
    traj = Trajectory.read(tmp_path / "trajectory.csv")
    assert np.isfinite(traj.loss).all() and (traj.batch_size == 32).all()
    assert np.isfinite(traj.loss_std).tolist() == [s % 4 == 0 for s in range(12)]


@pytest.mark.parametrize("every", [0, -1, 1.5, True, "2"])
def test_every_must_be_a_whole_number(every):
    with pytest.raises(InvalidArgumentError, match="every must be"):
        InstrumentedLoss("ce", every=every)
