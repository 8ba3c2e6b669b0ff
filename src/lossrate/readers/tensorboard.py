"""Read the scalar series of a TensorBoard run into a :class:`~lossrate.Trajectory`.

Expects a run folder holding ``events.out.tfevents.*`` files (as written by
``torch.utils.tensorboard.SummaryWriter``, Lightning's ``TensorBoardLogger``,
Hugging Face's ``Trainer``, ``tf.summary``), one such file, or a folder with exactly
one run somewhere below it (with several runs the error lists them). All event files
of the run are read in name (= creation time) order and merged; a step logged again
(a resumed run) keeps its last value, or is an error with ``dedupe='error'``.

Scalars are the ``simple_value`` summaries (TF1, PyTorch) and the tensors of the
``scalars`` plugin (TF2). The loss and learning-rate tags are found by name as in
:mod:`lossrate.readers.csv` (``train/loss``, ``Loss/train``, ``loss``; ``lr``,
``learning_rate``, ``lr-AdamW``, ...) or named with ``loss_tag``/``lr_tag`` (or
``columns``). The event wall time becomes the per-step ``wall_s``.

The records are framed here, with TensorBoard's own checksum and ``Event`` protocol
buffers: TensorBoard's loaders stop silently at the first damaged record (they are
built to follow files still being written), which would drop the rest of a run
without a word, while this reader reports the byte offset of a damaged record and
refuses a cut-short last record unless ``allow_truncated=True``. Checksums are
computed in pure Python (a run reads at about 2 MB/s), so
``max_bytes`` (default 64 MiB, the sum over the run's files) bounds the time too.

Example::

    from lossrate.readers import read_tensorboard
    traj = read_tensorboard("runs/exp1", loss_tag="train/loss", lr_tag="train/lr")

Needs the ``tensorboard`` package (``pip install 'lossrate[tensorboard]'``).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import DataError, InvalidArgumentError
from ..trajectory import RunMeta, Trajectory
from ._bins import DEFAULT_MAX_POINTS
from ._build import Options, Rows, Table, build, make_options
from ._files import DEFAULT_MAX_BYTES, check_file, find_dirs, read_bytes

__all__ = ["read_tensorboard"]

EVENT_MARK = "tfevents"


def read_tensorboard(
    path: str | os.PathLike[str],
    *,
    loss_tag: str | None = None,
    lr_tag: str | None = None,
    columns: Mapping[str, str | None] | None = None,
    meta: RunMeta | None = None,
    dedupe: str = "last",
    drop_nonfinite: bool = False,
    interpolate_lr: bool = False,
    allow_truncated: bool = False,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
    max_points: int | None = DEFAULT_MAX_POINTS,
) -> Trajectory:
    """Read a TensorBoard run (see the module docstring).

    ``loss_tag``/``lr_tag`` name the tags of the loss and learning rate (the same as
    ``columns={'loss': ..., 'lr': ...}``); the other arguments are those of
    :func:`lossrate.readers.read_csv`, with ``max_bytes`` bounding the run's files
    together. ``meta.name`` defaults to the run folder's name.
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
    return build(tensorboard_table(Path(path), opts), opts)


def has_event_files(_folder: Path, names: list[str]) -> bool:
    """True for a folder holding at least one TensorBoard event file."""
    return any(EVENT_MARK in n for n in names)


def event_files(path: Path) -> list[Path]:
    """The event files of the one run at ``path`` (a file, a run folder or a folder above one)."""
    if not path.is_dir():
        check_file(path, None)
        return [path]
    runs = find_dirs(path, has_event_files)
    if path in runs:  # event files right here: this is the run (sub-folders are other runs)
        runs = [path]
    if not runs:
        raise DataError(
            f"{str(path)!r} holds no TensorBoard event files (events.out.tfevents.*); "
            "pass the folder given to SummaryWriter(log_dir=...)."
        )
    if len(runs) > 1:
        shown = ", ".join(repr(str(r)) for r in runs[:10])
        raise DataError(
            f"{str(path)!r} holds {len(runs)} TensorBoard runs ({shown}); pass one of them."
        )
    folder = runs[0]
    return sorted(p for p in folder.iterdir() if EVENT_MARK in p.name and p.is_file())


def _tb() -> tuple[Any, Any, Any, Callable[[bytes], int]]:
    try:
        from google.protobuf.message import DecodeError
        from tensorboard.compat.proto import event_pb2
        from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c
        from tensorboard.util import tensor_util
    except ImportError:
        raise InvalidArgumentError(
            "reading TensorBoard logs needs the tensorboard package; install it with "
            "`pip install 'lossrate[tensorboard]'`."
        ) from None
    return event_pb2, tensor_util, DecodeError, masked_crc32c


def _records(
    data: bytes, src: str, allow_truncated: bool, crc: Callable[[bytes], int]
) -> tuple[list[bytes], str | None]:
    """Split a TFRecord file into record bodies, checking lengths and checksums.

    Each record is: uint64 length, uint32 masked CRC-32C of the length, the body,
    uint32 masked CRC-32C of the body (all little-endian).
    """
    out: list[bytes] = []
    off, n = 0, len(data)
    while off < n:
        truncated = n - off < 12
        if not truncated:
            (length,) = struct.unpack_from("<Q", data, off)
            (head_crc,) = struct.unpack_from("<I", data, off + 8)
            if crc(data[off : off + 8]) != head_crc:
                what = "is not a TensorBoard event file" if off == 0 else "is damaged"
                raise DataError(
                    f"{src!r} {what}: the record header at byte {off} (record {len(out)}) fails its "
                    "checksum. Check the path; a damaged event file cannot be read past that point."
                )
            truncated = off + 12 + length + 4 > n
        if truncated:
            if allow_truncated:
                return out, f"dropped a truncated last record at byte {off} of {Path(src).name}"
            raise DataError(
                f"{src!r} ends in a truncated record at byte {off} (record {len(out)}; a run stopped "
                "while writing?). Pass allow_truncated=True to read the complete records before it."
            )
        body = data[off + 12 : off + 12 + length]
        (body_crc,) = struct.unpack_from("<I", data, off + 12 + length)
        if crc(body) != body_crc:
            raise DataError(
                f"{src!r} is damaged: record {len(out)} at byte {off} fails its checksum; "
                "a damaged event file cannot be read past that point."
            )
        out.append(body)
        off += 12 + length + 4
    return out, None


@dataclass
class _Scalars:
    seq: list[int] = field(default_factory=list)
    step: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    value: list[float] = field(default_factory=list)
    label: list[str] = field(default_factory=list)


def tensorboard_table(path: Path, opts: Options) -> Table:
    """The :class:`Table` of a TensorBoard run: one series per scalar tag."""
    event_pb2, tensor_util, decode_error, crc = _tb()
    files = event_files(path)
    sizes = [check_file(f, opts.max_bytes) for f in files]
    if opts.max_bytes is not None and sum(sizes) > opts.max_bytes:
        raise DataError(
            f"the {len(files)} event files of {str(path)!r} hold {sum(sizes)} bytes together, more "
            f"than max_bytes={opts.max_bytes}; pass a larger max_bytes (or None) to read them."
        )
    scalars: dict[str, _Scalars] = {}
    plugin_of: dict[str, str] = {}
    other: dict[str, str] = {}
    notes: list[str] = []
    seq = 0
    for f in files:
        src = str(f)
        bodies, note = _records(read_bytes(f, opts.max_bytes), src, opts.allow_truncated, crc)
        if note:
            notes.append(note)
        for k, body in enumerate(bodies):
            try:
                event = event_pb2.Event.FromString(body)
            except decode_error:
                raise DataError(
                    f"{src!r}: record {k} is not a TensorBoard Event (it does not decode); "
                    "is this a TFRecord file of another kind?"
                ) from None
            if not event.HasField("summary"):
                continue
            for v in event.summary.value:
                tag = v.tag
                if v.HasField("metadata") and v.metadata.plugin_data.plugin_name:
                    plugin_of.setdefault(tag, v.metadata.plugin_data.plugin_name)
                x = _scalar(v, plugin_of.get(tag), tensor_util, src, k)
                if x is None:
                    other.setdefault(tag, plugin_of.get(tag) or str(v.WhichOneof("value")))
                    continue
                s = scalars.setdefault(tag, _Scalars())
                s.seq.append(seq)
                s.step.append(float(event.step))
                s.wall.append(float(event.wall_time))
                s.value.append(x)
                s.label.append(f"{f.name} record {k} (tag {tag!r})")
                seq += 1
    if not scalars:
        kinds = f" (it holds only {sorted(other.items())[:10]})" if other else ""
        raise DataError(
            f"{str(path)!r} holds no scalar series{kinds}; log the loss with add_scalar."
        )

    def load(selected: list[str]) -> Rows:
        parts = [scalars[tag] for tag in selected]
        order = np.argsort(np.concatenate([p.seq for p in parts]), kind="stable")
        sizes_ = [len(p.seq) for p in parts]
        n = sum(sizes_)
        ends = np.cumsum(sizes_)
        series = {}
        for j, (tag, part) in enumerate(zip(selected, parts)):
            present = np.zeros(n, dtype=bool)
            present[ends[j] - sizes_[j] : ends[j]] = True
            vals = np.full(n, np.nan)
            vals[present] = part.value
            series[tag] = (vals[order], present[order])
        labels = [lab for p in parts for lab in p.label]
        step = np.concatenate([p.step for p in parts])[order]
        wall = np.concatenate([p.wall for p in parts])[order]
        every = np.ones(n, dtype=bool)
        return Rows(
            n=n,
            series=series,
            where=lambda i: labels[int(order[i])],
            builtin={"step": (step, every), "wall_time": (wall, every)},
            notes=tuple(notes),
        )

    return Table(
        source=str(path),
        reader="tensorboard",
        names=tuple(scalars),
        load=load,
        run_name=files[0].resolve().parent.name,
        builtin=frozenset({"step", "wall_time"}),
    )


def _scalar(value: Any, plugin: str | None, tensor_util: Any, src: str, k: int) -> float | None:
    kind = value.WhichOneof("value")
    if kind == "simple_value":
        return float(value.simple_value)
    if kind != "tensor" or plugin != "scalars":
        return None
    try:
        arr = np.asarray(tensor_util.make_ndarray(value.tensor))
        if arr.size != 1:
            raise ValueError(f"shape {arr.shape}")
        return float(arr.reshape(-1)[0])
    except (ValueError, TypeError) as exc:
        raise DataError(
            f"{src!r}: record {k}, tag {value.tag!r} is not a single number ({exc}); "
            "log one float per step with add_scalar."
        ) from None
