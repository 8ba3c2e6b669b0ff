"""Deferred CE statistics (InstrumentedLoss's common case, computed many calls in one pass)
record the same numbers as the eager path (``defer=False``, the computation they replace).

The loss and its gradient are torch's own bit for bit; L is the same float; sigma_L, R and
alpha_eff agree to 1e-6 (the per-call sums are now float64, the probabilities exp(log p)
instead of a second softmax).
"""

from __future__ import annotations

import math
import pickle

import pytest
import torch
from torch import nn

from lossrate import InvalidArgumentError, RunMeta, Trajectory
from lossrate.torch import BatchStats, InstrumentedLoss, Recorder
from lossrate.torch import losses as _losses

pytestmark = pytest.mark.torch

FIELDS = ("loss", "loss_std", "residual_sq", "alpha_eff")


def _close(a: BatchStats, b: BatchStats, rel: float = 1e-6) -> None:
    assert a.batch_size == b.batch_size
    for f in FIELDS:
        assert getattr(a, f) == pytest.approx(getattr(b, f), rel=rel, abs=1e-12), f


def _batches(gen, sizes, C, dtype=torch.float32, scale=3.0):
    out = []
    for n in sizes:
        z = (torch.randn(n, C, generator=gen, dtype=torch.float64) * scale).to(dtype)
        out.append((z, torch.randint(0, C, (n,), generator=gen)))
    return out


@pytest.mark.parametrize("C", [2, 10, 40])
@pytest.mark.parametrize("sizes", [[128] * 5, [7, 64, 1, 30]])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_deferred_equals_eager(C, sizes, dtype):
    gen = torch.Generator().manual_seed(C + len(sizes))
    lazy, eager = InstrumentedLoss("ce"), InstrumentedLoss("ce", defer=False)
    got, want = [], []
    for z, y in _batches(gen, sizes, C, dtype):
        z1, z2 = z.clone().requires_grad_(), z.clone().requires_grad_()
        a, b = lazy(z1, y), eager(z2, y)
        ref = nn.functional.cross_entropy(z.clone().requires_grad_(), y)
        assert a.item() == b.item() == ref.item()  # torch's fused mean, bit for bit
        (ga,) = torch.autograd.grad(a, z1)
        (gb,) = torch.autograd.grad(b, z2)
        assert torch.equal(ga, gb)
        got.append(lazy.last)
        want.append(eager.last)
    assert all(type(s) is _losses._LazyStats for s in got)
    assert lazy._latest.queue  # nothing computed yet
    for g, w in zip(got, want):
        assert g.loss == w.loss  # L: the same float
        _close(g, w)
    assert not lazy._latest.queue  # one read computed the whole queue
    _close(BatchStats.combine(got), BatchStats.combine(want))


def test_confident_predictions_keep_their_relative_accuracy():
    """Tiny residuals (p_y ~ 1) as in the eager path: q = 1 - p_y from the other classes."""
    z = torch.zeros(16, 10)
    z[:, 3] = torch.linspace(18.0, 30.0, 16)
    y = torch.full((16,), 3)
    lazy, eager = InstrumentedLoss("ce"), InstrumentedLoss("ce", defer=False)
    lazy(z, y), eager(z, y)
    assert lazy.last.residual_sq > 0
    _close(lazy.last, eager.last)


def test_recorder_rows_are_the_eager_rows(tmp_path):
    gen = torch.Generator().manual_seed(3)
    data = _batches(gen, [32] * 23, 10)
    frames = []
    for name, defer in (("lazy", True), ("eager", False)):
        crit = InstrumentedLoss("ce", defer=defer)
        with Recorder(tmp_path / name, meta=RunMeta(loss="ce", classes=10), flush_every=5) as rec:
            for k, (z, y) in enumerate(data):
                crit(z, y)
                rec.log(step=k, lr=0.1, batch=crit.last, wall_s=1.0)
        frames.append(Trajectory.read(tmp_path / name / "trajectory.csv"))
    lazy, eager = frames
    assert list(lazy.loss) == list(eager.loss)
    assert list(lazy.batch_size) == list(eager.batch_size)
    for col in ("loss_std", "residual_sq", "alpha_eff"):
        a, b = getattr(lazy, col), getattr(eager, col)
        assert a == pytest.approx(b, rel=1e-6)


def test_combined_micro_batches_in_the_recorder(tmp_path):
    gen = torch.Generator().manual_seed(4)
    rows = {}
    for defer in (True, False):
        crit = InstrumentedLoss("ce", defer=defer)
        batches = _batches(torch.Generator().manual_seed(4), [16, 16, 16, 9] * 6, 5)
        d = tmp_path / str(defer)
        with Recorder(d, meta=RunMeta(loss="ce", classes=5), flush_every=4) as rec:
            for k in range(6):
                parts = []
                for z, y in batches[4 * k : 4 * k + 4]:
                    crit(z, y)
                    parts.append(crit.last)
                combined = BatchStats.combine(parts)
                assert combined.batch_size == 57
                rec.log(step=k, lr=0.1, batch=combined, wall_s=1.0)
        rows[defer] = Trajectory.read(d / "trajectory.csv")
    del gen
    for col in ("loss", "loss_std", "residual_sq", "alpha_eff"):
        a, b = getattr(rows[True], col), getattr(rows[False], col)
        assert a == pytest.approx(b, rel=1e-6)


def test_queue_is_bounded():
    crit = InstrumentedLoss("ce")
    z, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    for _ in range(_losses._QUEUE_CALLS):
        crit(z, y)
    assert not crit._latest.queue  # computed on the call that filled it
    big = torch.randn(_losses._QUEUE_NUMEL // 8 + 1, 8)
    crit(big, torch.zeros(big.shape[0], dtype=torch.long))
    assert not crit._latest.queue


def test_targets_changed_before_the_statistics_are_read_is_an_error():
    crit = InstrumentedLoss("ce")
    z, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    crit(z, y)
    stats = crit.last
    assert stats.loss > 0 and stats.batch_size == 4  # these need nothing deferred
    y.fill_(1)
    with pytest.raises(InvalidArgumentError, match="defer=False"):
        stats.loss_std  # noqa: B018


def test_deferred_stats_compare_hash_and_pickle_as_batch_stats():
    crit, eager = InstrumentedLoss("ce"), InstrumentedLoss("ce", defer=False)
    z, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    crit(z, y)
    eager(z, y)
    s = crit.last
    plain = s.resolved()
    assert type(plain) is BatchStats and s == plain and plain == s and hash(s) == hash(plain)
    back = pickle.loads(pickle.dumps(s))
    assert type(back) is BatchStats and back == plain
    assert repr(s) == repr(plain)
    assert isinstance(s, BatchStats)
    assert math.isfinite(s.alpha_eff)


def test_out_of_range_targets_are_refused_in_the_call():
    crit = InstrumentedLoss("ce")
    with pytest.raises(InvalidArgumentError, match="class indices"):
        crit(torch.randn(3, 4), torch.tensor([0, 4, 1]))
