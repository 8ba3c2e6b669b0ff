"""read_lightning on the output of a real (tiny, CPU) Lightning run under CSVLogger."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from lossrate import DataError
from lossrate.readers import detect_format, read_lightning, read_log

torch = pytest.importorskip("torch")
pl = pytest.importorskip("pytorch_lightning")

# Lightning 2.6 calls a torch pytree API that torch 2.13 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings(
    "ignore:`isinstance.treespec, LeafSpec.` is deprecated:FutureWarning"
)


class Tiny(pl.LightningModule):
    def __init__(self, groups: int = 1):
        super().__init__()
        self.save_hyperparameters()
        self.lin = torch.nn.Linear(3, 1)
        self.extra = torch.nn.Linear(3, 1)

    def training_step(self, batch, _idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.lin(x) + 0 * self.extra(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch, _idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.lin(x), y))

    def configure_optimizers(self):
        if self.hparams.groups == 2:
            params = [
                {"params": self.lin.parameters()},
                {"params": self.extra.parameters(), "lr": 0.01},
            ]
        else:
            params = self.parameters()
        opt = torch.optim.SGD(params, lr=0.1)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def train(save_dir: Path, groups: int = 1) -> Path:
    from pytorch_lightning.callbacks import LearningRateMonitor
    from pytorch_lightning.loggers import CSVLogger

    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(32, 3), torch.randn(32, 1))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    logger = CSVLogger(str(save_dir), name="tiny")
    trainer = pl.Trainer(
        max_epochs=2,
        logger=logger,
        callbacks=[LearningRateMonitor(logging_interval="step")],
        log_every_n_steps=2,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        num_sanity_val_steps=0,
    )
    trainer.fit(Tiny(groups), loader, loader)
    return Path(logger.log_dir)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return train(tmp_path_factory.mktemp("pl"))


def test_reads_a_real_csvlogger_run(run_dir):
    assert detect_format(run_dir) == "lightning"
    traj = read_lightning(run_dir)
    # 8 batches per epoch, 2 epochs, a row every 2 steps: the steps Lightning wrote
    np.testing.assert_array_equal(traj.step, np.arange(1, 16, 2))
    # StepLR(4, 0.5) stepped every optimizer step; Lightning labels rows with the count of
    # steps taken, so the lr logged at step s is the one of the step s that followed
    np.testing.assert_allclose(traj.lr, 0.1 * 0.5 ** (traj.step // 4))
    assert np.isfinite(traj.loss).all()
    # val_loss is logged at the last step of each epoch
    assert np.isfinite(traj.test_loss[traj.step == 7]).all() and np.isfinite(traj.test_loss[-1])
    assert traj.meta.name == f"tiny/{run_dir.name}"
    cols = traj.meta.extra["source_columns"]
    assert "loss=train_loss_step" in cols and "lr=lr-SGD" in cols and "test_loss=val_loss" in cols
    assert "train_loss_epoch" in traj.meta.extra["source_ignored"]
    # the sparse rows of one step hold different metrics, so they are no duplicates
    np.testing.assert_array_equal(read_lightning(run_dir, dedupe="error").loss, traj.loss)


def test_parent_folder_and_metrics_file_give_the_same_run(run_dir):
    a = read_lightning(run_dir)
    for path in (run_dir.parent, run_dir.parent.parent, run_dir / "metrics.csv"):
        b = read_log(path)
        np.testing.assert_array_equal(a.loss, b.loss)
        np.testing.assert_array_equal(a.t, b.t)


def test_several_versions_are_listed(run_dir, tmp_path):
    shutil.copytree(run_dir, tmp_path / "tiny" / "version_0")
    shutil.copytree(run_dir, tmp_path / "tiny" / "version_1")
    with pytest.raises(DataError, match=r"holds 2 Lightning runs .*version_0.*version_1.*pass one"):
        read_lightning(tmp_path)
    with pytest.raises(DataError, match=r"holds 2 runs: .*version_0' \(lightning\)"):
        read_log(tmp_path)


def test_two_param_groups_need_an_explicit_lr_column(tmp_path):
    run = train(tmp_path, groups=2)
    with pytest.raises(
        DataError, match=r"several columns could be the 'lr': \['lr-SGD/pg1', 'lr-SGD/pg2'\]"
    ):
        read_lightning(run)
    traj = read_lightning(run, columns={"lr": "lr-SGD/pg2"})
    np.testing.assert_allclose(traj.lr, 0.01 * 0.5 ** (traj.step // 4))


def test_folder_without_a_run(tmp_path):
    with pytest.raises(DataError, match="holds no Lightning CSVLogger run"):
        read_lightning(tmp_path)
