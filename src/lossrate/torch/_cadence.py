"""Which steps the gradient groups measure, and the parameter copy that spans them (split
from :mod:`lossrate.torch.groups`, whose *Cadence* paragraph documents the behaviour).

``update_dot`` = <theta_k - theta_{k-1}, G_k>, the previous optimizer step's update against
this step's gradient (theory §4.3's second-order term; :mod:`lossrate.replay` uses it), needs
the parameters of the step before the one measured: one copy of them, kept across steps by
:class:`_UpdateDot` for :class:`~lossrate.torch.GradientGroups` and
:class:`~lossrate.torch.DDPGradients`. Measured at every step, each read forms the dot and
then copies theta_k for the next one. With a cadence of ``every`` > 1 (:class:`_Cadence`)
the step after a measured one is not measured, so the read of a measured step leaves the copy
consumed, and the read of the unmeasured step just before the next measured one takes it
afresh (:meth:`_UpdateDot.snapshot`); a measured step whose previous step was not read (a
``reset()`` instead) finds no copy and records NaN rather than an update over several steps.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from .._errors import InvalidArgumentError


class _UpdateDot:
    """<theta_k - theta_{k-1}, G_k>: the previous step's update against this step's gradient
    (one copy of the parameters; theory §4.3's second-order term, see lossrate.replay).

    The copy is one flat buffer when the parameters share a dtype (float32/64) and device:
    the difference and the entry-wise product are formed in it in place and summed once
    (four fused ops per step, whatever the number of parameters), then the buffer takes
    theta_k for the next step. Otherwise one dot per parameter."""

    def __init__(self) -> None:
        self._params: list[torch.Tensor] = []
        self._theta: list[torch.Tensor] = []
        self._flat: torch.Tensor | None = None  # the buffer the _theta are views of
        self._valid = False  # the buffer holds theta_{k-1} (not a consumed copy)

    def _same(self, ps: list[torch.Tensor]) -> bool:
        return len(ps) == len(self._params) and all(a is b for a, b in zip(ps, self._params))

    @torch.no_grad()
    def snapshot(self, params: Iterable[torch.Tensor]) -> None:
        """Copy the parameters now, as theta_{k-1} of the next step (into the kept buffer)."""
        ps = [p for p in params if p.grad is not None]
        if self._theta and self._same(ps):
            torch._foreach_copy_(self._theta, ps)
            self._valid = True
        else:
            self._start(ps)

    @torch.no_grad()
    def __call__(self, params: Iterable[torch.Tensor], keep: bool = True) -> float:
        """This step's dot; ``keep``: then copy theta_k for the next step (without it the
        buffer is consumed, and the next dot is NaN unless :meth:`snapshot` refills it)."""
        ps = [p for p in params if p.grad is not None]
        if not self._valid or not self._same(ps):
            self._start(ps)
            self._valid = keep
            return math.nan  # the first step (or a new set of parameters): no update yet
        back = self._theta  # theta_{k-1} - theta_k, formed in place in the copy
        grads = [p.grad for p in ps]
        flat = self._flat
        if flat is not None and all(
            g.dtype is flat.dtype and g.layout is torch.strided for g in grads
        ):
            torch._foreach_sub_(back, ps)
            torch._foreach_mul_(back, grads)  # the copy is overwritten below
            dot = float(flat.sum())
        else:
            torch._foreach_sub_(back, ps)
            dots = [
                torch.dot(t.reshape(-1), g.reshape(-1).to(t.dtype)) for g, t in zip(grads, back)
            ]
            device = dots[0].device
            dot = float(torch.stack([s.to(device, torch.float64) for s in dots]).sum())
        if keep:
            torch._foreach_copy_(back, ps)
        else:
            self._valid = False  # the buffer holds the products now
        return -dot

    def _start(self, ps: list[torch.Tensor]) -> None:
        self._params = ps
        first = ps[0]
        if first.dtype in (torch.float32, torch.float64) and all(
            p.dtype is first.dtype and p.device == first.device for p in ps
        ):
            self._flat = torch.cat([p.detach().reshape(-1) for p in ps])
            views = self._flat.split([p.numel() for p in ps])
            self._theta = [v.view(p.shape) for v, p in zip(views, ps)]
        else:
            self._flat = None
            self._theta = [p.detach().clone() for p in ps]
        self._valid = True


def _check_every(every: Any, name: str = "every") -> int:
    """``every`` (the argument called ``name``) as a cadence: an integer >= 1."""
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise InvalidArgumentError(
            f"{name} must be an integer >= 1, the cadence of the measured optimizer steps (1: "
            f"every step, N: every N-th), got {every!r}; pass e.g. {name}=10."
        )
    return every


class _Cadence:
    """The measurement cadence of GradientGroups and DDPGradients (see the module): which
    optimizer steps are measured, and what the read of an unmeasured one does."""

    every: int
    _step: int  # the current optimizer step's index: reads and resets since construction
    second_order: bool
    params: list[torch.Tensor]
    update_dot: float
    _update_dot: _UpdateDot

    def reset(self) -> None:  # pragma: no cover  (each class has its own)
        raise NotImplementedError

    @property
    def measuring(self) -> bool:
        """Whether the current optimizer step is measured: its index (the reads and resets
        since construction) is a multiple of ``every``, so the first step is."""
        return self._step % self.every == 0

    def _read_update_dot(self) -> None:
        """``update_dot`` of a measured step (NaN without ``second_order``). With ``every`` > 1
        the next step is not measured, so theta_k is not copied for it."""
        self.update_dot = (
            self._update_dot(self.params, keep=self.every == 1) if self.second_order else math.nan
        )

    def _skip(self) -> None:
        """``gradient_metrics``' read of an unmeasured step: no norms, no sums; just before a
        measured step the copy of the parameters its ``update_dot`` needs; then the next step."""
        try:
            if self.second_order and (self._step + 1) % self.every == 0:
                self._update_dot.snapshot(self.params)
        finally:
            self.reset()
