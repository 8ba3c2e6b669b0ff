"""Two-rank DDP job for test_torch_noise.py (run as a script, not collected).

Usage: python ddp_noise_job.py OUT_DIR. Each of 2 gloo ranks trains the same model (Adam) on
its half of a global batch of 16 for 4 steps, with DDPGradients (per-rank gradients before
the all-reduce) and Recorder; then one process trains on the whole batch fed in its two
halves (GradientGroups, two backward passes). Both runs write trajectory.csv and
gradient_noise.csv to OUT_DIR/ddp and OUT_DIR/single.
"""

from __future__ import annotations

import os
import socket
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from ddp_job import BATCH, _data, _model  # the same model and batches as ddp_job.py
from torch import nn

from lossrate import RunMeta
from lossrate.torch import (
    DDPGradients,
    GradientGroups,
    InstrumentedLoss,
    Recorder,
    gradient_metrics,
)
from lossrate.torch.losses import BatchStats

STEPS, WORLD = 4, 2


def _train(model: nn.Module, run_dir: str, rank: int, world: int) -> None:
    crit = InstrumentedLoss("ce")
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    ddp = world > 1
    groups = DDPGradients(model) if ddp else GradientGroups(model)
    with Recorder(run_dir, meta=RunMeta(loss="ce", classes=4)) as rec:
        for k in range(STEPS):
            x, y = _data(k)
            opt.zero_grad()
            if ddp:
                part = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
                crit(model(x[part]), y[part]).backward()
                groups.mark(BATCH // world)
                batch = crit.last
            else:
                parts = []
                for part, w in GradientGroups.split(BATCH, 2):
                    (crit(model(x[part]), y[part]) * w).backward()
                    groups.mark(part.stop - part.start)
                    parts.append(crit.last)
                batch = BatchStats.combine(parts)
            gs = gradient_metrics(model, opt, groups=groups)
            opt.step()
            rec.log(step=k, lr=0.05, batch=batch, grad=gs, wall_s=0.0)


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        model = nn.parallel.DistributedDataParallel(_model())
        _train(model, os.path.join(out, "ddp"), rank, WORLD)
        dist.barrier()  # no rank tears gloo down while the other still talks to it
    finally:
        dist.destroy_process_group()


def main(out: str) -> None:
    torch.set_num_threads(1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(port, out), nprocs=WORLD, join=True)
    _train(_model(), os.path.join(out, "single"), 0, 1)


if __name__ == "__main__":
    main(sys.argv[1])
