"""Lightning DDP job for test_torch_callbacks.py (run as a script, not collected).

Usage: python lightning_ddp_job.py OUT_DIR. Lightning trains a tiny classifier on 32 samples
with 2 CPU processes (ddp_spawn, gloo), 16 per rank per step, with
LightningCallback(debias="ddp"): Lightning's DistributedSampler shuffles (seed 0 + epoch)
and gives rank r every second index from r; one step is one epoch. Writes OUT_DIR/pl.
"""

from __future__ import annotations

import sys
import warnings

import torch
from torch.utils.data import DataLoader, TensorDataset

from lossrate.torch.callbacks import LightningCallback

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from test_torch_callbacks import MICRO, STEPS, _data, _LitModel, pl


def main(out: str) -> None:
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    trainer = pl.Trainer(
        max_steps=STEPS,
        callbacks=[LightningCallback(f"{out}/pl", debias="ddp")],
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=out,
    )
    loader = DataLoader(TensorDataset(*_data()), batch_size=MICRO, shuffle=False)
    trainer.fit(_LitModel(), loader)


if __name__ == "__main__":
    main(sys.argv[1])
