"""The batch statistics :class:`BatchStats` and their deferred computation.

:class:`lossrate.torch.InstrumentedLoss` returns torch's own fused loss and, in the common
cross-entropy case, queues the detached logits; the statistics of every queued call are then
computed in one pass (:func:`_resolve`) when they are first read or the queue is full
(:mod:`lossrate.torch.losses` module docstring). A call's :class:`BatchStats` is then a
:class:`_LazyStats` that fills itself in on first read.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .._errors import InvalidArgumentError

__all__ = ["BatchStats"]

_HALF = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class BatchStats:
    """Statistics of one batch (see the module docstring for the formulas).

    Attributes:
        loss: L, the mean per-sample loss.
        loss_std: sigma_L, the population standard deviation of the per-sample losses.
        residual_sq: R, the mean squared norm of the output gradients r_i = d l_i / d z_i.
        alpha_eff: sum ||r_i||^2 / sum (1 - e^{-l_i})^2 for softmax CE; NaN for other losses
            (and when every l_i = 0).
        batch_size: n, the number of samples (positions for K-dimensional CE, logits for BCE),
            over all ranks under torch.distributed.
    """

    loss: float
    loss_std: float
    residual_sq: float
    alpha_eff: float
    batch_size: int

    @classmethod
    def from_sums(
        cls, n: float, s_loss: float, s_loss2: float, s_res: float, s_q2: float, *, ce: bool
    ) -> BatchStats:
        """Statistics from the sums over the batch: n, sum l, sum l^2, sum ||r||^2 and (CE)
        sum (1 - e^{-l})^2. NaN statistics when n = 0."""
        if n <= 0:
            nan = math.nan
            return cls(nan, nan, nan, nan, 0)
        mean = s_loss / n
        var = max(s_loss2 / n - mean * mean, 0.0)
        alpha = s_res / s_q2 if ce and s_q2 > 0 else math.nan
        return cls(mean, math.sqrt(var), s_res / n, alpha, round(n))

    @classmethod
    def combine(cls, parts: Sequence[BatchStats]) -> BatchStats:
        """The statistics of the union of disjoint batches (e.g. gradient-accumulation
        micro-batches), from their sums. alpha_eff is NaN unless every part has one or a zero
        residual."""
        if not parts:
            raise InvalidArgumentError("parts is empty; pass at least one BatchStats to combine.")
        if len(parts) == 1:
            return parts[0]
        if all(type(p) is _LazyStats for p in parts):  # deferred: combined when read
            return _LazyStats._of(_Combined(parts))  # type: ignore[arg-type]
        n = s1 = s2 = sr = sq = 0.0
        ce = True
        for p in parts:
            if p.batch_size == 0:
                continue
            n += p.batch_size
            s1 += p.batch_size * p.loss
            s2 += p.batch_size * (p.loss_std**2 + p.loss**2)
            sr += p.batch_size * p.residual_sq
            if math.isfinite(p.alpha_eff) and p.alpha_eff > 0:
                sq += p.batch_size * p.residual_sq / p.alpha_eff
            elif p.residual_sq != 0:
                ce = False
        return cls.from_sums(n, s1, s2, sr, sq, ce=ce)


class _Latest:
    """The wrapper's per-call state, kept off nn.Module (whose __setattr__ is slow)."""

    __slots__ = ("calls", "pending", "queue", "queued", "stats")

    def __init__(self) -> None:
        self.calls = 0
        self.pending: Callable[[], BatchStats] | None = None  # computes the stats when read
        self.stats: BatchStats | None = None
        self.queue: list[_Queued] = []  # calls whose statistics are deferred
        self.queued = 0  # their logits' elements


#: deferred statistics are computed once this many calls, or logits of this many elements,
#: are queued (bounding the memory the queue holds: 4 MiB of float32 logits)
_QUEUE_CALLS = 64
_NO_INDEX = -(2**63)  # an ignore_index no class index equals
_QUEUE_NUMEL = 1 << 20


class _Queued:
    """One call's inputs to the deferred statistics, and its statistics once computed."""

    __slots__ = ("loss", "mean", "n", "numel", "owner", "stats", "versions", "y", "z")

    def __init__(self, z: torch.Tensor, y: torch.Tensor, mean: torch.Tensor, owner: _Latest):
        self.z, self.y, self.mean, self.owner = z, y, mean, owner
        self.versions = (z._version, y._version)
        self.n = z.shape[0]
        self.numel = z.numel()
        self.loss: float | None = None
        self.stats: BatchStats | None = None

    def get(self) -> BatchStats:
        if self.stats is None:
            _resolve(self.owner)
            if self.stats is None:  # its queue failed to resolve (the error said why)
                raise InvalidArgumentError(
                    "the statistics of this InstrumentedLoss call were lost: computing its "
                    "queue failed (see the earlier error)."
                )
        return self.stats

    def get_loss(self) -> float:
        if self.loss is None:
            self.loss = float(self.mean) if self.stats is None else self.stats.loss
        return self.loss


class _Combined:
    """The deferred statistics of the union of deferred calls (``BatchStats.combine``)."""

    __slots__ = ("loss", "n", "parts", "stats")

    def __init__(self, parts: Sequence[_LazyStats]) -> None:
        self.parts = list(parts)
        self.n = sum(p.batch_size for p in self.parts)
        self.loss: float | None = None
        self.stats: BatchStats | None = None

    def get(self) -> BatchStats:
        if self.stats is None:
            self.stats = BatchStats.combine([p.resolved() for p in self.parts])
        return self.stats

    def get_loss(self) -> float:  # as combine() computes it: sum b L / sum b
        if self.loss is None:
            n = s1 = 0.0
            for p in self.parts:
                b = p.batch_size
                if b:
                    n += b
                    s1 += b * p.loss
            self.loss = s1 / n if n > 0 else math.nan
        return self.loss


class _LazyStats(BatchStats):
    """The :class:`BatchStats` of a call whose statistics are deferred: ``loss`` and
    ``batch_size`` are read at once (one number from the device), the other fields on first
    access, computed together with every other queued call. Compares, hashes and pickles as
    the BatchStats it stands for."""

    _item: _Queued | _Combined

    @classmethod
    def _of(cls, item: _Queued | _Combined) -> _LazyStats:
        self = object.__new__(cls)
        object.__setattr__(self, "_item", item)
        return self

    @property  # type: ignore[override]
    def loss(self) -> float:
        return self._item.get_loss()

    @property  # type: ignore[override]
    def batch_size(self) -> int:
        return self._item.n

    @property  # type: ignore[override]
    def loss_std(self) -> float:
        return self._item.get().loss_std

    @property  # type: ignore[override]
    def residual_sq(self) -> float:
        return self._item.get().residual_sq

    @property  # type: ignore[override]
    def alpha_eff(self) -> float:
        return self._item.get().alpha_eff

    def resolved(self) -> BatchStats:
        """The plain BatchStats (computes the queued statistics if not done yet)."""
        return self._item.get()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _LazyStats):
            other = other.resolved()
        return self.resolved() == other

    def __hash__(self) -> int:
        return hash(self.resolved())

    def __repr__(self) -> str:
        return repr(self.resolved())

    def __reduce__(self) -> tuple[Any, ...]:
        s = self.resolved()
        return (BatchStats, (s.loss, s.loss_std, s.residual_sq, s.alpha_eff, s.batch_size))


def _resolve(owner: _Latest) -> None:
    """Compute the statistics of every queued call of ``owner`` in one pass over their
    concatenated logits (the same formulas and values as the eager path, module docstring;
    in the (C, N) layout for few classes on CPU, as the eager softmax)."""
    queue, owner.queue, owner.queued = owner.queue, [], 0
    if not queue:
        return
    for item in queue:
        if (item.z._version, item.y._version) != item.versions:
            raise InvalidArgumentError(
                "the logits or targets of an InstrumentedLoss call were modified in place "
                "before its statistics were computed (they are computed later, together with "
                "other calls); pass fresh tensors, read crit.last.loss_std right after the call, "
                "or use InstrumentedLoss(..., defer=False)."
            )
    with torch.no_grad():
        m = len(queue)
        if m == 1:
            z, y, means = queue[0].z, queue[0].y, queue[0].mean.view(1)
        else:
            z = torch.cat([item.z for item in queue])
            y = torch.cat([item.y for item in queue])
            means = torch.stack([item.mean for item in queue])
        if z.dtype in _HALF:
            z = z.float()
        C = z.shape[1]
        # classes along dim d: the (C, N) layout for few classes on CPU, where torch's
        # log-softmax over a last dimension < 16 takes a scalar path (10x slower)
        d = 0 if C < 16 and z.device.type == "cpu" else 1
        logp = torch.log_softmax(z.t() if d == 0 else z, d)  # each sample's own values
        index = y.view(1, -1) if d == 0 else y.view(-1, 1)
        try:
            lpy = logp.gather(d, index).view(-1)  # -l_i
        except RuntimeError as exc:
            raise InvalidArgumentError(
                f"CE targets must be class indices in [0, {C}) ({exc}); for padding "
                "positions pass ignore_index=-100 (or the value you use)."
            ) from None
        p = logp.exp_()  # the probabilities, in place: q = 1 - p_y as the sum of the others
        p.scatter_(d, index, 0.0)
        q = p.sum(d)
        pp = torch.linalg.vecdot(p, p, dim=d)  # sum_{k != y} p_k^2, per sample
        sizes = [item.n for item in queue]
        means = means.to(lpy.dtype)
        if all(n == sizes[0] for n in sizes):
            n = sizes[0]
            dev = lpy.view(m, n).add(means.view(m, 1))  # -(l_i - L), two-pass
            q = q.view(m, n)
            sums = torch.stack(
                [
                    means,
                    torch.linalg.vecdot(dev, dev),
                    pp.view(m, n).sum(1),
                    torch.linalg.vecdot(q, q),
                ],
                1,
            )
        else:
            seg = torch.repeat_interleave(
                torch.arange(m, device=z.device), torch.tensor(sizes, device=z.device)
            )
            dev = lpy.add(means[seg])
            acc = torch.zeros(m, 3, dtype=torch.float64, device=z.device)
            acc.index_add_(0, seg, torch.stack([dev.square(), pp, q.square()], 1).double())
            sums = torch.cat([means.double().view(m, 1), acc], 1)
        for item, (mean, ss, sp2, q2) in zip(queue, sums.tolist()):
            res, n = sp2 + q2, item.n
            item.stats = BatchStats(
                mean, math.sqrt(ss / n), res / n, res / q2 if q2 > 0 else math.nan, n
            )
            item.z = item.y = item.mean = None  # type: ignore[assignment]
