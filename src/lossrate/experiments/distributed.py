"""``lossrate train CONFIG --nproc N``: one run on N data-parallel processes.

:func:`run_ranks` starts N processes with ``torch.multiprocessing`` (spawn), joins them in a
``torch.distributed`` process group (NCCL with one GPU per rank when the device is CUDA,
gloo on CPU) and runs :func:`lossrate.experiments.train.train` in each. Every rank loads the
same data and builds the same model from the config's seed, and on a resume loads rank 0's
checkpoint; each then trains on its 1/N share of every global batch (the config's batch
size). The recorded statistics are the global batch's and only rank 0 writes, so the run
folder is the one a single process writes (:mod:`lossrate.torch.distributed`).

The caller (:func:`lossrate.experiments.run_experiment`) prepares the run folder first: the
config, the checkpoint check and the trajectory cut back to the checkpoint.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import torch

from .._errors import InvalidArgumentError
from .config import ExperimentConfig

__all__ = ["run_ranks"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_ranks(
    cfg: ExperimentConfig,
    run_dir: Path,
    nproc: int,
    device: torch.device,
    *,
    resume_from_checkpoint: bool,
    stop_at: int | None,
    progress: bool,
) -> None:
    """Train ``cfg`` into ``run_dir`` on ``nproc`` processes; re-raise the first rank's error."""
    import torch.multiprocessing as mp

    if device.type == "cuda":
        if torch.cuda.device_count() < nproc:
            raise InvalidArgumentError(
                f"--nproc {nproc} on CUDA needs one GPU per process; this machine has "
                f"{torch.cuda.device_count()}. Use fewer processes or --device cpu."
            )
    ctx = mp.get_context("spawn")
    errors = ctx.SimpleQueue()
    threads = max(1, torch.get_num_threads() // nproc)
    args = (nproc, _free_port(), cfg, str(run_dir), device.type, resume_from_checkpoint)
    try:
        mp.spawn(
            _rank_main,
            args=(*args, stop_at, progress, threads, errors),
            nprocs=nproc,
            join=True,
        )
    except mp.ProcessRaisedException:
        if not errors.empty():
            raise errors.get() from None
        raise


def _rank_main(
    rank: int,
    nproc: int,
    port: int,
    cfg: ExperimentConfig,
    run_dir: str,
    device_type: str,
    resume_from_checkpoint: bool,
    stop_at: int | None,
    progress: bool,
    threads: int,
    errors: Any,
) -> None:
    import torch.distributed as dist

    from .runner import _read_checkpoint, build_model, load_data
    from .train import output_size, train

    torch.set_num_threads(threads)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    device = torch.device(device_type, rank) if device_type == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        "nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=nproc
    )
    try:
        data = load_data(cfg, device=device, progress=progress and rank == 0)
        n_out = output_size(cfg.loss.name, data.info.n_classes)
        torch.manual_seed(cfg.train.seed)
        model = build_model(cfg, data.info, n_out)
        ck = _read_checkpoint(Path(run_dir), cfg) if resume_from_checkpoint else None
        train(
            model,
            data,
            cfg,
            run_dir,
            n_out=n_out,
            device=device,
            resume_from=ck,
            stop_at=stop_at,
            progress=progress,
        )
        dist.barrier()  # no rank tears the group down while another still talks to it
    except BaseException as exc:
        if rank == 0 or errors.empty():
            try:
                errors.put(exc)
            except Exception:  # an exception that does not pickle: spawn reports its traceback
                pass
        raise
    finally:
        dist.destroy_process_group()
