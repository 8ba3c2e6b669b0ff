"""Lightning and Hugging Face callbacks record the trajectory of a hand-written loop.

Both frameworks train a tiny classifier on 32 samples in two micro-batches of 16 per
optimizer step (gradient accumulation), so every step sees the whole data set: the
reference is full-batch SGD written out by hand with InstrumentedLoss, gradient_metrics and
Recorder, and the recorded columns must agree to 1e-6.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from lossrate import InvalidArgumentError, RunMeta, Trajectory
from lossrate.torch import InstrumentedLoss, Recorder, gradient_metrics

pytestmark = pytest.mark.torch

N, MICRO, STEPS, LR = 32, 16, 4, 0.5
COMPARED = (
    "t",
    "lr",
    "loss",
    "loss_std",
    "residual_sq",
    "alpha_eff",
    "grad_sq",
    "pgrad_sq",
    "batch_size",
)


def _data():
    g = torch.Generator().manual_seed(3)
    return torch.randn(N, 6, generator=g), torch.randint(0, 3, (N,), generator=g)


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 3))


def _reference(run_dir):
    model, (x, y) = _net(), _data()
    crit = InstrumentedLoss("ce", label_smoothing=0.05)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.5)
    with Recorder(run_dir) as rec:
        for k in range(STEPS):
            loss = crit(model(x), y)
            opt.zero_grad()
            loss.backward()
            gs = gradient_metrics(model, opt)
            opt.step()
            rec.log(step=k, lr=LR, batch=crit.last, grad=gs)
    return Trajectory.read(run_dir / "trajectory.csv")


def _assert_same(got: Trajectory, ref: Trajectory):
    np.testing.assert_array_equal(got.step, ref.step)
    for name in COMPARED:
        np.testing.assert_allclose(getattr(got, name), getattr(ref, name), rtol=1e-6, err_msg=name)


def test_resuming_callbacks_continue_at_the_trainers_step(tmp_path):
    """A trainer resumed from a checkpoint at step 4 re-runs steps 4, 5, ...: the rows the
    killed run logged after its checkpoint are dropped."""
    from lossrate.torch.callbacks import _StepLog

    _reference(tmp_path)  # 4 rows: steps 0..3
    log = _StepLog(
        tmp_path, None, criterion=None, gradients=True, flush_every=50, resume=True, energy=None
    )
    log.open(rank=0, step=2)
    assert log.recorder.last_step == 1
    log.close()
    assert Trajectory.read(tmp_path / "trajectory.csv").n == 2


# ----------------------------------------------------------------------------- Lightning
pl = pytest.importorskip("pytorch_lightning")


class _LitModel(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = _net()
        self.crit = InstrumentedLoss("ce", label_smoothing=0.05)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return self.crit(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=LR, momentum=0.5)


def _trainer(tmp_path, callback):
    return pl.Trainer(
        max_steps=STEPS,
        accumulate_grad_batches=N // MICRO,
        callbacks=[callback],
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )


# Lightning's advice on workers and log intervals, and its use of torch's deprecated LeafSpec
@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")
def test_lightning_callback_matches_the_hand_written_loop(tmp_path):
    from lossrate.torch.callbacks import LightningCallback

    meta = RunMeta(loss="ce", classes=3, label_smoothing=0.05)
    callback = LightningCallback(tmp_path / "pl", meta)
    loader = DataLoader(TensorDataset(*_data()), batch_size=MICRO, shuffle=False)
    _trainer(tmp_path, callback).fit(_LitModel(), loader)
    got = Trajectory.read(tmp_path / "pl" / "trajectory.csv")
    assert got.meta == meta
    _assert_same(got, _reference(tmp_path / "ref"))
    assert callback.recorder is not None and callback.recorder.last_step == STEPS - 1


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")
def test_lightning_callback_needs_one_instrumented_loss(tmp_path):
    from lossrate.torch.callbacks import LightningCallback

    class Plain(_LitModel):
        def __init__(self):
            super().__init__()
            self.crit = nn.CrossEntropyLoss()

    loader = DataLoader(TensorDataset(*_data()), batch_size=MICRO)
    with pytest.raises(InvalidArgumentError, match="0 InstrumentedLoss"):
        _trainer(tmp_path, LightningCallback(tmp_path / "pl")).fit(Plain(), loader)
    with pytest.raises(InvalidArgumentError, match="InstrumentedLoss"):
        LightningCallback(tmp_path / "x", criterion=nn.CrossEntropyLoss())


# -------------------------------------------------------------------------- Hugging Face
transformers = pytest.importorskip("transformers")


class _HFNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = _net()

    def forward(self, x, labels=None):
        return {"logits": self.net(x)}


class _Dicts(Dataset):
    def __init__(self):
        self.x, self.y = _data()

    def __len__(self):
        return N

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i]}


def test_hf_callback_matches_the_hand_written_loop(tmp_path):
    from lossrate.torch.callbacks import HFCallback

    callback = HFCallback(tmp_path / "hf", RunMeta(loss="ce", classes=3), label_smoothing=0.05)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=STEPS,
        per_device_train_batch_size=MICRO,
        gradient_accumulation_steps=N // MICRO,
        learning_rate=LR,
        lr_scheduler_type="constant",
        optim="sgd",
        optim_args="momentum=0.5",
        max_grad_norm=0.0,
        weight_decay=0.0,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    trainer = transformers.Trainer(
        model=_HFNet(),
        args=args,
        train_dataset=_Dicts(),
        compute_loss_func=callback.compute_loss,
        callbacks=[callback],
    )
    trainer.train()
    got = Trajectory.read(tmp_path / "hf" / "trajectory.csv")
    _assert_same(got, _reference(tmp_path / "ref"))
