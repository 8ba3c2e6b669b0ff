"""Run an experiment into a run folder, and resume it.

A run folder holds

* ``config.toml``: the experiment exactly as run (a resume must bring the same one);
* ``trajectory.csv``: one row per optimizer step (:class:`lossrate.torch.Recorder`);
* ``checkpoint.pt``: the latest checkpoint (:mod:`lossrate.experiments.checkpoint`);
* ``exact.json``: for the exact cases, K^2, lambda_max and the certified-bound check.

:func:`run_experiment` is what ``lossrate train CONFIG [--resume]`` calls.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._errors import DataError, InvalidArgumentError
from .._folders import clean_temporaries
from ..trajectory import Trajectory, atomic_write
from .checkpoint import CHECKPOINT_NAME, Checkpoint, load_checkpoint
from .config import ExperimentConfig, load_config
from .datasets import (
    Dataset,
    DatasetInfo,
    binary_subset,
    load_agnews,
    load_cifar10,
    load_fashion_mnist,
    load_idx_folder,
    load_mnist5k,
    load_wordnet,
    subsample,
)
from .distributed import run_ranks
from .exact import certify, is_exact_case, teacher_student
from .models import CNN, MLP, DeepCNN, Linear
from .train import check_shares, output_size, train

__all__ = ["build_model", "load_data", "resolve_device", "run_experiment"]

CONFIG_NAME = "config.toml"
TRAJECTORY_NAME = "trajectory.csv"
EXACT_NAME = "exact.json"


def resolve_device(device: str | torch.device) -> torch.device:
    """ "auto" (CUDA when available, else CPU), "cpu", "cuda" or "cuda:N"."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu" or device.startswith("cuda"):
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise InvalidArgumentError(
                f"device={device!r} but this torch build sees no CUDA GPU; use device='cpu' or 'auto'."
            )
        return torch.device(device)
    raise InvalidArgumentError(f"device={device!r} is not known; choose 'auto', 'cpu' or 'cuda'.")


def load_data(
    cfg: ExperimentConfig, *, device: torch.device | None = None, progress: bool = False
) -> Dataset:
    """The data of ``cfg``: loaded, reduced to the configured subsets and, for MiniLM,
    embedded (frozen) or tokenised (finetune). Tensors stay on the CPU."""
    d = cfg.data
    root = d.root or None
    if d.name == "mnist5k":
        data = load_mnist5k(path=root, seed=d.seed)
    elif d.name == "fashion_mnist":
        data = load_fashion_mnist(path=root)
    elif d.name == "idx_folder":
        data = load_idx_folder(d.root)
    elif d.name == "cifar10":
        data = load_cifar10(d.root)
    elif d.name == "wordnet":
        data = load_wordnet(
            path=root,
            n_train_per_class=(d.n_train or 4000) // 4,
            n_test_per_class=(d.n_test or 1000) // 4,
            seed=d.seed,
        )
    elif d.name == "agnews":
        data = load_agnews(d.root)
    else:
        data = teacher_student(d.teacher)
    if d.binary:
        data = binary_subset(data, d.binary)
    if d.name not in ("wordnet", "teacher_student"):  # those two choose their sizes themselves
        data = subsample(data, d.n_train, d.n_test, seed=d.seed)
    if cfg.model.kind != "minilm":
        return data

    from .text import EMBED_DIM, embed_texts, load_tokenizer, tokenize_texts

    if cfg.model.mode == "frozen":
        emb = embed_texts(
            data.x_train + data.x_test,
            cache_dir=d.cache_dir or None,
            max_length=cfg.model.max_length,
            device=device or "cpu",
            progress=progress,
        )
        n = len(data.x_train)
        return data.with_inputs(emb[:n], emb[n:], (EMBED_DIM,))
    tok = load_tokenizer()
    x_train = tokenize_texts(data.x_train, tok, max_length=cfg.model.max_length)
    x_test = tokenize_texts(data.x_test, tok, max_length=cfg.model.max_length)
    return data.with_inputs(x_train, x_test, (2, cfg.model.max_length))


def build_model(cfg: ExperimentConfig, info: DatasetInfo, n_out: int) -> nn.Module:
    """The configured network for data ``info`` with ``n_out`` outputs (initialised from the
    current torch random state: seed it first)."""
    m = cfg.model
    if m.kind == "linear":
        return Linear(info.input_shape, n_out)
    if m.kind == "mlp":
        return MLP(info.input_shape, n_out, width=m.width, depth=m.depth)
    if m.kind in ("cnn", "deep_cnn"):
        shape = info.input_shape
        if len(shape) != 3 or shape[1] != shape[2]:
            raise InvalidArgumentError(
                f"model.kind = {m.kind!r} needs square images (channels, size, size); "
                f"{info.name} has inputs of shape {shape}. Use model.kind = 'mlp'."
            )
        if m.kind == "cnn":
            return CNN(shape[0], shape[1], n_out, channels=m.channels, hidden=m.hidden)
        return DeepCNN(shape[0], shape[1], n_out, channels=m.channels, blocks=m.depth)
    from .text import MiniLMClassifier, make_head

    if m.mode == "frozen":
        return make_head(m.head, n_out, hidden=m.width)
    return MiniLMClassifier(n_out, unfreeze=m.unfreeze, head=m.head, hidden=m.width)


def _truncate_rows(path: Path, before_step: int) -> None:
    """Keep the header lines and the rows of steps < ``before_step`` of a trajectory CSV."""
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    head = [ln for ln in lines[:2] if ln.startswith("#") or not ln[:1].isdigit()]
    body = lines[len(head) :]
    rows = []
    for i, ln in enumerate(body):
        if not ln.endswith("\n"):
            continue  # a torn last line (no newline) is dropped
        try:
            step = int(ln.split(",", 1)[0])
        except ValueError:
            if i == len(body) - 1:
                continue  # a damaged last row: a write the kill cut short
            raise DataError(
                f"{str(path)!r}: line {len(head) + i + 1} is damaged ({ln[:60].strip()!r}: its "
                "step is not a whole number), so the run cannot be resumed exactly; delete that "
                "line if the rows around it are sound, or start the run again without --resume."
            ) from None
        if step < before_step:
            rows.append(ln)
    if len(head) + len(rows) != len(lines):
        atomic_write(path, lambda f: f.writelines(head + rows))


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"steps": 3}} -> {"train.steps": 3}."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _read_checkpoint(run_dir: Path, cfg: ExperimentConfig) -> Checkpoint | None:
    """The run's checkpoint, refused with lossrate's own message when it is not one lossrate
    wrote: torch is only ever asked for tensors and numbers (``weights_only=True``), and its
    advice to allow arbitrary objects is not passed on (that would run code from the file)."""
    path = run_dir / CHECKPOINT_NAME
    fix = (
        "Delete it (or restore the run folder from a copy) and start the run again without "
        "--resume."
    )
    try:
        ck = load_checkpoint(run_dir)
    except (DataError, pickle.UnpicklingError, AttributeError, KeyError, ImportError) as exc:
        why = "damaged" if "weights_only" not in str(exc) else "not one lossrate wrote"
        raise DataError(
            f"checkpoint {str(path)!r} cannot be resumed from: it is {why} (it holds something "
            "other than the tensors and numbers lossrate saves, or is cut short). lossrate never "
            f"loads other objects from a checkpoint, since that could run code from the file. {fix}"
        ) from None
    if ck is None:
        return None
    if (
        isinstance(ck.step, bool)
        or not isinstance(ck.step, int)
        or not 0 <= ck.step <= cfg.train.steps
    ):
        raise DataError(
            f"checkpoint {str(path)!r}: field 'step' is {ck.step!r}; it must be a whole number in "
            f"[0, {cfg.train.steps}] (train.steps). {fix}"
        )
    return ck


def _check_same_config(run_dir: Path, cfg: ExperimentConfig) -> None:
    saved_path = run_dir / CONFIG_NAME
    if not saved_path.is_file():
        raise InvalidArgumentError(
            f"cannot resume: {str(run_dir)!r} holds no {CONFIG_NAME}; it is not a run folder of lossrate."
        )
    saved, now = _flatten(load_config(saved_path).to_dict()), _flatten(cfg.to_dict())
    diff = [f"{key}: {saved[key]!r} -> {now[key]!r}" for key in now if saved[key] != now[key]]
    if diff:
        raise InvalidArgumentError(
            f"cannot resume {str(run_dir)!r} with a different config ({'; '.join(diff)}); "
            "resume with the config the run started with, or start a new run folder."
        )


def run_experiment(
    config: ExperimentConfig | str | Path,
    run_dir: str | Path,
    resume: bool = False,
    device: str | torch.device = "auto",
    progress: bool = True,
    *,
    stop_at: int | None = None,
    nproc: int = 1,
) -> Trajectory:
    """Train ``config`` into ``run_dir`` and return the run's trajectory.

    Args:
        config: an :class:`ExperimentConfig`, a TOML path or a shipped config name.
        run_dir: the run folder (created if missing).
        resume: continue the run in ``run_dir`` from its checkpoint (the config must be
            the one the run started with), or start it when the folder holds no run yet,
            so the same command can be repeated. Without it, a folder that already holds
            a run is an error (nothing is overwritten).
        device: "auto", "cpu" or "cuda".
        progress: show progress bars.
        stop_at: stop after this many steps with a checkpoint (resume later).
        nproc: train on this many data-parallel processes (torch.distributed: gloo on CPU,
            NCCL with one GPU each on CUDA), each on its equal share of the global batch
            (the config's batch size, which must divide evenly); the recorded statistics
            are the global batch's and only rank 0 writes.

    Returns:
        The trajectory read back from ``run_dir/trajectory.csv``.
    """
    cfg = config if isinstance(config, ExperimentConfig) else load_config(config)
    run_dir = Path(run_dir)
    dev = resolve_device(device)
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise InvalidArgumentError(f"nproc={nproc!r}: must be a whole number >= 1.")
    if nproc > 1:
        check_shares(cfg, nproc)  # before the run folder is touched
    # what a killed run left half-written (its complete files were renamed into place)
    clean_temporaries(run_dir, (CHECKPOINT_NAME, TRAJECTORY_NAME, CONFIG_NAME, EXACT_NAME))
    ck = None
    holds_run = (run_dir / TRAJECTORY_NAME).exists() or (run_dir / CHECKPOINT_NAME).exists()
    if resume and (holds_run or (run_dir / CONFIG_NAME).exists()):
        _check_same_config(run_dir, cfg)
        ck = _read_checkpoint(run_dir, cfg)
        _truncate_rows(run_dir / TRAJECTORY_NAME, ck.step if ck is not None else 0)
    elif holds_run and not resume:
        raise InvalidArgumentError(
            f"run folder {str(run_dir)!r} already holds a run; resume it (resume=True, `--resume`) "
            "or choose a new folder."
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(run_dir / CONFIG_NAME, lambda f: f.write(cfg.to_toml()))

    if nproc > 1:
        if ck is None or ck.step < cfg.train.steps:
            run_ranks(
                cfg,
                run_dir,
                nproc,
                dev,
                resume_from_checkpoint=ck is not None,
                stop_at=stop_at,
                progress=progress,
            )
        traj = Trajectory.read(run_dir / TRAJECTORY_NAME)
        if is_exact_case(cfg) and traj.n == cfg.train.steps:
            data = load_data(cfg, device=dev)
            n_out = output_size(cfg.loss.name, data.info.n_classes)
            check = certify(cfg, data, traj, n_out)
            atomic_write(run_dir / EXACT_NAME, lambda f: json.dump(check.to_dict(), f, indent=2))
        return traj

    data = load_data(cfg, device=dev, progress=progress)
    n_out = output_size(cfg.loss.name, data.info.n_classes)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg, data.info, n_out)
    if ck is None or ck.step < cfg.train.steps:
        train(
            model,
            data,
            cfg,
            run_dir,
            n_out=n_out,
            device=dev,
            resume_from=ck,
            stop_at=stop_at,
            progress=progress,
        )
    traj = Trajectory.read(run_dir / TRAJECTORY_NAME)
    if is_exact_case(cfg) and traj.n == cfg.train.steps:
        check = certify(cfg, data, traj, n_out)
        atomic_write(run_dir / EXACT_NAME, lambda f: json.dump(check.to_dict(), f, indent=2))
    return traj
