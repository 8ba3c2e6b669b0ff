"""Training checkpoints: everything a run needs to continue exactly where it stopped.

A checkpoint is one ``torch.save`` file, ``<run_dir>/checkpoint.pt``, written to a
temporary name and renamed, so a crash while writing leaves the previous one intact.
It holds the number of completed steps, the model and optimizer states, the data-order
generator with the current epoch's permutation and position, and the global torch
random states (CPU and, where present, CUDA).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .._errors import DataError
from ..trajectory import atomic_write

__all__ = ["CHECKPOINT_NAME", "Checkpoint", "load_checkpoint", "save_checkpoint"]

CHECKPOINT_NAME = "checkpoint.pt"


@dataclass(frozen=True, eq=False)
class Checkpoint:
    """The state of a run after ``step`` completed optimizer steps."""

    step: int  # completed optimizer steps (the next step to run)
    model: dict[str, Any]  # model.state_dict()
    optimizer: dict[str, Any]  # optimizer.state_dict()
    order_state: torch.Tensor  # data-order torch.Generator state
    perm: torch.Tensor  # the current epoch's sample permutation
    pos: int  # position in perm of the next batch
    cpu_rng: torch.Tensor  # torch.get_rng_state()
    cuda_rng: list[torch.Tensor]  # torch.cuda.get_rng_state_all() ([] without CUDA)


def save_checkpoint(run_dir: str | Path, ck: Checkpoint) -> Path:
    """Write ``ck`` atomically to ``run_dir/checkpoint.pt``."""
    path = Path(run_dir) / CHECKPOINT_NAME
    state = {name: getattr(ck, name) for name in Checkpoint.__dataclass_fields__}
    atomic_write(path, lambda f: torch.save(state, f), binary=True)
    return path


def load_checkpoint(run_dir: str | Path) -> Checkpoint | None:
    """The checkpoint in ``run_dir``, or None when there is none."""
    path = Path(run_dir) / CHECKPOINT_NAME
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        return Checkpoint(**state)
    except (RuntimeError, EOFError, OSError, TypeError, ValueError) as exc:
        raise DataError(
            f"checkpoint {str(path)!r} cannot be read ({exc}); delete it and start the run again "
            "without --resume."
        ) from None
