"""Two-rank DDP job for test_torch_groups_fast.py (run as a script, not collected).

Usage: python ddp_groups_job.py OUT.json. Two gloo ranks train the model of ddp_job.py on the
halves of each global batch with DDPGradients: SGD with momentum and two parameter groups
(P a multiple of I per parameter: the comm hook keeps norms only, no copy) for 3 steps, then
Adam on the same parameters for 3 steps (P turns per-entry: its first step has no copy and
records NaN P columns, later ones copy). One process then trains the same model on the whole
batches fed in two halves (GradientGroups). Rank 0 writes every step's GradStats of both.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from ddp_job import BATCH, _data, _model
from torch import nn

from lossrate.torch import DDPGradients, GradientGroups, gradient_metrics

WORLD = 2


def _optimizers(model: nn.Module):
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    groups = [{"params": layers[0].parameters()}, {"params": layers[1].parameters(), "lr": 0.02}]
    yield from [torch.optim.SGD(groups, lr=0.05, momentum=0.9)] * 3
    adam = torch.optim.Adam(model.parameters(), lr=0.01)
    yield from [adam] * 3


def _train(model: nn.Module, rank: int, world: int) -> list[tuple]:
    ddp = world > 1
    groups = DDPGradients(model) if ddp else GradientGroups(model)
    out = []
    for k, opt in enumerate(_optimizers(model.module if ddp else model)):
        x, y = _data(k)
        opt.zero_grad()
        if ddp:
            part = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
            nn.functional.cross_entropy(model(x[part]), y[part]).backward()
            groups.mark(BATCH // world)
        else:
            for part, w in GradientGroups.split(BATCH, 2):
                (nn.functional.cross_entropy(model(x[part]), y[part]) * w).backward()
                groups.mark(part.stop - part.start)
        out.append(dataclasses.astuple(gradient_metrics(model, opt, groups=groups)))
        opt.step()
    return out


def _worker(rank: int, port: int, path: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        got = _train(nn.parallel.DistributedDataParallel(_model()), rank, WORLD)
        if rank == 0:
            with open(path, "w") as f:
                json.dump({"ddp": got, "single": _train(_model(), 0, 1)}, f)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def main(path: str) -> None:
    torch.set_num_threads(1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(port, path), nprocs=WORLD, join=True)


if __name__ == "__main__":
    main(sys.argv[1])
