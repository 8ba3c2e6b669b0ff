"""DDP gradient groups: each rank's local gradient, read before DDP's all-reduce.

Split from :mod:`lossrate.torch.groups` (which documents the estimators and re-exports
:class:`DDPGradients`). The communication hook takes the squared norm of each parameter's
local gradient as its bucket is handed to the all-reduce (one fused norm over the bucket's
views, no copy); a copy of the bucket is kept only while the optimizer read by
``gradient_metrics`` has a per-entry preconditioner (Adam, RMSprop, Adagrad), whose
G_r^T P G_r needs the entries. At the read, five numbers are all-reduced. With a cadence
(``every=N``, :mod:`lossrate.torch.groups`' *Cadence*) the hook of an unmeasured step only
all-reduces, and its read all-reduces nothing; every rank reads every step, so the ranks
agree on which steps are measured.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .._errors import InvalidArgumentError
from ._cadence import _Cadence, _check_every, _UpdateDot
from .groups import _HALF, Sums, _check_population, _check_size

__all__ = ["DDPGradients"]


class DDPGradients(_Cadence):
    """Per-rank gradients of a ``DistributedDataParallel`` model, read before the all-reduce.

    Registers a communication hook on ``ddp_model`` that takes the norms of each bucket's
    local gradients (and, for a per-entry preconditioner, a copy of the bucket) and then
    all-reduces as DDP does by default (``allreduce_hook``), so training is unchanged. Call
    ``groups.mark(batch_size)`` after ``backward()`` with this rank's number of samples, then
    ``gradient_metrics(model, optimizer, groups=groups)`` on every rank (it all-reduces five
    numbers). With ``no_sync`` accumulation the rank's accumulated gradient is one group
    (mark once, with the rank's total samples).

    The copy is taken until a read shows the optimizer's P is a multiple of I per parameter
    (SGD; then the norms suffice); a step at which P first turns per-entry (the optimizer
    was changed) records its P columns as NaN and turns the copy back on.

    Args:
        ddp_model: the DistributedDataParallel module (before its first forward).
        process_group: the group DDP reduces over (default: the world).
        population: as for :class:`~lossrate.torch.GradientGroups` (e.g. with a
            DistributedSampler).
        second_order: as for :class:`~lossrate.torch.GradientGroups`.
        every: as for :class:`~lossrate.torch.GradientGroups`: measure every ``every``-th
            optimizer step only (the first included); 1 measures every step.
    """

    def __init__(
        self,
        ddp_model: nn.Module,
        process_group: Any = None,
        *,
        population: int | None = None,
        second_order: bool = True,
        every: int = 1,
    ) -> None:
        if not isinstance(ddp_model, nn.parallel.DistributedDataParallel):
            raise InvalidArgumentError(
                f"ddp_model must be a torch.nn.parallel.DistributedDataParallel, got "
                f"{type(ddp_model).__name__}; without DDP use GradientGroups."
            )
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

        self.every = _check_every(every)
        self._step = 0
        self.process_group = process_group
        self.population = _check_population(population)
        self.second_order = bool(second_order)
        self.params = [p for p in ddp_model.parameters() if p.requires_grad]
        self._update_dot = _UpdateDot()
        self.update_dot = math.nan
        self._entries = True  # copy the buckets (until a read shows P is scalar)
        # per parameter (by id), this step: (parameter, ||local gradient||) and, while
        # _entries, the local gradient (a view into the bucket's copy)
        self._norms: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._local: dict[int, torch.Tensor] = {}
        self._size: int | None = None
        # per bucket index: the buffer the bucket is copied into (kept across steps: a fresh
        # clone each step cost a large allocation, page faults on CPU)
        self._copies: dict[int, torch.Tensor] = {}
        # per device: float64 scratch for one parameter's g^2 P (kept: a fresh float64
        # temporary per parameter cost ~1.4 ms per step on the MNIST MLP, page faults)
        self._scratch: dict[torch.device, torch.Tensor] = {}

        def hook(state, bucket):  # type: ignore[no-untyped-def]  (DDP checks the annotations)
            # before the all-reduce averages the bucket in place: the norms of its local
            # gradients (views into the bucket, in the order of its parameters)
            if self._step % self.every:  # a step the cadence does not measure
                return allreduce_hook(state, bucket)
            params, grads = bucket.parameters(), bucket.gradients()
            if any(g.dtype in _HALF for g in grads):
                grads = [g.float() if g.dtype in _HALF else g for g in grads]
            norms = self._norms
            for p, n in zip(params, torch._foreach_norm(grads)):
                norms[id(p)] = (p, n)
            if self._entries:  # one copy of the bucket's flat buffer
                src = bucket.buffer().detach()
                flat = self._copies.get(bucket.index())
                if flat is None or flat.shape != src.shape or flat.dtype != src.dtype:
                    flat = self._copies[bucket.index()] = torch.empty_like(src)
                flat.copy_(src)
                views = flat.split([p.numel() for p in params])
                for p, g in zip(params, views):
                    self._local[id(p)] = g.view(p.shape)
            return allreduce_hook(state, bucket)

        ddp_model.register_comm_hook(process_group, hook)

    @property
    def groups(self) -> int:
        """The number of ranks."""
        return dist.get_world_size(self.process_group)

    def reset(self) -> None:
        """Forget the current step and go on to the next (a step that is not read counts
        towards the cadence as one that is)."""
        self._step += 1
        self._clear()

    def _clear(self) -> None:
        self._norms = {}
        self._local = {}  # views into self._copies, overwritten by the next step's hook
        self._size = None

    def _scratch_for(self, g: torch.Tensor) -> torch.Tensor:
        """A float64 buffer of ``g.numel()`` entries on ``g``'s device (grown as needed)."""
        buf = self._scratch.get(g.device)
        if buf is None or buf.numel() < g.numel():
            buf = self._scratch[g.device] = torch.empty(
                g.numel(), dtype=torch.float64, device=g.device
            )
        return buf[: g.numel()]

    def mark(self, batch_size: int) -> None:
        """This rank's samples in the step (call after ``backward()``)."""
        self._size = _check_size(batch_size)

    @torch.no_grad()
    def _sums(self, grad_sq: float, P: dict[torch.Tensor, torch.Tensor | float]) -> Sums:
        try:
            if self._size is None or not self._norms:
                raise InvalidArgumentError(
                    "DDPGradients has no local gradient for this step: call groups.mark("
                    "batch_size) after backward() (and build DDPGradients before training)."
                )
            self._read_update_dot()
            W = self.groups
            params, ns = zip(*self._norms.values())
            device = ns[0].device
            if any(n.device != device for n in ns):  # a model split over devices
                ns = [n.to(device) for n in ns]
            norms = [x * x for x in torch.stack(ns).tolist()]  # per parameter, squared
            d = math.fsum(norms)
            dP = 0.0
            if P:
                dots = []
                for p, s in zip(params, norms):
                    Pp = P.get(p)
                    if Pp is None:
                        continue
                    if not isinstance(Pp, torch.Tensor):
                        dP += float(Pp) * s
                        continue
                    g = self._local.get(id(p))
                    if g is None:  # P turned per-entry: this step has no copy
                        dP = math.nan
                        break
                    # sum of g^2 P in float64 (g^2 exact), in the scratch buffer
                    x = self._scratch_for(g).copy_(g.reshape(-1))
                    dots.append(x.mul_(x).mul_(Pp.reshape(-1)).sum())
                if dots and math.isfinite(dP):
                    dP += float(torch.stack([x.to(device) for x in dots]).sum())
            # later steps copy the buckets only for a per-entry P
            self._entries = any(isinstance(Pp, torch.Tensor) for Pp in P.values())
            if not self._entries:
                self._copies, self._scratch = {}, {}
            b = float(self._size)
            sums = torch.tensor(
                [d / W**2, dP / W**2, b, b * d, b * dP], dtype=torch.float64, device=device
            )
            dist.all_reduce(sums, op=dist.ReduceOp.SUM, group=self.process_group)
            s = sums.tolist()
            nan = math.nan
            return (W, 1.0 / W, s[0], s[1] if P else nan, s[2], s[3], s[4] if P else nan)
        finally:
            self.reset()
