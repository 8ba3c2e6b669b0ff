"""torch.distributed helpers: global batch statistics and a rank-0-only writer.

Per-sample statistics are additive, so the global batch of a data-parallel step is exact
from one all-reduce of the per-rank sums (count, sum l, sum l^2, sum ||r||^2,
sum (1 - e^{-l})^2): L = sum l / n, sigma_L^2 = sum l^2 / n - L^2 (in float64), and so on.
Gradients need no reduction: under DDP every rank already holds the averaged gradient after
``backward()``, so :func:`lossrate.torch.gradient_metrics` is global as it stands (sharded
schemes such as FSDP/ZeRO are not supported).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

__all__ = ["all_reduce_sum", "global_rank", "is_distributed"]


def is_distributed() -> bool:
    """True when a torch.distributed process group with more than one rank is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def global_rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def all_reduce_sum(tensor: torch.Tensor) -> Any:
    """Start an in-place asynchronous sum over all ranks; returns the work handle to ``wait()``."""
    return dist.all_reduce(tensor, op=dist.ReduceOp.SUM, async_op=True)
