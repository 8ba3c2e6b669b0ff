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
from lossrate.measured import read_gradient_noise
from lossrate.torch import GradientGroups, InstrumentedLoss, Recorder, gradient_metrics
from lossrate.torch.losses import BatchStats

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


def _reference(run_dir, debias=False, parts=None, steps=STEPS):
    """Full-batch SGD by hand for ``steps`` steps; with ``debias`` the batch runs as the two
    micro-batches of MICRO with GradientGroups (the same update), writing gradient_noise.csv;
    ``parts(step)``: the (index, weight) of the groups instead (each of MICRO samples)."""
    model, (x, y) = _net(), _data()
    crit = InstrumentedLoss("ce", label_smoothing=0.05)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.5)
    groups = GradientGroups(model) if debias else None
    with Recorder(run_dir) as rec:
        for k in range(steps):
            opt.zero_grad()
            if debias:
                stats = []
                for part, w in parts(k) if parts else GradientGroups.split(N, N // MICRO):
                    (crit(model(x[part]), y[part]) * w).backward()
                    groups.mark(MICRO)
                    stats.append(crit.last)
                batch = BatchStats.combine(stats)
            else:
                crit(model(x), y).backward()
                batch = crit.last
            gs = gradient_metrics(model, opt, groups=groups)
            opt.step()
            rec.log(step=k, lr=LR, batch=batch, grad=gs)
    return Trajectory.read(run_dir / "trajectory.csv")


def _rank_parts(step):
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(step))
    return [(perm[0::2], 0.5), (perm[1::2], 0.5)]


NOISE = ("grad_sq_raw", "grad_sq", "pgrad_sq", "trace_sigma", "ptrace_sigma", "update_dot")


def _assert_same_noise(got_dir, ref_dir):
    got, ref = read_gradient_noise(got_dir), read_gradient_noise(ref_dir)
    np.testing.assert_array_equal(got.step, ref.step)
    np.testing.assert_array_equal(got.groups, N // MICRO)
    for name in NOISE:
        a, b = getattr(got, name), getattr(ref, name)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-9, err_msg=name)


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
def test_lightning_callback_records_the_debiased_columns_of_the_micro_batches(tmp_path):
    from lossrate.torch.callbacks import LightningCallback

    callback = LightningCallback(tmp_path / "pl", debias="accumulation")
    loader = DataLoader(TensorDataset(*_data()), batch_size=MICRO, shuffle=False)
    _trainer(tmp_path, callback).fit(_LitModel(), loader)
    _reference(tmp_path / "ref", debias=True)
    _assert_same_noise(tmp_path / "pl", tmp_path / "ref")
    with pytest.raises(InvalidArgumentError, match="accumulate_grad_batches"):
        trainer = _trainer(tmp_path, LightningCallback(tmp_path / "one", debias="accumulation"))
        trainer.accumulate_grad_batches = 1
        trainer.fit(_LitModel(), loader)
    with pytest.raises(InvalidArgumentError, match="debias"):
        LightningCallback(tmp_path / "x", debias="halves")


@pytest.mark.slow
@pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="no gloo backend",
)
def test_lightning_callback_records_the_ranks_groups_under_ddp(tmp_path):
    """debias="ddp": DDPGradients on Lightning's DDP wrapper equals one process fed the
    ranks' samples as two groups (Lightning's DistributedSampler shuffles with seed 0 +
    epoch; rank r takes every second index from r; here one step is one epoch)."""
    import subprocess
    import sys
    from pathlib import Path

    job = Path(__file__).with_name("lightning_ddp_job.py")
    out = tmp_path / "first"
    if subprocess.run([sys.executable, str(job), str(out)], timeout=300).returncode != 0:
        out = tmp_path / "again"  # gloo start-up/teardown can abort on a loaded machine
        subprocess.run([sys.executable, str(job), str(out)], check=True, timeout=300)
    _reference(tmp_path / "ref", debias=True, parts=_rank_parts)
    _assert_same_noise(out / "pl", tmp_path / "ref")


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


def _hf_train(tmp_path, callback, max_grad_norm=0.0, steps=STEPS):
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=steps,
        per_device_train_batch_size=MICRO,
        gradient_accumulation_steps=N // MICRO,
        learning_rate=LR,
        lr_scheduler_type="constant",
        optim="sgd",
        optim_args="momentum=0.5",
        max_grad_norm=max_grad_norm,
        train_sampling_strategy="sequential",  # the micro-batches of the reference
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


def test_hf_callback_matches_the_hand_written_loop(tmp_path):
    from lossrate.torch.callbacks import HFCallback

    callback = HFCallback(tmp_path / "hf", RunMeta(loss="ce", classes=3), label_smoothing=0.05)
    _hf_train(tmp_path, callback)
    got = Trajectory.read(tmp_path / "hf" / "trajectory.csv")
    _assert_same(got, _reference(tmp_path / "ref"))


def test_hf_callback_records_the_debiased_columns_and_carries_clipping_over(tmp_path):
    """The micro-batches are marked behind autograd (the Trainer has no callback between the
    last backward and its clipping); a clipped step's columns are those of the clipped
    .grad, so the noise scale is unchanged."""
    from lossrate.torch.callbacks import HFCallback

    callback = HFCallback(tmp_path / "hf", label_smoothing=0.05, debias="accumulation")
    _hf_train(tmp_path, callback)
    _reference(tmp_path / "ref", debias=True)
    _assert_same_noise(tmp_path / "hf", tmp_path / "ref")
    ref = read_gradient_noise(tmp_path / "ref")
    clipped = HFCallback(tmp_path / "clip", label_smoothing=0.05, debias="accumulation")
    _hf_train(tmp_path / "c", clipped, max_grad_norm=1e-3)  # every step clipped
    got = read_gradient_noise(tmp_path / "clip")
    assert (got.grad_sq_raw < 1.01e-6).all()
    # step 0 has the same weights: the same noise scale tr(Sigma) / ||grad||^2
    assert got.trace_sigma[0] / got.grad_sq[0] == pytest.approx(
        ref.trace_sigma[0] / ref.grad_sq[0], rel=1e-5
    )
    with pytest.raises(InvalidArgumentError, match="DDP"):
        HFCallback(tmp_path / "x", debias="ddp")


def test_hf_callback_debias_every_records_the_measured_steps_of_every_step(tmp_path):
    """HFCallback(debias="accumulation", debias_every=2) against the hand-written loop that
    measures every step: the same gradient_noise.csv rows at steps 0, 2, 4; NaN gradient
    columns at the other steps of trajectory.csv, whose loss columns are all there."""
    from lossrate.torch.callbacks import HFCallback

    callback = HFCallback(
        tmp_path / "hf", label_smoothing=0.05, debias="accumulation", debias_every=2
    )
    _hf_train(tmp_path, callback, steps=6)
    _reference(tmp_path / "ref", debias=True, steps=6)
    got, ref = read_gradient_noise(tmp_path / "hf"), read_gradient_noise(tmp_path / "ref")
    np.testing.assert_array_equal(got.step, [0, 2, 4])
    for name in ("grad_sq_raw", "grad_sq", "pgrad_sq", "trace_sigma", "ptrace_sigma"):
        np.testing.assert_allclose(getattr(got, name), getattr(ref, name)[::2], rtol=1e-5)
    assert np.isnan(got.update_dot[0])
    np.testing.assert_allclose(got.update_dot[1:], ref.update_dot[2::2], rtol=1e-4, atol=1e-9)
    traj = Trajectory.read(tmp_path / "hf" / "trajectory.csv")
    assert np.isfinite(traj.loss).all() and np.isfinite(traj.residual_sq).all()
    assert np.isfinite(traj.grad_sq[::2]).all() and np.isnan(traj.grad_sq[1::2]).all()
