"""The parameter copy behind ``update_dot`` (split from :mod:`lossrate.torch.groups`).

``update_dot`` = <theta_k - theta_{k-1}, G_k>, the previous optimizer step's update against
this step's gradient (theory §4.3's second-order term; :mod:`lossrate.replay` uses it), needs
the parameters of the step before the one measured: one copy of them, kept across steps by
:class:`_UpdateDot` for :class:`~lossrate.torch.GradientGroups` and
:class:`~lossrate.torch.DDPGradients`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


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

    @torch.no_grad()
    def __call__(self, params: Iterable[torch.Tensor]) -> float:
        ps = [p for p in params if p.grad is not None]
        if len(ps) != len(self._params) or any(a is not b for a, b in zip(ps, self._params)):
            self._start(ps)
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
        torch._foreach_copy_(back, ps)
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
