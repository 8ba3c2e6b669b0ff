"""Read a PyTorch Lightning ``CSVLogger`` run into a :class:`~lossrate.Trajectory`.

``CSVLogger(save_dir, name)`` writes ``save_dir/name/version_N/metrics.csv`` (and
``hparams.yaml``). Each ``log_metrics`` call is one row holding ``step`` (the global
step), ``epoch`` and the metrics logged then; the other cells are empty. So the loss
(``train_loss_step`` for ``self.log(..., on_step=True, on_epoch=True)``, else
``train_loss`` or ``loss``) and the learning rate of ``LearningRateMonitor``
(``lr-SGD``, ``lr-AdamW``, ...) sit on different rows of the same step, and the
epoch aggregates (``train_loss_epoch``, ``val_loss``) on rows of their own: rows of a
step are merged, each metric keeping its last value there. ``val_loss`` becomes
``test_loss`` where it was logged at a step that also has a training loss.

Pass the ``version_N`` folder, its ``metrics.csv``, or a folder holding exactly one
``version_N`` (e.g. ``save_dir/name``); with several versions the error lists them.

Example::

    from lossrate.readers import read_lightning
    traj = read_lightning("logs/lightning_logs/version_0")
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from .._errors import DataError
from ..trajectory import RunMeta, Trajectory
from ._bins import DEFAULT_MAX_POINTS
from ._build import Options, Table, build, make_options
from ._files import DEFAULT_MAX_BYTES, find_dirs
from .csv import csv_table

__all__ = ["read_lightning"]

METRICS_FILE = "metrics.csv"


def read_lightning(
    path: str | os.PathLike[str],
    *,
    columns: Mapping[str, str | None] | None = None,
    meta: RunMeta | None = None,
    dedupe: str = "last",
    drop_nonfinite: bool = False,
    interpolate_lr: bool = False,
    allow_truncated: bool = False,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
    max_points: int | None = DEFAULT_MAX_POINTS,
) -> Trajectory:
    """Read a Lightning ``CSVLogger`` run (see the module docstring).

    The arguments are those of :func:`lossrate.readers.read_csv`; ``meta.name`` defaults
    to ``"<name>/version_N"``.
    """
    opts = make_options(
        columns=columns,
        meta=meta,
        dedupe=dedupe,
        drop_nonfinite=drop_nonfinite,
        interpolate_lr=interpolate_lr,
        allow_truncated=allow_truncated,
        max_bytes=max_bytes,
        max_points=max_points,
    )
    return build(lightning_table(Path(path), opts), opts)


def is_lightning_dir(folder: Path, names: list[str]) -> bool:
    """True for a folder ``CSVLogger`` wrote: it holds ``metrics.csv`` and ``hparams.yaml``."""
    return METRICS_FILE in names and ("hparams.yaml" in names or folder.name.startswith("version_"))


def metrics_file(path: Path) -> Path:
    """The ``metrics.csv`` of the one Lightning run at or under ``path``."""
    if not path.is_dir():
        return path
    if (path / METRICS_FILE).is_file():
        return path / METRICS_FILE
    runs = find_dirs(path, is_lightning_dir)
    if len(runs) == 1:
        return runs[0] / METRICS_FILE
    if not runs:
        raise DataError(
            f"{str(path)!r} holds no Lightning CSVLogger run (no version_N/{METRICS_FILE}); "
            "pass the folder CSVLogger wrote, e.g. logs/lightning_logs/version_0."
        )
    shown = ", ".join(repr(str(r)) for r in runs[:10])
    raise DataError(f"{str(path)!r} holds {len(runs)} Lightning runs ({shown}); pass one of them.")


def lightning_table(path: Path, opts: Options) -> Table:
    """The :class:`Table` of a Lightning ``CSVLogger`` run."""
    metrics = metrics_file(path)
    run_name = f"{metrics.parent.parent.name}/{metrics.parent.name}"
    return csv_table(metrics, opts, reader="lightning", run_name=run_name)
