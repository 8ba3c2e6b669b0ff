"""Output folders written whole: the new folder is built beside the old one and swapped in with
one rename, so a failure or a kill at any moment leaves the old folder or the new one, complete.

* :func:`check_output_folder` refuses, before any work, an output that is a file (or
  ``/dev/null``), the current folder or one above it, a folder holding files lossrate did not
  write, or a folder whose ``trajectory.csv`` is the input being read;
* :func:`write_folder` builds ``.NAME.tmp-PID`` beside ``NAME``, carries over (hard links) the
  entries of the old folder the build did not write (a training run's checkpoint and config),
  writes the manifest :data:`MANIFEST` (what marks a lossrate output folder) and swaps the two
  with ``renameat2(RENAME_EXCHANGE)`` where the system has it (else two renames, undone on the
  next run if a kill falls between them);
* :func:`clean_stale` removes what an earlier killed run left: ``.NAME.tmp-*`` folders,
  ``.NAME.old-*`` folders (restored first when ``NAME`` itself is missing), and the
  ``.X.*.tmp`` files of :func:`lossrate.trajectory.atomic_write` inside the folder.

``LOSSRATE_KILL_AFTER_WRITES=N`` (a test hook) makes the process SIGKILL itself after its N-th
write: each file of a report, the manifest and each rename of the swap (:func:`kill_point`).
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import signal
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from ._errors import InvalidArgumentError

__all__ = [
    "MANIFEST",
    "check_output_file",
    "check_output_folder",
    "clean_stale",
    "clean_temporaries",
    "is_lossrate_folder",
    "kill_point",
    "write_folder",
]

T = TypeVar("T")

#: the file that marks a folder lossrate wrote (and lists what it wrote)
MANIFEST = ".lossrate-output.json"
#: what lossrate writes into a report or run folder
_OURS = {
    MANIFEST,
    "trajectory.csv",
    "fit.json",
    "report.html",
    "figures",
    "config.toml",
    "checkpoint.pt",
    "exact.json",
    "gradient_noise.csv",  # the recorder's, with gradient groups (lossrate.measured)
}
_TMP_FILE = re.compile(r"^\.(.+)\.[A-Za-z0-9_]{6,}\.tmp$")  # atomic_write's mkstemp names
_writes = 0


def kill_point() -> None:
    """Count one file write; SIGKILL this process after the N-th when the test hook
    ``LOSSRATE_KILL_AFTER_WRITES=N`` is set (the kill-at-each-write tests)."""
    global _writes
    limit = os.environ.get("LOSSRATE_KILL_AFTER_WRITES")
    if not limit:
        return
    _writes += 1
    if _writes >= int(limit):
        os.kill(os.getpid(), signal.SIGKILL)


def is_lossrate_folder(folder: Path) -> bool:
    """Whether ``folder`` is empty or was written by lossrate: it holds the manifest, or (a
    folder of an earlier version) only the names lossrate writes and their temporaries."""
    entries = [e.name for e in folder.iterdir()]
    if not entries or MANIFEST in entries:
        return True
    return all(name in _OURS or _TMP_FILE.match(name) for name in entries)


def check_output_folder(
    out: Path, *, flag: str = "--out", inputs: Iterable[Path] = (), rewrites: Iterable[str] = ()
) -> None:
    """Refuse an output folder lossrate must not replace (module docstring), before any work.

    ``inputs``: files being read (one of them must not be among ``rewrites``, the file names
    the new folder writes afresh).
    """
    out = Path(out)
    shown = f"{flag} {str(out)!r}"
    if out.exists() and not out.is_dir():
        raise InvalidArgumentError(
            f"{shown} is a file, not a folder; name a folder for the report (it is created), "
            f"e.g. {flag} {out.stem or 'report'}.lossrate."
        )
    resolved = out.resolve()
    cwd = Path.cwd().resolve()
    if resolved == cwd or cwd.is_relative_to(resolved):
        raise InvalidArgumentError(
            f"{shown} is the current folder (or holds it); lossrate replaces its output folder "
            f"as a whole, so name a new folder, e.g. {flag} report."
        )
    if resolved == Path(resolved.anchor):
        raise InvalidArgumentError(f"{shown} is the root folder; name a new folder with {flag}.")
    for src in inputs:
        src = Path(src).resolve()
        if src == resolved:
            raise InvalidArgumentError(
                f"{shown} is the input being read; name another folder with {flag}."
            )
        if src.parent == resolved and src.name in set(rewrites):
            raise InvalidArgumentError(
                f"{shown} holds the input {src.name!r}, which the report would overwrite; name "
                f"another folder with {flag}."
            )
    if out.is_dir() and not is_lossrate_folder(out):
        theirs = sorted(
            e.name for e in out.iterdir() if e.name not in _OURS and not _TMP_FILE.match(e.name)
        )
        listed = ", ".join(theirs[:5]) + (", ..." if len(theirs) > 5 else "")
        raise InvalidArgumentError(
            f"{shown} holds files lossrate did not write ({listed}); lossrate replaces its output "
            f"folder as a whole and will not replace them. Name a new or empty folder with {flag}."
        )


def check_output_file(path: Path, *, flag: str, inputs: Iterable[Path] = ()) -> None:
    """Refuse an output file that is a folder, a device (``/dev/null``) or an input."""
    path = Path(path)
    shown = f"{flag} {str(path)!r}"
    if path.is_dir():
        raise InvalidArgumentError(f"{shown} is a folder; name a file, e.g. {flag} prediction.csv.")
    if path.exists() and not path.is_file():
        raise InvalidArgumentError(
            f"{shown} is not a regular file (a device or a pipe); name a file to write."
        )
    resolved = path.resolve()
    for src in inputs:
        src = Path(src).resolve()
        if src == resolved or (
            src.is_dir() and resolved.is_relative_to(src) and resolved.name == "trajectory.csv"
        ):
            raise InvalidArgumentError(f"{shown} is the input log; name another file with {flag}.")
    if not resolved.parent.is_dir():
        raise InvalidArgumentError(
            f"{shown}: its folder {str(path.parent)!r} does not exist; create it or name another file."
        )


def clean_stale(out: Path) -> None:
    """Remove what a killed run left beside and inside ``out`` (module docstring)."""
    out = Path(out)
    parent = out.parent
    if not parent.is_dir():
        return
    olds = sorted(parent.glob(f".{glob_escape(out.name)}.old-*"))
    if not out.exists() and olds:
        olds[-1].rename(out)  # a kill between the two renames of a swap: the old one is back
        olds = olds[:-1]
    for stale in [*olds, *parent.glob(f".{glob_escape(out.name)}.tmp-*")]:
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
    clean_temporaries(out)
    clean_temporaries(out / "figures")


def clean_temporaries(folder: Path, names: Iterable[str] | None = None) -> list[Path]:
    """Remove the ``.X.*.tmp`` files :func:`lossrate.trajectory.atomic_write` leaves when
    killed (only for ``X`` in ``names`` when given); returns what was removed."""
    folder = Path(folder)
    keep = None if names is None else set(names)
    removed = []
    if folder.is_dir():
        for entry in folder.iterdir():
            m = _TMP_FILE.match(entry.name)
            if m and (keep is None or m.group(1) in keep) and entry.is_file():
                entry.unlink(missing_ok=True)
                removed.append(entry)
    return removed


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def write_folder(out: Path, build: Callable[[Path], T]) -> T:
    """Call ``build(tmp)`` on a new folder beside ``out``, then swap it in (module docstring).

    The old folder stays whole until the swap; on any failure the new one is removed.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(out)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        result = build(tmp)
        written = sorted(e.name for e in tmp.iterdir())
        if out.is_dir():
            _carry_over(out, tmp, skip={*written, "figures", MANIFEST})
        manifest = {"format": "lossrate-output", "version": 1, "written": written}
        _write_text(tmp / MANIFEST, json.dumps(manifest, indent=2) + "\n")
        _fsync_dir(tmp)
        _swap(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(tmp, ignore_errors=True)  # after an exchange: the old folder
    return result


def _carry_over(old: Path, new: Path, skip: set[str]) -> None:
    for entry in old.iterdir():
        if entry.name in skip or _TMP_FILE.match(entry.name):
            continue
        target = new / entry.name
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, target, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(str(entry), str(target))


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:
        shutil.copy2(src, dst, follow_symlinks=False)


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    kill_point()


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap ``a`` and ``b`` atomically (Linux renameat2); False where unavailable."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return rc == 0


def _swap(new: Path, out: Path) -> None:
    if not out.exists():
        os.rename(new, out)
        kill_point()
        return
    if _exchange(new, out):
        kill_point()
        return
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    os.rename(out, old)
    kill_point()
    os.rename(new, out)
    kill_point()
    shutil.rmtree(old, ignore_errors=True)
