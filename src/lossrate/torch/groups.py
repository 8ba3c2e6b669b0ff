"""Gradient groups: the per-group gradients that make the gradient norm unbiased.

One optimizer step's gradient G = sum_k w_k G_k combines K >= 2 group gradients G_k (means
over b_k samples each). The groups come from what the training already computes, or from
an opt-in split (theory §4.2; the estimators are in :mod:`lossrate.measured`):

* **gradient accumulation** — :class:`GradientGroups`: call ``groups.mark(batch_size)`` after
  each micro-batch's ``backward()``. ``.grad`` must end as the gradient of the step's mean
  loss (divide each micro-batch loss by the number of micro-batches, or weight it by its
  share of the samples), so the increment of ``.grad`` at mark k is w_k G_k, with
  w_k = b_k / sum b. No extra backward pass; one copy of the gradient and one buffer of
  squared increments are kept (a second buffer when the micro-batch sizes differ).
* **two-half-batch mode** (opt-in) — the same class on a step split into parts
  (``groups.split(n)`` gives the slices and loss weights): two backward passes on halves
  instead of one on the batch; :mod:`benchmarks.recorder_overhead` reports what it costs.
* **DDP** — :class:`DDPGradients`: a communication hook keeps each rank's local gradient
  (the average of its b_r samples) before the all-reduce; DDP averages the ranks with
  w_r = 1 / W. ``groups.mark(batch_size)`` once per step with the local batch size; the
  per-rank sums are all-reduced (five numbers) when :func:`gradient_metrics` reads them.

**Finite population.** Groups drawn *without* replacement from N training samples (an
epoch's permutation, DistributedSampler) are slightly anti-correlated: E<G_j, G_k> =
||grad L||^2 - tr(Sigma_N) / (N - 1). With ``population=N`` the estimate adds back
trace_sigma / N, which makes it unbiased (trace_sigma then estimates N/(N-1) tr(Sigma_N), the
usual unbiased covariance). Leave it None for draws with replacement or when N >> B.

Pass the object to ``gradient_metrics(model, optimizer, groups=groups)``, which reads and
then resets it (the next step starts afresh; call ``groups.reset()`` if a step is skipped).
Call it before clipping or unscaling changes ``.grad``: the groups must add up to ``.grad``,
which is checked.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .._errors import InvalidArgumentError

__all__ = ["DDPGradients", "GradientGroups"]

#: (groups K, sum w_k^2, sum ||w_k G_k||^2, sum w_k^2 G_k^T P G_k, sum b_k,
#:  sum b_k ||G_k||^2, sum b_k G_k^T P G_k)
Sums = tuple[int, float, float, float, float, float, float]


def _param_list(model_or_params: Any) -> list[torch.Tensor]:
    if isinstance(model_or_params, nn.Module):
        return [p for p in model_or_params.parameters() if p.requires_grad]
    params = list(model_or_params)
    if params and isinstance(params[0], dict):
        params = [p for group in params for p in group["params"]]
    if not params or not all(isinstance(p, torch.Tensor) for p in params):
        raise InvalidArgumentError(
            "model_or_params must be an nn.Module or a non-empty iterable of parameters."
        )
    return params


def _check_size(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(
            f"batch_size must be the number of samples of the group (an integer >= 1), got "
            f"{batch_size!r}."
        )
    return batch_size


class _UpdateDot:
    """<theta_k - theta_{k-1}, G_k>: the previous step's update against this step's gradient
    (one copy of the parameters; theory §4.3's second-order term, see lossrate.replay)."""

    def __init__(self) -> None:
        self._theta: dict[torch.Tensor, torch.Tensor] = {}

    @torch.no_grad()
    def __call__(self, params: Iterable[torch.Tensor]) -> float:
        dot, seen = 0.0, False
        for p in params:
            if p.grad is None:
                continue
            prev = self._theta.get(p)
            if prev is None:
                self._theta[p] = p.detach().clone()
                continue
            seen = True
            dot += float(torch.dot((p.detach() - prev).reshape(-1).double(),
                                   p.grad.reshape(-1).double()))  # fmt: skip
            prev.copy_(p.detach())
        return dot if seen else math.nan


def _check_population(population: Any) -> int | None:
    if population is None:
        return None
    if isinstance(population, bool) or not isinstance(population, int) or population < 2:
        raise InvalidArgumentError(
            f"population must be the number of training samples (an integer >= 2) or None, "
            f"got {population!r}."
        )
    return population


def _pdot(buf: torch.Tensor, P: torch.Tensor | float) -> float:
    if isinstance(P, torch.Tensor):
        return float(torch.dot(buf.reshape(-1), P.reshape(-1).to(buf.dtype)))
    return float(P) * float(buf.sum())


class GradientGroups:
    """Micro-batch (or half-batch) gradients of one optimizer step (see the module).

    Args:
        model_or_params: the trained module or its parameters.
        population: the number of training samples N when batches are drawn without
            replacement (see the module), else None.
    """

    def __init__(
        self, model_or_params: nn.Module | Iterable[torch.Tensor], *, population: int | None = None
    ) -> None:
        self.params = _param_list(model_or_params)
        self.population = _check_population(population)
        self._update_dot = _UpdateDot()
        self.update_dot = math.nan  # of the last step read (see _UpdateDot)
        self.reset()

    def reset(self) -> None:
        """Forget the marks of the current step."""
        self._prev: dict[torch.Tensor, torch.Tensor] = {}
        self._sq: dict[torch.Tensor, torch.Tensor] = {}  # sum_k (w_k G_k)^2, per entry
        self._sq_b: dict[torch.Tensor, torch.Tensor] | None = None  # sum_k (w_k G_k)^2 / b_k
        self._sizes: list[int] = []
        self._d: list[float] = []  # ||w_k G_k||^2
        self._total_sq = math.nan  # ||.grad||^2 at the last mark

    @property
    def groups(self) -> int:
        """Marks since the last reset."""
        return len(self._sizes)

    @staticmethod
    def split(n: int, parts: int = 2) -> list[tuple[slice, float]]:
        """The two-half-batch mode: (slice, loss weight) of ``parts`` near-equal parts of a
        batch of ``n`` samples. Use ``crit(model(x[s]), y[s]) * w`` for each, ``backward()``
        and ``groups.mark(len of the slice)``; ``.grad`` then ends as the batch's mean
        gradient."""
        if isinstance(parts, bool) or not isinstance(parts, int) or parts < 2:
            raise InvalidArgumentError(f"parts must be an integer >= 2, got {parts!r}.")
        if isinstance(n, bool) or not isinstance(n, int) or n < parts:
            raise InvalidArgumentError(
                f"a batch of n={n!r} samples cannot be split into parts={parts} groups of at "
                "least one sample; use a larger batch or fewer parts."
            )
        edges = [round(i * n / parts) for i in range(parts + 1)]
        return [(slice(a, b), (b - a) / n) for a, b in itertools.pairwise(edges)]

    @torch.no_grad()
    def mark(self, batch_size: int) -> None:
        """Record the group whose ``backward()`` just ran, of ``batch_size`` samples."""
        b = _check_size(batch_size)
        unequal = bool(self._sizes) and b != self._sizes[0]
        if unequal and self._sq_b is None:
            b0 = self._sizes[0]
            self._sq_b = {p: s / b0 for p, s in self._sq.items()}
        d = 0.0
        total = 0.0
        for p in self.params:
            g = p.grad
            if g is None:
                continue
            if g.is_sparse:
                raise InvalidArgumentError("sparse gradients are not supported by GradientGroups.")
            g = g.detach()
            if g.dtype in (torch.float16, torch.bfloat16):
                g = g.float()
            prev = self._prev.get(p)
            delta = g if prev is None else g - prev
            sq = delta * delta
            d += float(sq.sum())
            total += float(torch.dot(g.reshape(-1), g.reshape(-1)))
            if prev is None:
                self._prev[p] = g.clone()
                self._sq[p] = sq
                if self._sq_b is not None:
                    self._sq_b[p] = sq / b
            else:
                prev.copy_(g)
                self._sq[p].add_(sq)
                if self._sq_b is not None:
                    self._sq_b[p].add_(sq, alpha=1.0 / b)
        self._sizes.append(b)
        self._d.append(d)
        self._total_sq = total

    def _sums(self, grad_sq: float, P: dict[torch.Tensor, torch.Tensor | float]) -> Sums:
        """The step's sums (see ``Sums``); resets the object."""
        try:
            K = len(self._sizes)
            if K < 2:
                raise InvalidArgumentError(
                    f"GradientGroups holds {K} marked group(s) for this step; an unbiased norm "
                    "needs at least 2: call groups.mark(batch_size) after every micro-batch's "
                    "backward(), or use the two-half-batch mode (groups.split)."
                )
            if not math.isclose(grad_sq, self._total_sq, rel_tol=1e-4, abs_tol=1e-30):
                raise InvalidArgumentError(
                    f".grad changed after the last groups.mark (||grad||^2 {self._total_sq!r} "
                    f"at the mark, {grad_sq!r} now): call gradient_metrics(..., groups=...) "
                    "before gradient clipping or GradScaler.unscale_, or mark after them."
                )
            self.update_dot = self._update_dot(self.params)
            sizes = self._sizes
            B = float(sum(sizes))
            w = [b / B for b in sizes]
            sum_w2 = sum(x * x for x in w)
            sum_d = sum(self._d)
            # b_k ||G_k||^2 = b_k d_k / w_k^2 = B^2 d_k / b_k
            sum_bd = B * B * sum(d / b for d, b in zip(self._d, sizes))
            sum_dP = sum_bdP = math.nan
            if P:
                sum_dP = sum_bdP = 0.0
                for p, Pp in P.items():
                    s = self._sq.get(p)
                    if s is None:
                        continue
                    sum_dP += _pdot(s, Pp)
                    sb = self._sq_b[p] if self._sq_b is not None else None
                    sum_bdP += _pdot(sb, Pp) if sb is not None else _pdot(s, Pp) / sizes[0]
                sum_bdP *= B * B
            return K, sum_w2, sum_d, sum_dP, B, sum_bd, sum_bdP
        finally:
            self.reset()


class DDPGradients:
    """Per-rank gradients of a ``DistributedDataParallel`` model, read before the all-reduce.

    Registers a communication hook on ``ddp_model`` that keeps a copy of each bucket's local
    gradient and then all-reduces as DDP does by default (``allreduce_hook``), so training is
    unchanged. Call ``groups.mark(batch_size)`` after ``backward()`` with this rank's number
    of samples, then ``gradient_metrics(model, optimizer, groups=groups)`` on every rank
    (it all-reduces five numbers). With ``no_sync`` accumulation the rank's accumulated
    gradient is one group (mark once, with the rank's total samples).

    Args:
        ddp_model: the DistributedDataParallel module (before its first forward).
        process_group: the group DDP reduces over (default: the world).
        population: as for :class:`GradientGroups` (e.g. with a DistributedSampler).
    """

    def __init__(
        self, ddp_model: nn.Module, process_group: Any = None, *, population: int | None = None
    ) -> None:
        if not isinstance(ddp_model, nn.parallel.DistributedDataParallel):
            raise InvalidArgumentError(
                f"ddp_model must be a torch.nn.parallel.DistributedDataParallel, got "
                f"{type(ddp_model).__name__}; without DDP use GradientGroups."
            )
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

        self.process_group = process_group
        self.population = _check_population(population)
        self.params = [p for p in ddp_model.parameters() if p.requires_grad]
        self._update_dot = _UpdateDot()
        self.update_dot = math.nan
        self._local: dict[torch.Tensor, torch.Tensor] = {}
        self._size: int | None = None

        def hook(state, bucket):  # type: ignore[no-untyped-def]  (DDP checks the annotations)
            for p, g in zip(bucket.parameters(), bucket.gradients()):
                self._local[p] = g.detach().clone()
            return allreduce_hook(state, bucket)

        ddp_model.register_comm_hook(process_group, hook)

    @property
    def groups(self) -> int:
        """The number of ranks."""
        return dist.get_world_size(self.process_group)

    def reset(self) -> None:
        """Forget the current step."""
        self._local = {}
        self._size = None

    def mark(self, batch_size: int) -> None:
        """This rank's samples in the step (call after ``backward()``)."""
        self._size = _check_size(batch_size)

    @torch.no_grad()
    def _sums(self, grad_sq: float, P: dict[torch.Tensor, torch.Tensor | float]) -> Sums:
        try:
            if self._size is None or not self._local:
                raise InvalidArgumentError(
                    "DDPGradients has no local gradient for this step: call groups.mark("
                    "batch_size) after backward() (and build DDPGradients before training)."
                )
            self.update_dot = self._update_dot(self.params)
            W = self.groups
            d = dP = 0.0
            for p, g in self._local.items():
                g = g.double()
                d += float(torch.dot(g.reshape(-1), g.reshape(-1)))
                if P:
                    Pp = P.get(p)
                    if Pp is not None:
                        dP += _pdot(g * g, Pp)
            b = float(self._size)
            device = next(iter(self._local.values())).device
            sums = torch.tensor(
                [d / W**2, dP / W**2, b, b * d, b * dP], dtype=torch.float64, device=device
            )
            dist.all_reduce(sums, op=dist.ReduceOp.SUM, group=self.process_group)
            s = [float(x) for x in sums]
            nan = math.nan
            return (
                W,
                1.0 / W,
                s[0],
                s[1] if P else nan,
                s[2],
                s[3],
                s[4] if P else nan,
            )
        finally:
            self.reset()
