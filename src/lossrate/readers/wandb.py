"""Read a Weights & Biases run history into a :class:`~lossrate.Trajectory`.

Accepted exports (no ``wandb`` package is needed):

* JSON lines (``.jsonl``/``.ndjson``, W&B's ``wandb-history.jsonl``, or
  ``run.history()``/``run.scan_history()`` dumped one dict a line): each line one
  history row such as ``{"_step": 12, "_runtime": 3.4, "train/loss": 2.31, "lr": 1e-3}``;
  a row lists only the keys logged in it. W&B writes NaN/inf as ``NaN``/``Infinity``.
  Nested dicts are flattened with dots (``{"train": {"loss": 1}}`` -> ``train.loss``);
  media entries (dicts with ``_type``) are skipped;
* a ``.json`` file holding a list of such rows, or a dict of equal-length lists;
* a CSV export (``run.history().to_csv(...)`` with ``_step``, or a chart export whose
  columns read ``"<run> - train/loss"``), read by :func:`lossrate.readers.read_csv`;
* a run folder holding ``wandb-history.jsonl`` (directly or under ``files/``).

The step is the first of ``step``, ``global_step``, ``trainer/global_step``,
``train/global_step``, ... , ``_step`` present (W&B's own ``_step`` counts ``log`` calls,
which is the optimizer step only when the run logged once per step), and ``_runtime``
becomes the per-step ``wall_s``. Other names are matched as in
:mod:`lossrate.readers.csv`.

Example::

    from lossrate.readers import read_wandb
    traj = read_wandb("wandb/run-20240101_000000-abc123/files/wandb-history.jsonl")
    traj = read_wandb("history.jsonl", columns={"loss": "train/ce", "step": "trainer/global_step"})
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import DataError
from ..trajectory import RunMeta, Trajectory
from ._bins import DEFAULT_MAX_POINTS
from ._build import Options, Rows, Table, build, make_options
from ._files import DEFAULT_MAX_BYTES, decode_text, find_dirs, read_bytes
from .csv import csv_table

__all__ = ["read_wandb"]

HISTORY_FILE = "wandb-history.jsonl"
_FLATTEN_DEPTH = 4


def read_wandb(
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
    """Read a W&B history export (see the module docstring for the forms accepted).

    The arguments are those of :func:`lossrate.readers.read_csv` (``allow_truncated``
    drops a last JSON line cut short); ``meta.name`` defaults to the run folder's or the
    file's name.
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
    return build(wandb_table(Path(path), opts), opts)


def wandb_table(path: Path, opts: Options) -> Table:
    """The :class:`Table` of a W&B export (a file or a run folder)."""
    if path.is_dir():
        runs = find_dirs(path, lambda _folder, names: HISTORY_FILE in names)
        runs = [path] if path in runs else runs
        if len(runs) != 1:
            found = f"{len(runs)} ({', '.join(repr(str(r)) for r in runs[:10])})" if runs else "no"
            raise DataError(
                f"{str(path)!r} holds {found} W&B run folders with {HISTORY_FILE}; pass one run's "
                "folder or history file, or export the history with run.history()."
            )
        path = runs[0] / HISTORY_FILE
    run_name = (
        path.parent.parent.name
        if path.name == HISTORY_FILE and path.parent.name == "files"
        else path.stem
    )
    if path.suffix.lower() in (".csv", ".tsv"):
        return csv_table(path, opts, reader="wandb", run_name=run_name)
    src = str(path)
    text = decode_text(read_bytes(path, opts.max_bytes), src)
    records, labels, notes = _parse(text, path, opts.allow_truncated)
    names: dict[str, None] = {}
    for rec in records:
        names.update(dict.fromkeys(rec))

    def load(selected: list[str]) -> Rows:
        series = {}
        for name in selected:
            vals = np.full(len(records), np.nan)
            present = np.zeros(len(records), dtype=bool)
            for i, rec in enumerate(records):
                value = _number(rec.get(name), name, labels[i], src)
                if value is not None:
                    vals[i] = value
                    present[i] = True
            series[name] = (vals, present)
        return Rows(n=len(records), series=series, where=lambda i: labels[i], notes=tuple(notes))

    return Table(source=src, reader="wandb", names=tuple(names), load=load, run_name=run_name)


def _parse(
    text: str, path: Path, allow_truncated: bool
) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    src = str(path)
    if path.suffix.lower() == ".json" or text.lstrip().startswith("["):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            if exc.msg != "Extra data":  # several values: JSON lines after all
                raise DataError(
                    f"{src!r} is not valid JSON (line {exc.lineno}: {exc.msg}); "
                    "export the history with run.history() as JSON lines."
                ) from None
        except (ValueError, RecursionError) as exc:
            raise DataError(
                f"{src!r} is not usable JSON ({type(exc).__name__}); re-export it."
            ) from None
        else:
            records = _records_of(doc, src)
            return records, [f"record {i}" for i in range(len(records))], []
    records, labels, notes = [], [], []
    lines = text.split("\n")
    last = max((i for i, ln in enumerate(lines) if ln.strip()), default=-1)
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError) as exc:
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
            if i == last and not text.endswith("\n"):
                if allow_truncated:
                    notes.append(f"dropped the truncated last line {i + 1}")
                    continue
                raise DataError(
                    f"{src!r}: the last line ({i + 1}) is not valid JSON ({reason}): the file looks "
                    "truncated (a run stopped while writing?). Pass allow_truncated=True to drop it."
                ) from None
            raise DataError(
                f"{src!r}: line {i + 1} is not valid JSON ({reason}); each line must be one history "
                'row such as {"_step": 0, "loss": 2.3}. Fix or remove that line.'
            ) from None
        if not isinstance(obj, dict):
            raise DataError(
                f"{src!r}: line {i + 1} holds a JSON {type(obj).__name__}, not an object; each line "
                'must be one history row such as {"_step": 0, "loss": 2.3}.'
            )
        records.append(_flatten(obj))
        labels.append(f"line {i + 1}")
    if not records:
        raise DataError(f"{src!r} holds no history rows (only blank lines).")
    return records, labels, notes


def _records_of(doc: Any, src: str) -> list[dict[str, Any]]:
    if isinstance(doc, list):
        bad = next((i for i, r in enumerate(doc) if not isinstance(r, dict)), None)
        if bad is not None:
            raise DataError(
                f"{src!r}: record {bad} is a JSON {type(doc[bad]).__name__}, not an object; "
                'a history is a list of rows such as {"_step": 0, "loss": 2.3}.'
            )
        if not doc:
            raise DataError(f"{src!r} holds an empty list: the history has no rows.")
        return [_flatten(r) for r in doc]
    if isinstance(doc, dict) and doc and all(isinstance(v, list) for v in doc.values()):
        lengths = {len(v) for v in doc.values()}
        if len(lengths) != 1 or 0 in lengths:
            raise DataError(
                f"{src!r}: the columns have different or zero lengths {sorted(lengths)}; "
                "a history as a dict needs equal-length lists."
            )
        n = lengths.pop()
        return [{k: v[i] for k, v in doc.items()} for i in range(n)]
    raise DataError(
        f"{src!r} holds a JSON {type(doc).__name__} that is not a history (a run summary?); "
        "export the history with run.history() as a list of rows or as JSON lines."
    )


def _flatten(obj: dict[str, Any], prefix: str = "", depth: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            if "_type" not in value and depth < _FLATTEN_DEPTH:
                out.update(_flatten(value, f"{name}.", depth + 1))
            continue
        out[name] = value
    return out


def _number(value: Any, name: str, where: str, src: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            return math.inf if value > 0 else -math.inf
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise DataError(
        f"{src!r}: {where}: {name!r} holds {str(value)[:40]!r} ({type(value).__name__}), "
        "which is not a number; map another column with columns={...}."
    )
