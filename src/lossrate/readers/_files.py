"""Bounded, read-only file access shared by the readers.

Every reader goes through :func:`read_bytes` (or :func:`check_file` before handing a
path on), so each one refuses the same things the same way: a missing path, a
directory where a file was expected, a pipe or device (reading one could block
forever), an empty file, a file larger than ``max_bytes``, and a file the user may
not read. Nothing here writes.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from .._errors import DataError

__all__ = [
    "CSV_MAX_BYTES",
    "DEFAULT_MAX_BYTES",
    "check_file",
    "csv_max_bytes",
    "decode_text",
    "find_dirs",
    "read_bytes",
    "read_head",
]


class _DefaultBytes(int):
    """The default ``max_bytes``: an int, told apart by identity from the same number passed
    on purpose, so that each reader can apply its own default (:func:`csv_max_bytes`)."""

    def __repr__(self) -> str:
        return f"{int(self)} (the default)"


#: Largest file (or, for a TensorBoard run, the sum of its event files) a reader loads
#: whole unless the caller raises ``max_bytes``: 64 MiB.
DEFAULT_MAX_BYTES: int = _DefaultBytes(64 * 2**20)

#: Largest CSV file read unless the caller sets ``max_bytes``: 2 GiB, some 60 million rows.
#: CSV data rows are parsed in blocks, so memory grows with the rows and the columns used
#: (9 bytes per cell), not with the file; a long log is binned afterwards (``max_points``).
CSV_MAX_BYTES = 2 * 2**30

#: At most this many directory entries are looked at when searching a folder for runs.
MAX_WALK_ENTRIES = 20_000


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def check_file(path: Path, max_bytes: int | None) -> int:
    """Return the size of ``path`` after checking it is a readable regular file within bounds."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise DataError(f"{str(path)!r} does not exist; check the path.") from None
    except PermissionError:
        raise DataError(
            f"{str(path)!r} cannot be reached (permission denied); make it and its folders readable."
        ) from None
    except OSError as exc:
        raise DataError(f"{str(path)!r} cannot be read ({exc.strerror or exc}).") from None
    if stat.S_ISDIR(st.st_mode):
        raise DataError(f"{str(path)!r} is a directory, but a log file was expected here.")
    if not stat.S_ISREG(st.st_mode):
        raise DataError(
            f"{str(path)!r} is not a regular file (a pipe, socket or device); "
            "copy the log to a file first."
        )
    if st.st_size == 0:
        raise DataError(f"{str(path)!r} is empty (0 bytes); was the run logged to another file?")
    if max_bytes is not None and st.st_size > max_bytes:
        raise DataError(
            f"{str(path)!r} is {_mib(st.st_size)}, more than max_bytes={max_bytes} "
            f"({_mib(max_bytes)}); pass a larger max_bytes (or max_bytes=None) to read it."
        )
    return int(st.st_size)


def csv_max_bytes(max_bytes: int | None) -> int | None:
    """The size limit of a CSV file: :data:`CSV_MAX_BYTES` unless ``max_bytes`` was given."""
    return CSV_MAX_BYTES if max_bytes is DEFAULT_MAX_BYTES else max_bytes


def _read(path: Path, limit: int) -> bytes:
    try:
        with path.open("rb") as f:
            return f.read(limit)
    except PermissionError:
        raise DataError(
            f"{str(path)!r} cannot be read (permission denied); make it readable (chmod u+r)."
        ) from None
    except OSError as exc:
        raise DataError(f"{str(path)!r} cannot be read ({exc.strerror or exc}).") from None


def read_bytes(path: Path, max_bytes: int | None) -> bytes:
    """The whole content of ``path``, refusing what :func:`check_file` refuses."""
    check_file(path, max_bytes)
    data = _read(path, -1 if max_bytes is None else max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:
        raise DataError(
            f"{str(path)!r} grew past max_bytes={max_bytes} while being read; "
            "wait for the run to finish or pass a larger max_bytes."
        )
    if not data:
        raise DataError(f"{str(path)!r} is empty (0 bytes); was the run logged to another file?")
    return data


def read_head(path: Path, n: int = 65536) -> bytes:
    """The first ``n`` bytes of ``path`` (for format detection), refusing what :func:`check_file` does."""
    check_file(path, None)
    return _read(path, n)


def decode_text(data: bytes, source: str) -> str:
    """UTF-8 text (a leading byte-order mark is dropped); binary content is a DataError."""
    if b"\0" in data:
        raise DataError(
            f"{source!r} holds NUL bytes, so it is binary, not a text log; "
            "check the path (TensorBoard event files are read with format='tensorboard')."
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{source!r} is not UTF-8 text (undecodable byte at offset {exc.start}); "
            "is it a binary file? Re-export the log as UTF-8."
        ) from None


def find_dirs(
    root: Path, accept: Callable[[Path, list[str]], bool], *, depth: int = 4
) -> list[Path]:
    """Folders under ``root`` (itself included, at most ``depth`` levels down) that ``accept``.

    ``accept(folder, names)`` sees each folder with the names of its entries. The walk
    stops with a DataError after :data:`MAX_WALK_ENTRIES` entries, so pointing a reader
    at a huge tree (a home folder) fails fast instead of crawling it.
    """
    found: list[Path] = []
    seen = 0
    stack = [(root, 0)]
    while stack:
        folder, level = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except PermissionError:
            if folder == root:
                raise DataError(
                    f"{str(root)!r} cannot be listed (permission denied); make it readable."
                ) from None
            continue
        except OSError:
            continue
        seen += len(entries)
        if seen > MAX_WALK_ENTRIES:
            raise DataError(
                f"{str(root)!r} holds more than {MAX_WALK_ENTRIES} entries; "
                "point the reader at one run's folder or log file instead."
            )
        if accept(folder, [e.name for e in entries]):
            found.append(folder)
        if level < depth:
            subdirs = [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False)]
            stack.extend((d, level + 1) for d in reversed(subdirs))
    return found
