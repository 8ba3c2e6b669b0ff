"""Which reader a path needs (:func:`detect_format`) and the one entry point :func:`read_log`."""

from __future__ import annotations

import os
import struct
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .._errors import DataError, InvalidArgumentError, check_choice
from ..trajectory import FORMAT_TAG, RunMeta, Trajectory
from ._bins import DEFAULT_MAX_POINTS
from ._build import Options, Table, build, make_options
from ._files import DEFAULT_MAX_BYTES, check_file, find_dirs, read_head
from .csv import csv_table
from .lightning import METRICS_FILE, is_lightning_dir, lightning_table
from .tensorboard import EVENT_MARK, has_event_files, tensorboard_table
from .wandb import HISTORY_FILE, wandb_table

__all__ = ["FORMATS", "detect_format", "read_log"]

#: The formats :func:`read_log` reads ("trajectory": a file written by Trajectory.write).
FORMATS = ("csv", "tensorboard", "wandb", "lightning", "trajectory")

_TABLES = {
    "csv": csv_table,
    "tensorboard": tensorboard_table,
    "wandb": wandb_table,
    "lightning": lightning_table,
}


def _folder_format(folder: Path, names: list[str]) -> str | None:
    if has_event_files(folder, names):
        return "tensorboard"
    if is_lightning_dir(folder, names):
        return "lightning"
    if HISTORY_FILE in names:
        return "wandb"
    return None


def detect_format(path: str | os.PathLike[str]) -> str:
    """The format of the log at ``path``, one of :data:`FORMATS`.

    * a folder with ``events.out.tfevents*`` files (or one run below it): ``"tensorboard"``;
    * a ``CSVLogger`` folder (``metrics.csv`` + ``hparams.yaml``, or ``version_N``), or a
      ``metrics.csv`` beside them: ``"lightning"``;
    * ``.jsonl``/``.ndjson``/``.json``, a folder with ``wandb-history.jsonl``, or a CSV
      whose header has ``_step``: ``"wandb"``;
    * a ``.csv`` starting with the lossrate header line, or ``.parquet``: ``"trajectory"``;
    * any other ``.csv``/``.tsv``/``.txt``: ``"csv"``; other files are sniffed.

    Raises:
        DataError: the path is missing, unreadable, holds no log or several runs.
    """
    p = Path(path)
    try:
        is_dir = p.is_dir()
    except OSError:
        is_dir = False
    if is_dir:
        found: dict[Path, str] = {}

        def accept(folder: Path, names: list[str]) -> bool:
            fmt = _folder_format(folder, names)
            if fmt is not None:
                found[folder] = fmt
            return fmt is not None

        find_dirs(p, accept)
        if p in found:
            return found[p]
        if len(found) == 1:
            return next(iter(found.values()))
        if not found:
            raise DataError(
                f"{str(p)!r} holds no training log lossrate knows (TensorBoard event files, a "
                f"Lightning {METRICS_FILE}, a W&B {HISTORY_FILE}); pass the log file itself "
                "with format='csv' or another format."
            )
        shown = ", ".join(f"{str(r)!r} ({fmt})" for r, fmt in list(found.items())[:10])
        raise DataError(f"{str(p)!r} holds {len(found)} runs: {shown}; pass one of them.")
    check_file(p, None)
    name, suffix = p.name.lower(), p.suffix.lower()
    if EVENT_MARK in name:
        return "tensorboard"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "wandb"
    if suffix in (".parquet", ".pq"):
        return "trajectory"
    head = read_head(p)
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff")
    if text.startswith("#") and FORMAT_TAG in text.split("\n", 1)[0]:
        return "trajectory"
    if suffix in (".csv", ".tsv", ".txt"):
        if name == METRICS_FILE and is_lightning_dir(
            p.parent, [e.name for e in p.parent.iterdir()]
        ):
            return "lightning"
        header = next((ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")), "")
        cells = {c.strip().strip('"') for c in header.replace("\t", ",").split(",")}
        return "wandb" if "_step" in cells else "csv"
    if _looks_like_tfrecord(head):
        return "tensorboard"
    if text.lstrip().startswith(("{", "[")):
        return "wandb"
    raise DataError(
        f"cannot tell the format of {str(p)!r} (suffix {suffix!r}); pass format= one of "
        f"{', '.join(FORMATS)}."
    )


def _looks_like_tfrecord(head: bytes) -> bool:
    if len(head) < 12:
        return False
    try:
        from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c
    except ImportError:
        return False
    return bool(masked_crc32c(head[:8]) == struct.unpack_from("<I", head, 8)[0])


def read_log(
    path: str | os.PathLike[str],
    *,
    format: str = "auto",
    columns: Mapping[str, str | None] | None = None,
    loss_tag: str | None = None,
    lr_tag: str | None = None,
    meta: RunMeta | None = None,
    dedupe: str = "last",
    drop_nonfinite: bool = False,
    interpolate_lr: bool = False,
    allow_truncated: bool = False,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
    max_points: int | None = DEFAULT_MAX_POINTS,
) -> Trajectory:
    """Read any supported training log into a :class:`~lossrate.Trajectory`.

    Args:
        path: a log file or run folder (see :func:`detect_format`).
        format: ``"auto"`` (detect) or one of :data:`FORMATS`.
        columns: role -> column (or tag) name, overriding the guess by name; a role
            mapped to None is not used. Roles: :data:`lossrate.readers.ROLES`.
        loss_tag, lr_tag: shorthands for ``columns={'loss': ..., 'lr': ...}``.
        meta: run metadata (``name`` defaults to the run's name; reading facts are
            added to ``meta.extra`` under ``source*`` keys unless given there).
        dedupe: ``"last"`` (a series logged again at a step keeps its last value) or ``"error"``.
        drop_nonfinite: drop rows with a NaN/inf loss or an infinite value instead of raising.
        interpolate_lr: interpolate a learning rate missing at some steps (else it is left out).
        allow_truncated: drop a last record cut short instead of raising.
        max_bytes: refuse logs larger than this; None for no limit. The default is 2 GiB
            for a CSV (its rows are parsed in blocks) and 64 MiB for the other formats
            (read whole; for TensorBoard, the sum of the run's event files).
        max_points: a log with more rows is binned by step to at most this many points
            (default 20,000; see :mod:`lossrate.readers._bins`: bin-mean loss, pooled loss
            std, exact intrinsic time), noted in ``meta.extra['thinned']`` and
            ``meta.extra['source_rows']``; None keeps every row. A lossrate trajectory
            file is read as written (never binned).

    Raises:
        DataError: the log is missing, unreadable or malformed; the message names the
            file, the problem and the fix.
        InvalidArgumentError: an argument is malformed.

    Example::

        from lossrate.readers import read_log
        traj = read_log("runs/exp1")                              # TensorBoard folder
        traj = read_log("metrics.csv", columns={"loss": "loss_epoch"})
    """
    opts = make_options(
        columns=columns,
        loss_tag=loss_tag,
        lr_tag=lr_tag,
        meta=meta,
        dedupe=dedupe,
        drop_nonfinite=drop_nonfinite,
        interpolate_lr=interpolate_lr,
        allow_truncated=allow_truncated,
        max_bytes=max_bytes,
        max_points=max_points,
    )
    fmt = check_choice("format", format, ("auto", *FORMATS))
    p = Path(path)
    if fmt == "auto":
        fmt = detect_format(p)
    if fmt == "trajectory":
        return _read_trajectory(p, opts)
    table: Table = _TABLES[fmt](p, opts)
    return build(table, opts)


def _read_trajectory(p: Path, opts: Options) -> Trajectory:
    unused = [
        name
        for name, used in (
            ("columns/loss_tag/lr_tag", bool(opts.columns)),
            ("dedupe='error'", opts.dedupe != "last"),
            ("interpolate_lr", opts.interpolate_lr),
            ("allow_truncated", opts.allow_truncated),
        )
        if used
    ]
    if unused:
        raise InvalidArgumentError(
            f"{', '.join(unused)} do(es) not apply to {str(p)!r}, a lossrate trajectory file; "
            "leave them out."
        )
    check_file(p, opts.max_bytes)
    try:
        traj = Trajectory.read(p, drop_nonfinite=opts.drop_nonfinite)
    except OSError as exc:
        raise DataError(f"{str(p)!r} cannot be read ({exc.strerror or exc}).") from None
    traj = _with_gradient_noise(p, traj)
    return traj if opts.meta is None else traj.replace(meta=opts.meta)


def _with_gradient_noise(p: Path, traj: Trajectory) -> Trajectory:
    """``traj`` with the debiased pgrad_sq of the recorder's ``gradient_noise.csv`` beside it
    (aligned by step, NaN where a step has no row), so that a fit's measured rate is unbiased.
    A noise file that cannot be read is left out with a warning: the loss curve is still good."""
    from ..measured import noise_path, read_gradient_noise

    if traj.pgrad_sq_debiased is not None or not noise_path(p).exists():
        return traj
    try:
        col = read_gradient_noise(p).aligned(traj.step).pgrad_sq
    except DataError as exc:
        warnings.warn(
            f"the gradient-noise file beside {str(p)!r} is left out ({exc}); fits use the "
            "raw mini-batch gradient norm.",
            stacklevel=3,
        )
        return traj
    if not np.isfinite(col).any():
        return traj
    return traj.replace(pgrad_sq_debiased=col)
