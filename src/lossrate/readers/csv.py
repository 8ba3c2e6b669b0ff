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

import codecs
import csv as _csv
import io
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .._errors import DataError, InvalidArgumentError
from ..trajectory import RunMeta, Trajectory
from ._bins import DEFAULT_MAX_POINTS
from ._build import Options, Rows, Table, build, make_options
from ._files import DEFAULT_MAX_BYTES, check_file, csv_max_bytes, decode_text, read_head

__all__ = ["read_csv"]


def _csv_rows(
    lines: Iterable[str], sep: str, src: str, offset: int
) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each non-empty CSV row of ``lines``, numbered from ``offset``
    lines already passed; a malformed row is a DataError naming its line."""
    reader_ = _csv.reader(lines, delimiter=sep, strict=True)
    try:
        for row in reader_:
            if row:
                yield offset + reader_.line_num, row
    except _csv.Error as exc:
        raise DataError(
            f"{src!r}: line {offset + reader_.line_num} is not valid CSV ({exc}); "
            "fix or remove that line."
        ) from None


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
    max_points: int | None = DEFAULT_MAX_POINTS,
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
        max_bytes: refuse larger files (default 2 GiB: data rows are parsed in blocks, so
            memory grows with the rows and columns used, not the file); None for no limit.
        max_points: a log with more rows is binned by step to at most this many points
            (default 20,000; see :mod:`lossrate.readers._bins`: bin-mean loss, pooled
            loss std, exact intrinsic time), noted in ``meta.extra['thinned']``; None
            keeps every row.

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
        max_points=max_points,
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
    check_file(path, csv_max_bytes(opts.max_bytes))
    text, bom = _head(path, src)
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
        yield from _csv_rows(lines, sep, src, skipped)

    first = next(records(), None)
    if first is None:
        raise DataError(
            f"{src!r}: the header row holds no column names; expected e.g. 'step,loss'."
        )
    names = tuple(c.strip() for c in first[1])

    # the data rows start after the header record's last physical line
    lines_before = first[0]
    offset = bom + sum(
        len(line.encode("utf-8"))
        for line, _ in zip(io.StringIO(text, newline=""), range(lines_before), strict=False)
    )

    def load(selected: list[str]) -> Rows:
        index = {}
        for name in selected:
            if names.count(name) > 1:
                raise DataError(
                    f"{src!r}: column {name!r} appears {names.count(name)} times in the header; "
                    "rename the copies so each column has its own name."
                )
            index[name] = names.index(name)
        return _DataRows(path, src, sep, names, index, opts.allow_truncated).read(
            offset, lines_before
        )

    return Table(
        source=src,
        reader=reader,
        names=names,
        load=load,
        run_name=run_name if run_name is not None else path.stem,
    )


#: bytes of data rows parsed at a time: memory holds the parsed numbers, never the text
CHUNK_BYTES = 8 * 2**20
#: rows gathered in Python lists before they move into numpy arrays (the slow path)
_FLUSH_ROWS = 65536


def _head(path: Path, src: str) -> tuple[str, int]:
    """The start of the file as text, whole lines only, long enough to hold the header row
    (the whole file when it is short), and the length of a leading byte-order mark."""
    n = 2**16
    while True:
        data = read_head(path, n + 1)
        bom = 3 if data.startswith(codecs.BOM_UTF8) else 0
        if len(data) <= n:
            return decode_text(data, src), bom
        cut = data.rfind(b"\n", 0, n)
        if cut >= 0:
            head = data[: cut + 1]
            text = decode_text(head, src)
            if any(ln.strip() and not ln.lstrip().startswith("#") for ln in text.splitlines()):
                return text, bom
        n *= 4


class _DataRows:
    """The data rows of a CSV file from a byte offset on, parsed block by block.

    A block of whole lines (:data:`CHUNK_BYTES`) whose every line has the header's number
    of fields and no quote is parsed by numpy's C reader (``np.loadtxt``); any other block
    (empty cells, a malformed line) goes through the csv module cell by cell, which also
    words the errors; from a block with a quote character or a bare carriage return on
    (a quoted cell may span lines), the rest of the file is read by the csv module as one
    stream. Only the selected columns are kept, as float64 arrays, and line numbers are
    kept per block, so memory grows with rows x selected columns, not with the file.
    """

    def __init__(
        self,
        path: Path,
        src: str,
        sep: str,
        names: tuple[str, ...],
        index: dict[str, int],
        allow_truncated: bool,
    ) -> None:
        self.path, self.src, self.sep, self.names, self.index = path, src, sep, names, index
        self.allow_truncated = allow_truncated
        self.values: dict[str, list[np.ndarray]] = {k: [] for k in index}
        self.present: dict[str, list[np.ndarray]] = {k: [] for k in index}
        self.starts: list[int] = []  # first row of each block
        self.first_line: list[int] = []  # the line number of that row
        self.lines: dict[
            int, np.ndarray
        ] = {}  # per-row line numbers of a block, when not consecutive
        self.n = 0
        self.notes: list[str] = []

    # ---------------------------------------------------------------- blocks
    def read(self, offset: int, lines_before: int) -> Rows:
        try:
            with self.path.open("rb") as f:
                f.seek(offset)
                self._blocks(f, offset, lines_before)
        except PermissionError:
            raise DataError(
                f"{self.src!r} cannot be read (permission denied); make it readable (chmod u+r)."
            ) from None
        except OSError as exc:
            raise DataError(f"{self.src!r} cannot be read ({exc.strerror or exc}).") from None
        return self._rows()

    def _blocks(self, f: BinaryIO, pos: int, line: int) -> None:
        pending = b""
        while True:
            more = f.read(CHUNK_BYTES)
            buf = pending + more
            if more:
                cut = buf.rfind(b"\n")
                if cut < 0:
                    pending = buf
                    continue
                block, pending = buf[: cut + 1], buf[cut + 1 :]
            else:
                block, pending = buf, b""
            if not block:
                return
            text, raw = self._decode(block, pos), block
            if "\r" in text:  # CRLF line ends; a bare CR ends a line for the csv module only
                text = text.replace("\r\n", "\n")
                raw = text.encode("utf-8")
            if '"' in text or "\r" in text:
                f.seek(pos)
                self._stream(f, line)
                return
            if not self._fast(raw, text, line):
                rest = pending if more else b""
                self._records(
                    self._csv_records(io.StringIO(text, newline=""), line),
                    lambda rest=rest, more=bool(more): (
                        bool(rest.strip(b"\r\n")) or (more and _more_records(f))
                    ),
                )
            line += text.count("\n")
            pos += len(block)
            if not more:
                return

    def _decode(self, block: bytes, pos: int) -> str:
        if b"\0" in block:
            raise DataError(
                f"{self.src!r} holds NUL bytes, so it is binary, not a text log; check the path "
                "(TensorBoard event files are read with format='tensorboard')."
            )
        try:
            return block.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{self.src!r} is not UTF-8 text (undecodable byte at offset {pos + exc.start}); "
                "is it a binary file? Re-export the log as UTF-8."
            ) from None

    def _fast(self, raw: bytes, text: str, line: int) -> bool:
        """Parse a block with numpy when every line has exactly the header's fields."""
        nf = len(self.names)
        if nf < 2 or not self.index:
            return False
        arr = np.frombuffer(raw, dtype=np.uint8)
        newlines = np.flatnonzero(arr == 10)
        n = newlines.size + (0 if raw.endswith(b"\n") else 1)
        seps = np.flatnonzero(arr == ord(self.sep))
        per_line = np.bincount(np.searchsorted(newlines, seps), minlength=n)
        if per_line.size != n or (per_line != nf - 1).any():
            return False
        cols = list(self.index.values())
        try:
            data = np.loadtxt(
                io.StringIO(text),
                delimiter=self.sep,
                comments=None,
                usecols=cols,
                ndmin=2,
                dtype=np.float64,
                encoding=None,
            )
        except ValueError:
            return False
        if data.shape[0] != n:
            return False
        self.starts.append(self.n)
        self.first_line.append(line + 1)
        for k, name in enumerate(self.index):
            self.values[name].append(np.ascontiguousarray(data[:, k]))
            self.present[name].append(np.ones(n, dtype=bool))
        self.n += n
        return True

    def _stream(self, f: BinaryIO, line: int) -> None:
        """The rest of the file through the csv module (quoted cells may span lines)."""
        stream = io.TextIOWrapper(f, encoding="utf-8", newline="")

        def lines() -> Iterator[str]:
            try:
                for ln in stream:
                    if "\0" in ln:
                        self._decode(b"\0", 0)
                    yield ln
            except UnicodeDecodeError:
                raise DataError(
                    f"{self.src!r} is not UTF-8 text; is it a binary file? Re-export the log as UTF-8."
                ) from None

        self._records(self._csv_records(lines(), line), lambda: False)
        stream.detach()

    def _csv_records(self, lines: Iterable[str], line: int) -> Iterator[tuple[int, list[str]]]:
        return _csv_rows(lines, self.sep, self.src, line)

    def _records(
        self, records: Iterator[tuple[int, list[str]]], more_after: Callable[[], bool]
    ) -> None:
        """Rows cell by cell: an empty cell is 'not logged', a bad one a DataError."""
        nf = len(self.names)
        cells: dict[str, list[float]] = {k: [] for k in self.index}
        present: dict[str, list[bool]] = {k: [] for k in self.index}
        line_no: list[int] = []
        for lineno, row in records:
            if len(row) != nf:
                if next(records, None) is not None or more_after():
                    raise DataError(
                        f"{self.src!r}: line {lineno} has {len(row)} fields but the header has "
                        f"{nf}; fix or remove that line."
                    )
                if len(row) > nf or not self.allow_truncated:
                    raise DataError(
                        f"{self.src!r}: the last line ({lineno}) has {len(row)} fields but the "
                        f"header has {nf}: the file looks truncated (a run stopped while "
                        "writing?). Pass allow_truncated=True to drop that line, or fix it."
                    )
                self.notes.append(f"dropped the truncated last line {lineno}")
                break
            line_no.append(lineno)
            for name, j in self.index.items():
                value = _number(row[j], name, lineno, self.src)
                cells[name].append(np.nan if value is None else value)
                present[name].append(value is not None)
            if len(line_no) >= _FLUSH_ROWS:
                self._flush(cells, present, line_no)
        self._flush(cells, present, line_no)

    def _flush(
        self, cells: dict[str, list[float]], present: dict[str, list[bool]], line_no: list[int]
    ) -> None:
        if not line_no:
            return
        self.lines[len(self.starts)] = np.asarray(line_no, dtype=np.int64)
        self.starts.append(self.n)
        self.first_line.append(line_no[0])
        for name in self.index:
            self.values[name].append(np.asarray(cells[name], dtype=np.float64))
            self.present[name].append(np.asarray(present[name], dtype=bool))
            cells[name].clear()
            present[name].clear()
        self.n += len(line_no)
        line_no.clear()

    # ---------------------------------------------------------------- result
    def _rows(self) -> Rows:
        def join(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
            out = np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)
            parts.clear()  # one column at a time: the blocks are freed as they are joined
            return out

        series = {
            k: (join(self.values[k], np.float64), join(self.present[k], bool)) for k in self.index
        }
        starts = np.asarray(self.starts, dtype=np.int64)
        first_line, lines = list(self.first_line), dict(self.lines)

        def where(i: int) -> str:
            b = int(np.searchsorted(starts, i, side="right")) - 1
            if b in lines:
                return f"line {int(lines[b][i - starts[b]])}"
            return f"line {first_line[b] + i - int(starts[b])}"

        return Rows(n=self.n, series=series, where=where, notes=tuple(self.notes))


def _more_records(f: BinaryIO) -> bool:
    """Whether the file holds another non-empty line after the current position."""
    while block := f.read(CHUNK_BYTES):
        if block.strip(b"\r\n"):
            return True
    return False


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
