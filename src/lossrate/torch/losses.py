"""Loss wrappers that return the usual mean loss and record the batch statistics of the ODE.

For a batch with outputs z_i and per-sample losses l_i (i = 1..n) the wrapper records

    L       = (1/n) sum_i l_i                       (the loss it returns, for backward)
    sigma_L = sqrt((1/n) sum_i (l_i - L)^2)         (population std; torch.var is unbiased!)
    R       = (1/n) sum_i ||r_i||^2,  r_i = d l_i / d z_i
    alpha   = sum_i ||r_i||^2 / sum_i (1 - e^{-l_i})^2     (softmax CE only, else NaN)

The per-sample losses come from the torch loss at ``reduction='none'`` (so the returned
mean is exactly the usual mean loss and its graph is the usual graph; for the built-in CE
the returned loss *is* torch's fused mean-reduced cross-entropy, and the per-sample losses
are computed without a graph); r_i is computed *analytically* from the outputs under
``torch.no_grad`` (no extra backward pass):

========  ===================================  ==============================================
loss      l_i                                  r_i
========  ===================================  ==============================================
ce        softmax CE over C classes            softmax(z_i) - y_i  (y_i smoothed: (1-eps) y + eps/C)
mse       (1/C) ||z_i - y_i||^2 (nn.MSELoss)   (2/C)(z_i - y_i), so ||r_i||^2 = 4 l_i / C exactly
bce       per logit: softplus(z) - y z         sigmoid(z) - y  (each logit is a sample)
mae       (1/C) ||z_i - y_i||_1 (nn.L1Loss)    sign(z_i - y_i) / C
========  ===================================  ==============================================

C is the number of outputs per sample (the mean over output dimensions makes the batch mean
equal PyTorch's mean reduction). Numerics: for hard labels the target component of a CE
residual, -(1 - p_y), is computed as minus the sum of the other probabilities, and the BCE
residual as (1-y) sigmoid(z) - y sigmoid(-z), so tiny residuals keep their relative accuracy
(1 - p_y computed naively is 0 in float32 once l < 6e-8, and so is torch's float32 loss).
alpha's 1 - e^{-l} is that same sum for one-hot labels and -expm1(-l) otherwise.

BCE "samples" are logits: with C outputs per input, the n C logits are the samples of every
statistic (sigma_L, R, the count), so R = mean_j D(l_j) exactly as the per-logit closure
``bce`` and its rigorous bracket assume (per-input statistics would put a factor C between R
and g and leave the bracket's sigma_L too small). The mean loss is PyTorch's mean either way.

CE "samples" are positions: outputs of shape (N, C, d1, ...) (PyTorch's K-dimensional
layout) give N * d1 * ... samples, and with ``ignore_index`` the ignored positions are left
out of every statistic, as PyTorch's mean reduction leaves them out.

Under ``torch.distributed`` the sums (count, sum l, sum l^2, sum ||r||^2, sum (1-e^{-l})^2)
are all-reduced so the statistics are those of the global batch (see :mod:`.distributed`);
the returned loss stays the local mean, which DDP's gradient averaging turns into the
global mean.

Lighter mode. ``InstrumentedLoss(..., every=k)`` computes the statistics on the 1st,
(k+1)-th, (2k+1)-th, ... call only; the other calls return the same mean loss through the
plain torch loss and record a :class:`BatchStats` with the loss and the batch size and NaN
sigma_L, R and alpha (the Recorder writes them as ``nan``; the fits and the rate figures use
the rows that have them). The loss column stays complete, so the fitted curve and t are
unchanged; the per-step cost of the eager statistics is divided by k. Since the common CE
case defers its statistics (below) the lighter mode saves little there (its other calls run
the eager loss-only path); it still divides the cost of the other cases and of gradient
metrics taken on the same steps: ``benchmarks/recorder_overhead.py`` reports the rows.

Deferred statistics. In the common case (softmax CE on an (n, C) batch with class-index
targets, no label smoothing, no ignore_index, no loss_fn, one process) a call only runs
torch's fused mean loss and queues the detached logits, the targets and the mean; the
statistics of all queued calls are computed together, in one pass over their concatenated
logits, when one of them is first read past ``loss`` and ``batch_size`` (the
:class:`~lossrate.torch.Recorder` reads them when it writes its rows, every ``flush_every``
steps), or once 64 calls or 2^20 logits are queued. ``.last`` is then a :class:`BatchStats`
whose other fields are computed on first access. On CPU a training step spends a few
microseconds per small tensor op (more inside a step, whose matrix products leave the caches
cold than in a loop timing the op alone), so the ~10 ops of the statistics cost ~3 % of an
MNIST-MLP step when run every step and a fraction of that when shared by 50 steps. The
numbers are those of the eager path (``defer=False``) to 1e-6 (the loss bit for bit). The
queued tensors must not be modified in place before the statistics are read (checked by
version counters: an error names ``defer=False``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._errors import InvalidArgumentError, check_choice, check_probability
from ._stats import (
    _NO_INDEX,
    _QUEUE_CALLS,
    _QUEUE_NUMEL,
    BatchStats,
    _Latest,
    _LazyStats,
    _Queued,
    _resolve,
)
from .distributed import all_reduce_sum, is_distributed

__all__ = ["LOSSES", "BatchStats", "InstrumentedLoss"]

_HALF = (torch.float16, torch.bfloat16)

#: Loss family names, as in :func:`lossrate.closures.get_closure`.
LOSSES = ("ce", "mse", "bce", "mae")

# torch loss modules the wrapper understands, and their family
_MODULE_KINDS: dict[type[nn.Module], str] = {
    nn.CrossEntropyLoss: "ce",
    nn.MSELoss: "mse",
    nn.BCEWithLogitsLoss: "bce",
    nn.L1Loss: "mae",
}


LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class InstrumentedLoss(nn.Module):
    """A mean loss for ``backward()`` that also records :class:`BatchStats` in ``.last``.

    ``crit = InstrumentedLoss("ce", label_smoothing=0.1); loss = crit(outputs, targets)``

    Args:
        loss: "ce" (softmax cross-entropy on logits; targets are class indices or class
            probabilities), "mse" (``nn.MSELoss``), "bce" (``nn.BCEWithLogitsLoss``: outputs are
            logits, targets in [0, 1]) or "mae" (``nn.L1Loss``); or one of those torch modules
            built with ``reduction='none'`` (same as passing it as ``loss_fn``).
        label_smoothing: CE label-smoothing epsilon in [0, 1).
        loss_fn: optional callable giving the per-sample (or per-element) losses, e.g.
            ``nn.CrossEntropyLoss(reduction='none')``. It must not reduce the batch; the
            residuals are still the analytic ones of ``loss``, so it must compute that loss.
        ignore_index: CE only: target value whose positions are left out (as in torch);
            None (default) means every target is a class index.
        distributed: "auto" (all-reduce the statistics when torch.distributed is initialised
            with more than one rank: then every rank must make the same calls), or False
            (statistics of the local batch only, e.g. for a loss evaluated on one rank).
        every: compute the statistics on every ``every``-th call only (1, the default: on
            every call); the calls between record the loss and the batch size alone (module
            docstring, "Lighter mode"). With gradient accumulation count calls, not steps:
            ``every`` a multiple of the micro-batches per step keeps whole steps together.
        defer: compute the statistics of the common CE case later, many calls in one pass
            (True, the default; module docstring, "Deferred statistics"); False computes them
            in the call, as every other case does.

    Raises:
        InvalidArgumentError: unknown loss name, a reducing ``loss_fn``, a weighted torch loss
            (class weights / pos_weight have no closure), ``nn.BCELoss`` (needs logits).
    """

    def __init__(
        self,
        loss: str | nn.Module = "ce",
        label_smoothing: float = 0.0,
        *,
        loss_fn: LossFn | None = None,
        ignore_index: int | None = None,
        distributed: str | bool = "auto",
        every: int = 1,
        defer: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise InvalidArgumentError(
                f"every must be a whole number >= 1 (statistics on every every-th call), "
                f"got {every!r}."
            )
        if isinstance(loss, nn.Module):
            if loss_fn is not None:
                raise InvalidArgumentError(
                    "a loss module was passed both as `loss` and `loss_fn`; pass it once."
                )
            loss, loss_fn = None, loss  # type: ignore[assignment]
        kind = None if loss is None else check_choice("loss", loss, LOSSES)
        eps = check_probability("label_smoothing", label_smoothing)
        if isinstance(loss_fn, nn.Module) and type(loss_fn) in _MODULE_KINDS:
            kind, eps, ignore_index = _from_module(loss_fn, kind, eps, ignore_index)
        elif isinstance(loss_fn, nn.BCELoss):
            raise InvalidArgumentError(
                "loss_fn=nn.BCELoss() takes probabilities, but the residual r = sigmoid(z) - y "
                "needs logits; use nn.BCEWithLogitsLoss(reduction='none') or InstrumentedLoss('bce')."
            )
        elif loss_fn is not None:
            if not callable(loss_fn):
                raise InvalidArgumentError(
                    f"loss_fn must be callable, got {type(loss_fn).__name__}."
                )
            if kind is None:
                raise InvalidArgumentError(
                    f"loss_fn={type(loss_fn).__name__} is not a torch loss module lossrate knows; "
                    f"name the loss it computes with loss=one of {', '.join(LOSSES)}."
                )
            if getattr(loss_fn, "reduction", "none") != "none":
                raise _reduced_error(loss_fn)
        if kind is None:
            raise InvalidArgumentError(f"loss must be one of {', '.join(LOSSES)} or a loss module.")
        if eps and kind != "ce":
            raise InvalidArgumentError(
                f"label_smoothing={eps!r} applies to 'ce' only, got loss={kind!r}."
            )
        if ignore_index is not None and kind != "ce":
            raise InvalidArgumentError(f"ignore_index applies to 'ce' only, got loss={kind!r}.")
        if distributed not in ("auto", False):
            raise InvalidArgumentError(f"distributed must be 'auto' or False, got {distributed!r}.")
        self.kind: str = kind
        self.label_smoothing: float = eps
        self.ignore_index: int | None = ignore_index
        self.loss_fn = loss_fn
        self.distributed = distributed
        self.every = every
        self.defer = bool(defer)
        self._latest = _Latest()

    def extra_repr(self) -> str:
        extra = f", label_smoothing={self.label_smoothing}" if self.label_smoothing else ""
        extra += f", every={self.every}" if self.every > 1 else ""
        return f"{self.kind!r}{extra}"

    # --------------------------------------------------------------------------- public
    @property
    def last(self) -> BatchStats | None:
        """Statistics of the most recent call (None before the first call)."""
        latest = self._latest
        if latest.stats is None and latest.pending is not None:
            latest.stats, latest.pending = latest.pending(), None
        return latest.stats

    @property
    def calls(self) -> int:
        """Number of forward calls so far (callbacks use it to tell fresh statistics from stale)."""
        return self._latest.calls

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The mean loss over the batch (a scalar with the usual graph); records ``.last``."""
        if not isinstance(outputs, torch.Tensor) or outputs.dim() == 0:
            got = (
                f"shape {tuple(outputs.shape)}"
                if isinstance(outputs, torch.Tensor)
                else type(outputs).__name__
            )
            raise InvalidArgumentError(
                f"outputs must be a tensor with a batch dimension (n, ...), got {got}."
            )
        latest = self._latest
        latest.calls += 1
        latest.stats = latest.pending = None
        if self.every > 1 and (latest.calls - 1) % self.every:
            return self._loss_only(outputs, targets)
        if self.kind == "ce":
            if (
                self.defer
                and self.loss_fn is None
                and outputs.dim() == 2
                and not targets.is_floating_point()
                and not self.label_smoothing
                and self.ignore_index is None
                and outputs.shape[0] > 0
                and not (self.distributed == "auto" and is_distributed())
            ):
                return self._ce_hard(outputs, targets)
            return self._ce(outputs, targets)
        return self._elementwise(outputs, targets)

    # -------------------------------------------------------------------------- private
    def _record(
        self, ld: torch.Tensor, mean: torch.Tensor, res: torch.Tensor, q2: torch.Tensor | None
    ) -> None:
        """Keep the statistics of per-sample losses ``ld`` (mean ``mean``) with
        sum ||r||^2 = ``res`` and sum (1 - e^{-l})^2 = ``q2``; they become a BatchStats only
        when ``.last`` is read (one synchronisation, none if it is never read)."""
        ce = self.kind == "ce"
        if self.distributed == "auto" and is_distributed():
            ld64 = ld.double()
            sums = torch.stack(
                [
                    torch.tensor(float(ld.shape[0]), dtype=torch.float64, device=ld.device),
                    ld64.sum(),
                    ld64.dot(ld64),
                    res.double(),
                    torch.zeros_like(ld64[:0].sum()) if q2 is None else q2.double(),
                ]
            )
            work = all_reduce_sum(sums)

            def reduced() -> BatchStats:
                work.wait()
                return BatchStats.from_sums(*sums.tolist(), ce=ce)

            self._latest.pending = reduced
            return
        n = ld.shape[0]
        dev = ld - mean  # two-pass variance: no cancellation in float32
        ss = dev.dot(dev)

        def local() -> BatchStats:
            if n == 0:
                return BatchStats.from_sums(0, 0.0, 0.0, 0.0, 0.0, ce=ce)
            alpha = math.nan
            if q2 is not None:
                den = float(q2)
                alpha = float(res) / den if den > 0 else math.nan
            return BatchStats(float(mean), math.sqrt(float(ss) / n), float(res) / n, alpha, n)

        self._latest.pending = local

    def _loss_only(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The mean loss of a call without statistics (``every``): the same value and graph
        as the full path; ``.last`` holds the loss and the sample count, NaN otherwise."""
        if self.kind == "ce" and z.dim() == 1:
            z, y = z.unsqueeze(0), y.unsqueeze(0)
        count: int | torch.Tensor
        if self.kind == "bce":
            count = z.numel()
        elif self.kind == "ce":
            count = z.shape[0] * math.prod(z.shape[2:])
        else:
            count = z.shape[0]
        keep = None
        if self.kind == "ce" and self.ignore_index is not None and not y.is_floating_point():
            keep = y != self.ignore_index
            count = keep.sum()
        if self.loss_fn is None:
            if self.kind == "ce":
                loss = F.cross_entropy(
                    z,
                    y,
                    label_smoothing=self.label_smoothing,
                    ignore_index=-100 if self.ignore_index is None else self.ignore_index,
                )
            else:
                loss = _TORCH_MEANS[self.kind](z, y)
        else:
            per = self._per_sample(z, y)
            if keep is not None:
                n_kept = int(count)
                loss = per.sum() / n_kept if n_kept else per.sum() * math.nan
            else:
                loss = per.sum() / per.numel()
        mean = loss.detach()
        if self.distributed == "auto" and is_distributed():
            n_local = torch.as_tensor(count, dtype=torch.float64, device=mean.device)
            sums = torch.stack([n_local, mean.double() * n_local])
            work = all_reduce_sum(sums)

            def reduced() -> BatchStats:
                work.wait()
                n, s1 = sums.tolist()
                return _loss_stats(s1 / n if n > 0 else math.nan, n)

            self._latest.pending = reduced
        else:
            self._latest.pending = lambda: _loss_stats(float(mean), float(count))
        return loss

    def _per_sample(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.loss_fn is None:
            return _TORCH_LOSSES[self.kind](self, outputs, targets)
        per = self.loss_fn(outputs, targets)
        if not isinstance(per, torch.Tensor) or per.dim() == 0 or per.shape[0] != outputs.shape[0]:
            raise _reduced_error(self.loss_fn, per)
        return per

    def _ce_hard(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The common case (an (n, C) batch, class-index targets, no smoothing, no ignored
        positions, one process): torch's own fused mean for the graph, and the statistics
        deferred (module docstring, "Deferred statistics"): the call keeps the detached
        logits, the targets and the mean, and returns at once; the statistics of every queued
        call are computed together when one of them is first read past ``loss`` and
        ``batch_size`` (the Recorder reads them when it writes its rows), or when the queue
        is full."""
        try:  # no target is ignored (as in the eager path): -100 is out of range, not padding
            loss = F.cross_entropy(z, y, ignore_index=_NO_INDEX)
        except (IndexError, RuntimeError) as exc:
            raise InvalidArgumentError(
                f"CE targets must be class indices in [0, {z.shape[1]}) ({exc}); for padding "
                "positions pass ignore_index=-100 (or the value you use)."
            ) from None
        latest = self._latest
        item = _Queued(z.detach(), y, loss.detach(), latest)
        latest.queue.append(item)
        latest.queued += item.numel
        latest.stats = _LazyStats._of(item)
        if len(latest.queue) >= _QUEUE_CALLS or latest.queued >= _QUEUE_NUMEL:
            _resolve(latest)
        return loss

    def _ce(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if z.dim() == 1:  # one unbatched sample
            z, y = z.unsqueeze(0), y.unsqueeze(0)
        C = z.shape[1]
        soft = y.is_floating_point()
        keep = None
        if self.ignore_index is not None and not soft:
            keep = (y != self.ignore_index).reshape(-1)
        if self.loss_fn is None:
            # the graph is torch's own fused mean (no per-sample graph to differentiate
            # through: that doubled the loss's share of the step); the per-sample losses are
            # for the statistics only and need no graph
            loss = F.cross_entropy(
                z,
                y,
                label_smoothing=self.label_smoothing,
                ignore_index=-100 if self.ignore_index is None else self.ignore_index,
            )
            with torch.no_grad():
                per = _torch_ce(self, z, y)
        else:
            per = self._per_sample(z, y)
            if keep is not None:  # torch's mean over kept positions
                count = int(keep.sum())
                loss = per.sum() / count if count else per.sum() * math.nan
            else:
                loss = per.sum() / per.numel()  # = per.mean(), cheaper on CPU
        with torch.no_grad():
            zd = z  # no_grad: nothing below is recorded, no detach needed
            if zd.dtype in (torch.float16, torch.bfloat16):
                zd = zd.float()
            if z.dim() > 2:  # (N, C, d1, ...) -> (N d1 ..., C)
                zd = zd.movedim(1, -1).reshape(-1, C)
                y = y.movedim(1, -1).reshape(-1, C) if soft else y.reshape(-1)
            ld = per.reshape(-1)
            if keep is not None:
                zd, y, ld = zd[keep], y[keep], ld[keep]
            mean = loss.detach()
            eps = self.label_smoothing
            r, d = _probabilities(zd)  # classes along dim d, contiguous
            if soft:
                target = y.t() if d == 0 else y
                r -= target * (1.0 - eps) + eps / C if eps else target
                rf, q = r.view(-1), torch.expm1(-ld)  # q = -(1 - e^{-l})
                self._record(ld, mean, rf.dot(rf), q.dot(q))
            else:  # q = 1 - p_y as the sum of the other p_k: no cancellation when p_y ~ 1
                index = y.view(1, -1) if d == 0 else y.view(-1, 1)
                try:
                    r.scatter_(d, index, 0.0)
                except RuntimeError as exc:
                    raise InvalidArgumentError(
                        f"CE targets must be class indices in [0, {C}) ({exc}); for padding "
                        "positions pass ignore_index=-100 (or the value you use)."
                    ) from None
                q = r.sum(d)
                if eps:  # r_k = p_k - eps/C, r_y = p_y - (1 - eps + eps/C) = eps (C-1)/C - q
                    r -= eps / C
                    r.scatter_(d, index, (eps * (C - 1) / C - q).view(index.shape))
                    rf, q = r.view(-1), torch.expm1(-ld)  # alpha's e^{-l} - 1, smoothed l
                    self._record(ld, mean, rf.dot(rf), q.dot(q))
                else:  # ||r_i||^2 = sum_{k != y} p_k^2 + q_i^2
                    rf, q2 = r.view(-1), q.dot(q)
                    self._record(ld, mean, rf.dot(rf) + q2, q2)
        return loss

    def _elementwise(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        per = self._per_sample(z, y)
        if self.kind == "bce":  # each logit is a sample (module docstring)
            per = per.reshape(-1)
            loss = per.sum() / per.shape[0]
            with torch.no_grad():  # r = sigmoid(z) - y, written stably for hard labels
                d = ((1 - y) * torch.sigmoid(z) - y * torch.sigmoid(-z)).reshape(-1)
                self._record(per, loss.detach(), d.dot(d), None)
            return loss
        C = z[0].numel() if z.dim() > 1 else 1  # outputs per sample
        if per.dim() > 1:
            per = per.flatten(1).mean(1)
        loss = per.sum() / per.shape[0]
        with torch.no_grad():
            if self.kind == "mse":  # ||r_i||^2 = (4/C^2) ||z_i - y_i||^2 = (4/C) l_i
                res = per.sum() * (4.0 / C)
            else:  # mae: ||r_i||^2 = #{c: z_ic != y_ic} / C^2
                res = (z != y).sum() / C**2
            self._record(per, loss.detach(), res, None)
        return loss


def _probabilities(z: torch.Tensor) -> tuple[torch.Tensor, int]:
    """softmax of the (n, C) logits as a contiguous tensor with the classes along dim d.

    On CPU, torch's softmax over a last dimension shorter than 16 takes a slow scalar path
    (23 us vs 6 us for 128 x 10); over dim 0 of the transposed logits it does not, and its
    result is contiguous in (C, n) layout, so the small-C case works in that layout (d = 0)."""
    if z.shape[1] < 16 and z.device.type == "cpu":
        return torch.softmax(z.t(), dim=0), 0
    return torch.softmax(z, dim=1), 1


def _torch_ce(self: InstrumentedLoss, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    ignore = -100 if self.ignore_index is None else self.ignore_index
    return F.cross_entropy(
        z, y, reduction="none", label_smoothing=self.label_smoothing, ignore_index=ignore
    )


_TORCH_LOSSES: dict[str, Callable[[InstrumentedLoss, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "ce": _torch_ce,
    "mse": lambda self, z, y: F.mse_loss(z, y, reduction="none"),
    "bce": lambda self, z, y: F.binary_cross_entropy_with_logits(z, y, reduction="none"),
    "mae": lambda self, z, y: F.l1_loss(z, y, reduction="none"),
}


#: the mean-reduced torch losses of the calls without statistics (``every``)
_TORCH_MEANS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "mse": F.mse_loss,
    "bce": F.binary_cross_entropy_with_logits,
    "mae": F.l1_loss,
}


def _loss_stats(loss: float, n: float) -> BatchStats:
    """The BatchStats of a call without statistics: the loss and the count only."""
    nan = math.nan
    return BatchStats(loss, nan, nan, nan, round(n))


def _reduced_error(loss_fn: Any, got: Any = None) -> InvalidArgumentError:
    name = type(loss_fn).__name__
    if isinstance(loss_fn, nn.Module):
        fix = f"build it with reduction='none' (nn.{name}(reduction='none'))"
    else:
        fix = "make it return one loss per sample (torch losses: reduction='none')"
    shape = "" if got is None else f" (it returned {_describe(got)})"
    return InvalidArgumentError(
        f"loss_fn={name} reduces the batch to one number{shape}, so per-sample statistics "
        f"cannot be computed; {fix}, or use the wrapper's own loss, "
        "InstrumentedLoss('ce'|'mse'|'bce'|'mae')."
    )


def _describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {tuple(x.shape)}"
    return f"a {type(x).__name__}"


def _from_module(
    module: nn.Module, kind: str | None, eps: float, ignore_index: int | None
) -> tuple[str, float, int | None]:
    """Family, label smoothing and ignore_index of a known torch loss module (checked)."""
    name = type(module).__name__
    mkind = _MODULE_KINDS[type(module)]
    if kind is not None and kind != mkind:
        raise InvalidArgumentError(f"loss={kind!r} but loss_fn is nn.{name}, a {mkind!r} loss.")
    if getattr(module, "reduction", "none") != "none":
        raise _reduced_error(module)
    for attr in ("weight", "pos_weight"):
        if getattr(module, attr, None) is not None:
            raise InvalidArgumentError(
                f"loss_fn=nn.{name} has {attr} set; weighted losses have no closure g(L), so "
                "lossrate cannot instrument them. Drop the weights."
            )
    if mkind == "ce":
        meps = float(module.label_smoothing)
        if eps and eps != meps:
            raise InvalidArgumentError(
                f"label_smoothing={eps} but loss_fn has label_smoothing={meps}; set it in one place."
            )
        eps = meps
        if ignore_index is None:
            ignore_index = int(module.ignore_index)
    return mkind, eps, ignore_index
