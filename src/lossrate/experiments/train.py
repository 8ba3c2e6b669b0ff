"""The training loop: one plain function, :func:`train`, read top to bottom.

Per optimizer step k it sets the learning rate from the run's :class:`~lossrate.Schedule`
(the one source of truth: ``param_group["lr"] = schedule.lr[k]``), draws the batch,
computes the instrumented loss, measures the gradient the optimizer will apply, steps,
and logs one trajectory row (batch statistics, gradient norms, wall time, energy and,
every ``eval_every`` steps, the test loss at the same weights; every ``kernel_every`` steps
K^2 on a few samples of the batch, which makes those steps slower).

Reproducibility: the data order comes from a ``torch.Generator`` seeded with
``train.seed``; its state, the epoch's permutation and position, the model, the optimizer
and the global torch random states go into every checkpoint, so a resumed run on CPU
continues with exactly the numbers of an uninterrupted one.
"""

from __future__ import annotations

import time
from contextlib import closing
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from .._errors import InvalidArgumentError
from ..energy import EnergyMeter
from ..torch import GradientGroups, InstrumentedLoss, Recorder, gradient_metrics, kernel_trace
from ..torch.distributed import is_distributed
from ..torch.losses import BatchStats
from ..trajectory import RunMeta
from .checkpoint import Checkpoint, save_checkpoint
from .config import ExperimentConfig, OptimConfig
from .datasets import Dataset
from .models import count_parameters

__all__ = ["build_optimizer", "check_shares", "output_size", "run_meta", "targets_for", "train"]

EVAL_CHUNK = 1024  # test samples per forward pass when measuring the test loss


def build_optimizer(cfg: OptimConfig, model: nn.Module) -> torch.optim.Optimizer:
    """The configured optimizer over the trainable parameters (its lr is reset every step)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.name == "sgd":
        return torch.optim.SGD(
            params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov,
            weight_decay=cfg.weight_decay,
        )
    if cfg.name == "adam":
        return torch.optim.Adam(
            params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay
        )
    if cfg.name == "adamw":
        return torch.optim.AdamW(
            params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay
        )
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(
            params,
            lr=cfg.lr,
            alpha=cfg.alpha,
            eps=cfg.eps,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
        )
    return torch.optim.Adagrad(params, lr=cfg.lr, eps=cfg.eps, weight_decay=cfg.weight_decay)


def output_size(loss: str, n_classes: int) -> int:
    """Outputs per sample: one logit for a binary "bce" task, else ``n_classes``
    (classes for "ce"/"mse"/"mae"/"bce", regression outputs for regression data)."""
    return 1 if loss == "bce" and n_classes == 2 else n_classes


def targets_for(y: torch.Tensor, loss: str, n_out: int) -> torch.Tensor:
    """Labels as the loss wants them: class indices for "ce"; float one-hot rows for
    "mse"/"mae"/"bce" over ``n_out`` outputs (one 0/1 column when ``n_out`` is 1);
    float regression targets pass through."""
    if y.is_floating_point() or loss == "ce":
        return y
    if n_out == 1:
        return y.float().unsqueeze(1)
    return nn.functional.one_hot(y, n_out).float()


def run_meta(
    cfg: ExperimentConfig, data: Dataset, model: nn.Module, n_out: int, energy_source: str
) -> RunMeta:
    """The trajectory metadata of a run of ``cfg``."""
    return RunMeta(
        loss=cfg.loss.name,
        classes=n_out,
        label_smoothing=cfg.loss.label_smoothing,
        mse_scale=1.0 / n_out if cfg.loss.name == "mse" else None,
        optimizer=cfg.optim.name,
        schedule=cfg.schedule.shape,
        dataset=data.info.name,
        model=cfg.model.kind,
        peak_lr=cfg.optim.lr,
        batch_size=cfg.train.batch_size or data.info.n_train,
        model_size=float(count_parameters(model)),
        energy_source=energy_source,
        name=cfg.name,
        extra={
            "seed": cfg.train.seed,
            "full_batch": cfg.full_batch,
            **_flat("optim", asdict(cfg.optim)),
        },
    )


def _flat(prefix: str, table: dict[str, object]) -> dict[str, object]:
    return {f"{prefix}.{k}": v for k, v in table.items() if isinstance(v, int | float | str | bool)}


@torch.no_grad()
def _test_loss(model: nn.Module, crit: InstrumentedLoss, x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean loss over the test samples, in chunks, with the model in eval mode."""
    model.eval()
    total = 0.0
    for start in range(0, len(y), EVAL_CHUNK):
        yb = y[start : start + EVAL_CHUNK]
        total += float(crit(model(x[start : start + EVAL_CHUNK]), yb)) * len(yb)
    model.train()
    return total / len(y)


def check_shares(cfg: ExperimentConfig, nproc: int, n: int | None = None) -> None:
    """Refuse what ``lossrate train --nproc nproc`` cannot run as the one-process run of ``cfg``:
    a global batch (``train.batch_size``, or the ``n`` training samples for full batch) that
    does not split evenly over the ranks, and the per-batch measurements that are not yet
    global under DDP (``train.kernel_every``, ``train.gradient_groups``)."""
    tc = cfg.train
    batch = tc.batch_size if not cfg.full_batch else n
    if batch is not None and n is not None:
        batch = min(batch, n)
    if batch is not None and batch % nproc:
        what = "train.batch_size" if not cfg.full_batch else "the full batch (training samples)"
        raise InvalidArgumentError(
            f"--nproc {nproc}: {what} is {batch}, which does not split evenly over {nproc} "
            f"processes; each process takes an equal share of the global batch, so choose a "
            f"batch size divisible by {nproc} (--set train.batch_size=...) or another --nproc."
        )
    for key in ("kernel_every", "gradient_groups"):
        if getattr(tc, key):
            raise InvalidArgumentError(
                f"--nproc {nproc}: train.{key} = {getattr(tc, key)} is not supported with more "
                f"than one process yet (it would measure one rank's share, not the global "
                f"batch); run with --set train.{key}=0 or without --nproc."
            )


def train(
    model: nn.Module,
    data: Dataset,
    cfg: ExperimentConfig,
    run_dir: str | Path,
    *,
    n_out: int,
    device: torch.device,
    resume_from: Checkpoint | None = None,
    stop_at: int | None = None,
    progress: bool = True,
) -> None:
    """Train ``model`` on ``data`` as ``cfg`` says, writing ``run_dir/trajectory.csv`` and checkpoints.

    Args:
        model: the network, already initialised from ``torch.manual_seed(cfg.train.seed)``.
        data: train/test tensors (inputs already numeric).
        cfg: the experiment.
        run_dir: the run folder (created by :func:`lossrate.experiments.run_experiment`).
        n_out: outputs per sample (:func:`output_size`).
        device: where to train.
        resume_from: the checkpoint to continue from; the trajectory file must then hold
            exactly the rows of the steps before ``resume_from.step``.
        stop_at: stop after this many completed steps, with a checkpoint (for tests and
            time-sliced jobs); None runs to ``cfg.train.steps``.
        progress: show a progress bar.

    Raises:
        lossrate.torch.NonFiniteLossError: the loss became NaN or infinite; the rows up to
            that step (the last one holding the bad loss) are on disk.
    """
    tc, run_dir = cfg.train, Path(run_dir)
    schedule = cfg.schedule_for_run()
    model.to(device).train()
    optimizer = build_optimizer(cfg.optim, model)
    crit = InstrumentedLoss(cfg.loss.name, label_smoothing=cfg.loss.label_smoothing)
    # the test loss is every rank's own (the whole test split at the same weights)
    test_crit = InstrumentedLoss(
        cfg.loss.name, label_smoothing=cfg.loss.label_smoothing, distributed=False
    )
    # Under torch.distributed (``lossrate train --nproc N``): each rank takes its 1/N share of
    # every global batch (drawn from the same seeded order on every rank), DDP averages the
    # gradients and InstrumentedLoss all-reduces the statistics, so the recorded row is the
    # global batch's; only rank 0 writes rows and checkpoints.
    rank, world = (dist.get_rank(), dist.get_world_size()) if is_distributed() else (0, 1)
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    x_train = data.x_train.to(device)
    y_train = targets_for(data.y_train, cfg.loss.name, n_out).to(device)
    n_test = len(data.y_test) if tc.eval_size == 0 else min(tc.eval_size, len(data.y_test))
    x_test = data.x_test[:n_test].to(device)
    y_test = targets_for(data.y_test[:n_test], cfg.loss.name, n_out).to(device)
    n = len(y_train)
    batch = n if cfg.full_batch else min(tc.batch_size, n)
    if world > 1:
        check_shares(cfg, world, n)
    share = slice(rank * batch // world, (rank + 1) * batch // world)
    # train.gradient_groups: each batch in parts, for the debiased gradient columns
    groups = (
        GradientGroups(model, population=n, every=tc.gradient_groups_every)
        if tc.gradient_groups
        else None
    )
    parts = GradientGroups.split(batch, tc.gradient_groups) if groups is not None else []

    # Data order: a fresh permutation of the training set each epoch, from a seeded generator.
    order = torch.Generator().manual_seed(tc.seed)
    perm, pos, start = torch.arange(n), n, 0
    ck = resume_from
    if ck is not None:
        model.load_state_dict(ck.model)
        optimizer.load_state_dict(ck.optimizer)
        order.set_state(ck.order_state)
        perm, pos, start = ck.perm, ck.pos, ck.step
        torch.set_rng_state(ck.cpu_rng)
        if ck.cuda_rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ck.cuda_rng)

    meter = EnergyMeter(gpu_indices=[device.index or 0] if device.type == "cuda" else None)
    # a resumed file keeps its own metadata (the runner checked that the config is the same)
    meta = None if ck is not None else run_meta(cfg, data, model, n_out, meter.source)
    end = tc.steps if stop_at is None else min(stop_at, tc.steps)
    # the ranks that do not write count their steps from the checkpoint's
    resume_step = start if world > 1 and ck is not None else None
    with (
        closing(meter),
        Recorder(
            run_dir,
            meta=meta,
            flush_every=tc.log_flush_every,
            resume=True,
            resume_step=resume_step,
        ) as recorder,
        tqdm(
            total=end,
            initial=start,
            desc=cfg.name,
            disable=not progress or rank != 0,
            unit="step",
        ) as bar,
    ):
        for k in range(start, end):
            lr = float(schedule.lr[k])
            for group in optimizer.param_groups:
                group["lr"] = lr

            test_loss = None  # at the weights of this step, before its update
            if (
                rank == 0
                and tc.eval_every
                and n_test
                and (k % tc.eval_every == 0 or k == tc.steps - 1)
            ):
                test_loss = _test_loss(model, test_crit, x_test, y_test)

            if cfg.full_batch:
                xb, yb = x_train, y_train
            else:
                if pos + batch > n:  # a new epoch (a last partial batch is dropped)
                    perm, pos = torch.randperm(n, generator=order), 0
                idx = perm[pos : pos + batch].to(device)
                pos += batch
                xb, yb = x_train[idx], y_train[idx]
            if world > 1:
                xb, yb = xb[share], yb[share]

            meter.step_energy()  # this step's energy count starts here (the test loss is left out)
            t0 = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            if groups is None or not groups.measuring:  # (a step the cadence skips)
                loss = crit(net(xb), yb)
                loss.backward()
                stats = crit.last
            else:
                part_stats = []
                for part, w in parts:
                    loss = crit(model(xb[part]), yb[part])
                    (loss * w).backward()
                    groups.mark(part.stop - part.start)
                    part_stats.append(crit.last)
                stats = BatchStats.combine(part_stats)
            grads = gradient_metrics(model, optimizer, groups=groups)
            if grads is None:  # unmeasured by the cadence: the raw norms still
                grads = gradient_metrics(model, optimizer)
            k_sq = None
            if tc.kernel_every and k % tc.kernel_every == 0:
                k_sq = kernel_trace(model, xb, optimizer=optimizer, max_samples=tc.kernel_samples)
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            wall = time.perf_counter() - t0

            # raises NonFiniteLossError (after writing the row) when the loss is NaN or inf
            recorder.log(
                step=k,
                lr=lr,
                batch=stats,
                grad=grads,
                wall_s=wall,
                energy_j=meter.step_energy(),
                test_loss=test_loss,
                k_sq=k_sq,
            )

            done = k + 1
            if rank == 0 and (
                done == end or (tc.checkpoint_every and done % tc.checkpoint_every == 0)
            ):
                recorder.flush()  # rows first: a checkpoint never runs ahead of the trajectory
                save_checkpoint(
                    run_dir,
                    Checkpoint(
                        step=done,
                        model=model.state_dict(),
                        optimizer=optimizer.state_dict(),
                        order_state=order.get_state(),
                        perm=perm,
                        pos=pos,
                        cpu_rng=torch.get_rng_state(),
                        cuda_rng=torch.cuda.get_rng_state_all()
                        if torch.cuda.is_available()
                        else [],
                    ),
                )
            bar.update(1)
            if k % 10 == 0:
                bar.set_postfix(loss=f"{loss.item():.4g}", refresh=False)
