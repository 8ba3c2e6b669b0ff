"""Read a training log kept as a CSV or TSV table into a :class:`~lossrate.Trajectory`.

Expects a header row, then one row per logged record; empty cells mean "not logged in
this row" (pandas writes NaN that way), while a cell reading ``nan``/``inf`` is a logged
non-finite value. Leading ``#`` comment lines are skipped. The separator is ``','``
unless the file ends in ``.tsv`` or its header holds tabs and no commas (or ``sep``
says otherwise).

Columns are recognised by name (case, ``/ . -`` and spaces do not matter):

* step: ``step``, ``global_step``, ``trainer/global_step``, ``iteration``, ``iter``, ``_step``
  (none: the row number is the step);
* loss: ``train_loss_step``, ``train_loss``, ``train/loss``, ``Loss/train``, ``training_loss``,
  ``loss_step``, ``loss``;
* lr: ``lr``, ``learning_rate``, ``train/lr``, Lightning's ``lr-<Optimizer>``;
* a cumulative clock (``_runtime``, ``runtime``, ``wall_time``, ``elapsed``, ``time``,
  ``timestamp``), turned into seconds per step ``wall_s``;
* ``loss_std``, ``test_loss`` (also ``val_loss``, ``eval/loss``, ...) and the other
  trajectory columns under their own names (``batch_size``, ``grad_sq``, ``energy_j``, ...).

An explicit ``columns={'loss': 'my_loss', 'lr': None}`` overrides the guess per role
(None: do not use that role); naming a column the file lacks is a DataError that lists
the columns it has. Other columns are ignored and listed in ``meta.extra['source_ignored']``.

Example::

    from lossrate.readers import read_csv
    traj = read_csv("run.csv")                                   # step,lr,train_loss,...
    traj = read_csv("log.tsv", columns={"loss": "obj", "step": "it"})
"""

from __future__ import annotations

import csv as _csv
import io
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from .._errors import DataError, InvalidArgumentError
from ..trajectory import RunMeta, Trajectory
from ._build import Options, Rows, Table, build, make_options
from ._files import DEFAULT_MAX_BYTES, decode_text, read_bytes

__all__ = ["read_csv"]


def read_csv(
    path: str | os.PathLike[str],
    *,
    columns: Mapping[str, str | None] | None = None,
    sep: str | None = None,
    meta: RunMeta | None = None,
    dedupe: str = "last",
    drop_nonfinite: bool = False,
    interpolate_lr: bool = False,
    allow_truncated: bool = False,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
) -> Trajectory:
    """Read a CSV/TSV log (see the module docstring for the recognised columns).

    Args:
        path: the ``.csv``/``.tsv`` file.
        columns: role -> column name, overriding the guess (roles: see
            :data:`lossrate.readers.ROLES`); a role mapped to None is not used.
        sep: the field separator, one character; None guesses ``','`` or ``'\\t'``.
        meta: run metadata for the trajectory (``name`` defaults to the file's stem).
        dedupe: ``'last'`` keeps the last value of a series logged twice at one step
            (a resumed run), ``'error'`` refuses such a file.
        drop_nonfinite: drop rows with a NaN/inf loss or an infinite value instead of raising.
        interpolate_lr: fill steps without a learning rate by linear interpolation in step
            (constant before the first and after the last logged value); by default a
            learning-rate column with gaps is left out (``t`` is then in steps).
        allow_truncated: drop a last line with too few fields (a run stopped mid-write)
            instead of raising.
        max_bytes: refuse larger files (default 64 MiB); None for no limit.

    Raises:
        DataError: the file is missing, unreadable, binary, empty, too large or malformed.
        InvalidArgumentError: an argument is malformed.
    """
    opts = make_options(
        columns=columns,
        meta=meta,
        dedupe=dedupe,
        drop_nonfinite=drop_nonfinite,
        interpolate_lr=interpolate_lr,
        allow_truncated=allow_truncated,
        max_bytes=max_bytes,
    )
    return build(csv_table(Path(path), opts, sep=sep), opts)


def csv_table(
    path: Path,
    opts: Options,
    *,
    sep: str | None = None,
    reader: str = "csv",
    run_name: str | None = None,
) -> Table:
    """The :class:`Table` of a CSV file (shared by the CSV, W&B and Lightning readers)."""
    if sep is not None and (not isinstance(sep, str) or len(sep) != 1 or sep in "\r\n\"'"):
        raise InvalidArgumentError(
            f"sep must be one character such as ',' or '\\t' (or None to guess), got {sep!r}."
        )
    src = str(path)
    text = decode_text(read_bytes(path, opts.max_bytes), src)
    skipped = 0
    header = ""
    for line in io.StringIO(text, newline=""):
        if line.strip() and not line.lstrip().startswith("#"):
            header = line
            break
        skipped += 1
    if not header:
        raise DataError(
            f"{src!r} has no header row (only blank or '#' lines); expected e.g. 'step,loss,lr'."
        )
    if sep is None:
        tabbed = path.suffix.lower() == ".tsv" or ("\t" in header and "," not in header)
        sep = "\t" if tabbed else ","

    def records() -> Iterator[tuple[int, list[str]]]:
        lines = io.StringIO(text, newline="")
        for _ in range(skipped):
            next(lines)
        reader_ = _csv.reader(lines, delimiter=sep, strict=True)
        try:
            for row in reader_:
                if row:
                    yield skipped + reader_.line_num, row
        except _csv.Error as exc:
            raise DataError(
                f"{src!r}: line {skipped + reader_.line_num} is not valid CSV ({exc}); "
                "fix or remove that line."
            ) from None

    first = next(records(), None)
    if first is None:
        raise DataError(
            f"{src!r}: the header row holds no column names; expected e.g. 'step,loss'."
        )
    names = tuple(c.strip() for c in first[1])

    def load(selected: list[str]) -> Rows:
        index = {}
        for name in selected:
            if names.count(name) > 1:
                raise DataError(
                    f"{src!r}: column {name!r} appears {names.count(name)} times in the header; "
                    "rename the copies so each column has its own name."
                )
            index[name] = names.index(name)
        cells: dict[str, list[float]] = {name: [] for name in selected}
        present: dict[str, list[bool]] = {name: [] for name in selected}
        line_no: list[int] = []
        notes: list[str] = []
        it = records()
        next(it)
        for lineno, row in it:
            if len(row) != len(names):
                if next(it, None) is not None:
                    raise DataError(
                        f"{src!r}: line {lineno} has {len(row)} fields but the header has "
                        f"{len(names)}; fix or remove that line."
                    )
                if len(row) > len(names) or not opts.allow_truncated:
                    raise DataError(
                        f"{src!r}: the last line ({lineno}) has {len(row)} fields but the header has "
                        f"{len(names)}: the file looks truncated (a run stopped while writing?). "
                        "Pass allow_truncated=True to drop that line, or fix it."
                    )
                notes.append(f"dropped the truncated last line {lineno}")
                break
            line_no.append(lineno)
            for name, j in index.items():
                value = _number(row[j], name, lineno, src)
                cells[name].append(np.nan if value is None else value)
                present[name].append(value is not None)
        lines = np.asarray(line_no, dtype=np.int64)
        return Rows(
            n=len(line_no),
            series={
                k: (np.asarray(cells[k], dtype=float), np.asarray(present[k], dtype=bool))
                for k in selected
            },
            where=lambda i: f"line {lines[i]}",
            notes=tuple(notes),
        )

    return Table(
        source=src,
        reader=reader,
        names=names,
        load=load,
        run_name=run_name if run_name is not None else path.stem,
    )


def _number(cell: str, name: str, lineno: int, src: str) -> float | None:
    text = cell.strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise DataError(
            f"{src!r}: line {lineno}, column {name!r} holds {text[:40]!r}, which is not a number; "
            f"fix the cell, or map another column (columns={{...}})."
        ) from None
