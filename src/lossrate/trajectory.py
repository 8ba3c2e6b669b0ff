"""One training curve: the :class:`Trajectory` container, its validation and file IO.

A trajectory holds, per logged step k, the batch mean loss ``L_k`` and, when they
were measured, the batch statistics of the state-rate ODE

    dL/dt = -phi(t) * g(L, sigma_L),    t = sum_{j<k} eta_j  (intrinsic time).

Columns (all 1-D, one entry per logged step):

============  =====================================================================
step          optimizer step index (int, strictly increasing)
t             intrinsic time, the sum of the learning rates of the steps *before* k
              (non-decreasing: a step with lr = 0 leaves it unchanged)
lr            learning rate used at step k
loss          batch mean loss L (required, finite, >= 0)
loss_std      population std of the per-sample losses sigma_L (``torch.var`` is unbiased!)
batch_size    number of samples in the batch
residual_sq   R = mean_i ||r_i||^2, r_i = d loss_i / d outputs_i
grad_sq       ||grad L||^2
pgrad_sq      grad L^T P grad L, the squared norm the optimizer actually applies
alpha_eff     measured CE closure constant sum ||r_i||^2 / sum (1 - exp(-l_i))^2
k_sq          K^2 = mean_i ||d z_i / d theta||_F^2 (trace of the normalised NTK)
wall_s        wall-clock seconds of this step
energy_j      energy of this step in joules (see ``meta.energy_source``)
test_loss     held-out loss, NaN where it was not evaluated
pgrad_sq_     the debiased grad L^T P grad L from K >= 2 gradient groups (the recorder's
 debiased     ``gradient_noise.csv``, attached by :func:`lossrate.readers.read_log`);
              unbiased for the full-data value, so a single step may be negative
============  =====================================================================

``step``, ``t`` and ``loss`` must be finite; the optional columns may hold NaN for
"not measured at this step" but never +-inf.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import DataError, InvalidArgumentError

__all__ = [
    "OPTIONAL_COLUMNS",
    "RunMeta",
    "Trajectory",
    "atomic_write",
    "csv_header_lines",
    "csv_row",
]

FORMAT_TAG = "lossrate-trajectory"
FORMAT_VERSION = 1
#: values of RunMeta.time_unit: t is a sum of learning rates, or a step count
TIME_UNITS = ("intrinsic", "step")

#: Optional per-step columns, in file order, with whether negative values are allowed.
OPTIONAL_COLUMNS: dict[str, bool] = {
    "lr": False,
    "loss_std": False,
    "batch_size": False,
    "residual_sq": False,
    "grad_sq": False,
    "pgrad_sq": False,
    "alpha_eff": False,
    "k_sq": False,
    "wall_s": False,
    "energy_j": False,
    "test_loss": False,
    "pgrad_sq_debiased": True,
}
REQUIRED_COLUMNS = ("step", "t", "loss")
ALL_COLUMNS = ("step", "t", "loss", *OPTIONAL_COLUMNS)


@dataclass(frozen=True)
class RunMeta:
    """What is known about the run a trajectory came from.

    Attributes:
        loss: loss family name as in :func:`lossrate.closures.get_closure` ("ce", "mse", ...).
        classes: number of classes C (CE) or outputs (MSE), when known.
        label_smoothing: label-smoothing epsilon of a CE loss (0 for none).
        mse_scale: the scale a of an MSE loss l = a ||z - y||^2 (``nn.MSELoss``: a = 1/C).
        optimizer: optimizer name, e.g. "sgd", "adam".
        schedule: learning-rate schedule name, e.g. "constant", "cosine", "wsd".
        dataset: data set name.
        model: model name.
        peak_lr: peak learning rate of the schedule.
        batch_size: nominal batch size.
        model_size: number of parameters.
        energy_source: where ``energy_j`` comes from ("rapl", "nvml", "zeus", "estimate", ...).
        time_unit: "intrinsic" when ``t`` is a sum of learning rates, "step" when no lr was known.
        name: a short run name for tables and plots.
        extra: free-form scalar facts (seed, notes), JSON-serialisable scalars only.
    """

    loss: str | None = None
    classes: int | None = None
    label_smoothing: float = 0.0
    mse_scale: float | None = None
    optimizer: str | None = None
    schedule: str | None = None
    dataset: str | None = None
    model: str | None = None
    peak_lr: float | None = None
    batch_size: int | None = None
    model_size: float | None = None
    energy_source: str | None = None
    time_unit: str = "intrinsic"
    name: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict."""
        out = dataclasses.asdict(self)
        out["extra"] = dict(self.extra)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "metadata") -> RunMeta:
        """Inverse of :meth:`to_dict`, checking every field's type and range; unknown keys are
        an error naming them (:mod:`lossrate._validate`)."""
        from . import _validate as v

        fix = "Fix the value in the metadata (the first '#' line of a trajectory file)."
        if not isinstance(data, Mapping):
            raise DataError(
                f"{source}: run metadata must be a JSON object, got {type(data).__name__}."
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DataError(
                f"{source}: unknown metadata key(s) {unknown[:10]}; known keys are "
                f"{sorted(known)}. Move free-form facts under 'extra'."
            )
        out: dict[str, Any] = {}
        for key, value in data.items():
            where = f"meta.{key}"
            if key in ("classes", "batch_size"):
                out[key] = v.integer(value, source, where, fix, lo=1, optional=True)
            elif key == "label_smoothing":
                out[key] = v.number(value, source, where, fix, lo=0.0, hi=1.0, hi_open=True)
            elif key in ("mse_scale", "peak_lr", "model_size"):
                out[key] = v.number(value, source, where, fix, lo=0.0, lo_open=True, optional=True)
            elif key == "time_unit":
                out[key] = v.choice(value, source, where, TIME_UNITS, fix)
            elif key == "extra":
                out[key] = v.scalars(value, source, where, fix)
            else:
                out[key] = v.text(value, source, where, fix, optional=True)
        return cls(**out)


def _as_column(name: str, value: Any, n: int | None) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise DataError(f"column {name!r} must hold numbers; got {str(value)[:60]!r}.") from None
    if arr.ndim != 1:
        raise DataError(
            f"column {name!r} must be one-dimensional, got shape {arr.shape}; pass one value per step."
        )
    if n is not None and arr.shape[0] != n:
        raise DataError(
            f"column {name!r} has {arr.shape[0]} values but 'loss' has {n}; "
            "all columns need one value per logged step."
        )
    return arr


def intrinsic_time(step: np.ndarray, lr: np.ndarray) -> np.ndarray:
    """Intrinsic time t_i = sum over optimizer steps j in [step_0, step_i) of eta_j.

    Between two logged steps s_{i-1} < s_i the learning rate is taken to vary
    linearly, so the gap contributes ``gap * lr_{i-1} + (lr_i - lr_{i-1}) * (gap - 1) / 2``
    (exact for contiguous steps and for linear schedules). t_0 = 0.
    """
    gap = np.diff(np.asarray(step, dtype=float))
    lr = np.asarray(lr, dtype=float)
    # in place: a log of millions of steps needs three columns' worth of memory, not eight
    inc = np.subtract(lr[1:], lr[:-1])
    gap -= 1.0
    inc *= gap
    inc *= 0.5
    gap += 1.0
    gap *= lr[:-1]
    inc += gap
    del gap
    t = np.empty(inc.size + 1)
    t[0] = 0.0
    np.cumsum(inc, out=t[1:])
    return t


@dataclass(frozen=True, eq=False)
class Trajectory:
    """One training curve (see the module docstring for the columns).

    Build one with :meth:`from_arrays`, which fills ``t`` from ``lr`` and validates;
    the dataclass constructor validates too but takes every column as given.
    """

    step: np.ndarray
    t: np.ndarray
    loss: np.ndarray
    lr: np.ndarray | None = None
    loss_std: np.ndarray | None = None
    batch_size: np.ndarray | None = None
    residual_sq: np.ndarray | None = None
    grad_sq: np.ndarray | None = None
    pgrad_sq: np.ndarray | None = None
    alpha_eff: np.ndarray | None = None
    k_sq: np.ndarray | None = None
    wall_s: np.ndarray | None = None
    energy_j: np.ndarray | None = None
    test_loss: np.ndarray | None = None
    pgrad_sq_debiased: np.ndarray | None = None
    meta: RunMeta = field(default_factory=RunMeta)

    # ------------------------------------------------------------------ build
    def __post_init__(self) -> None:
        if not isinstance(self.meta, RunMeta):
            raise InvalidArgumentError(
                f"meta must be a RunMeta, got {type(self.meta).__name__}; "
                "build it with RunMeta(loss='ce', classes=10, ...)."
            )
        loss = _as_column("loss", self.loss, None)
        n = loss.shape[0]
        if n == 0:
            raise DataError(
                "the trajectory is empty (0 rows); a curve needs at least one logged step."
            )
        step = _as_column("step", self.step, n)
        t = _as_column("t", self.t, n)
        for name, arr in (("step", step), ("t", t), ("loss", loss)):
            bad = ~np.isfinite(arr)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise DataError(
                    f"column {name!r} holds {float(arr[i])!r} at row {i}; "
                    "required columns must be finite. Drop those rows "
                    "(Trajectory.read(..., drop_nonfinite=True)) or fix the log."
                )
        if np.any(step != np.round(step)):
            raise DataError("column 'step' must hold whole numbers (optimizer step indices).")
        if (loss < 0).any():
            i = int(np.flatnonzero(loss < 0)[0])
            raise DataError(
                f"column 'loss' is negative ({float(loss[i])!r} at row {i}); lossrate models losses >= 0. "
                "Shift the loss by its known minimum first."
            )
        d = np.diff(step)
        if (d <= 0).any():
            i = int(np.flatnonzero(d <= 0)[0]) + 1
            raise DataError(
                f"column 'step' must be strictly increasing, but row {i} has {float(step[i])!r} "
                f"after {float(step[i - 1])!r}; sort the rows and drop duplicated steps "
                "(Trajectory.from_arrays(..., sort=True) keeps the last duplicate)."
            )
        d = np.diff(t)
        if (d < 0).any():  # equal t is fine: steps with lr = 0 (a warmup from 0)
            i = int(np.flatnonzero(d < 0)[0]) + 1
            raise DataError(
                f"column 't' (intrinsic time, the running sum of learning rates) must not "
                f"decrease, but row {i} has {float(t[i])!r} after {float(t[i - 1])!r}; check "
                "that no learning rate is negative, or rebuild t from lr (from_arrays)."
            )
        object.__setattr__(self, "step", step.astype(np.int64))
        object.__setattr__(self, "t", t)
        object.__setattr__(self, "loss", loss)
        for name, allow_neg in OPTIONAL_COLUMNS.items():
            value = getattr(self, name)
            if value is None:
                continue
            arr = _as_column(name, value, n)
            if np.isinf(arr).any():
                raise DataError(
                    f"column {name!r} holds an infinite value; use NaN for 'not measured' or drop the row."
                )
            if not allow_neg and (arr < 0).any():
                i = int(np.flatnonzero(arr < 0)[0])
                raise DataError(f"column {name!r} must be >= 0, got {float(arr[i])!r} at row {i}.")
            object.__setattr__(self, name, arr)
        for name in ALL_COLUMNS:
            arr = getattr(self, name)
            if arr is not None:
                arr.setflags(write=False)

    @classmethod
    def from_arrays(
        cls,
        loss: Any,
        *,
        step: Any = None,
        lr: Any = None,
        t: Any = None,
        meta: RunMeta | None = None,
        sort: bool = False,
        **columns: Any,
    ) -> Trajectory:
        """Build a validated trajectory.

        ``t`` defaults to the intrinsic time built from ``lr`` (see :func:`intrinsic_time`);
        with neither, ``t = step - step[0]`` and ``meta.time_unit`` becomes "step".
        ``sort=True`` sorts by step and keeps the last of duplicated steps.
        """
        unknown = sorted(set(columns) - set(OPTIONAL_COLUMNS))
        if unknown:
            raise DataError(
                f"unknown column(s) {unknown}; known optional columns are {sorted(OPTIONAL_COLUMNS)}."
            )
        loss_a = _as_column("loss", loss, None)
        n = loss_a.shape[0]
        if n == 0:
            raise DataError(
                "the trajectory is empty (0 rows); a curve needs at least one logged step."
            )
        step_a = np.arange(n, dtype=float) if step is None else _as_column("step", step, n)
        cols = {k: _as_column(k, v, n) for k, v in columns.items() if v is not None}
        lr_a = None if lr is None else _as_column("lr", lr, n)
        t_a = None if t is None else _as_column("t", t, n)
        if sort:
            order = np.argsort(step_a, kind="stable")
            step_sorted = step_a[order]
            keep = np.ones(n, dtype=bool)
            keep[:-1] = step_sorted[1:] != step_sorted[:-1]
            idx = order[keep]
            step_a, loss_a = step_a[idx], loss_a[idx]
            lr_a = None if lr_a is None else lr_a[idx]
            t_a = None if t_a is None else t_a[idx]
            cols = {k: v[idx] for k, v in cols.items()}
        meta = meta or RunMeta()
        if t_a is None:
            if lr_a is not None:
                if not np.isfinite(lr_a).all() or (lr_a < 0).any():
                    raise DataError(
                        "column 'lr' must be finite and >= 0 to build intrinsic time t = sum(lr); "
                        "fill the missing learning rates or pass t explicitly."
                    )
                if np.isfinite(step_a).all() and (np.diff(step_a) > 0).all():
                    t_a = intrinsic_time(step_a, lr_a)
                else:
                    t_a = step_a  # validation below reports the bad steps
            else:
                t_a = step_a - step_a[0] if np.isfinite(step_a[0]) else step_a
                meta = dataclasses.replace(meta, time_unit="step")
        return cls(step=step_a, t=t_a, loss=loss_a, lr=lr_a, meta=meta, **cols)

    # ----------------------------------------------------------------- access
    def __len__(self) -> int:
        return int(self.loss.shape[0])

    @property
    def n(self) -> int:
        """Number of logged steps."""
        return len(self)

    def columns(self) -> dict[str, np.ndarray]:
        """The present columns, in file order."""
        return {k: getattr(self, k) for k in ALL_COLUMNS if getattr(self, k) is not None}

    def has(self, name: str) -> bool:
        """True when column ``name`` is present and holds at least one finite value."""
        arr = getattr(self, name, None)
        return arr is not None and bool(np.isfinite(arr).any())

    def replace(self, **changes: Any) -> Trajectory:
        """A copy with some columns or ``meta`` replaced (validated again)."""
        return dataclasses.replace(self, **changes)

    def select(self, rows: Any) -> Trajectory:
        """The rows picked by a boolean mask, a slice or an index array."""
        picked = {k: v[rows] for k, v in self.columns().items()}
        if np.asarray(picked["loss"]).size == 0:
            raise InvalidArgumentError("rows selects no row; a trajectory needs at least one step.")
        return Trajectory(**picked, meta=self.meta)

    def prefix(self, fraction: float) -> Trajectory:
        """The first ``fraction`` of the run, cut by step: rows with step <= s0 + fraction (sN - s0)."""
        try:
            f = float(fraction)
        except (TypeError, ValueError):
            raise InvalidArgumentError(
                f"fraction must be a number in (0, 1], got {fraction!r}."
            ) from None
        if not 0 < f <= 1:
            raise InvalidArgumentError(
                f"fraction must lie in (0, 1], got {fraction!r}; e.g. 0.3 for 30 %."
            )
        cut = self.step[0] + f * (self.step[-1] - self.step[0])
        return self.select(self.step <= cut + 1e-9)

    # --------------------------------------------------------------------- IO
    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write to ``.csv`` (lossless, metadata in a first comment line) or ``.parquet``.

        The file is written to a temporary name and renamed, so an existing good file is
        never replaced by a partial one.
        """
        p = Path(path)
        suffix = p.suffix.lower()
        if suffix == ".csv":
            atomic_write(p, lambda f: f.write(self._csv_text()))
        elif suffix in (".parquet", ".pq"):
            self._write_parquet(p)
        else:
            raise InvalidArgumentError(
                f"path {str(p)!r} has suffix {suffix!r}; use '.csv' or '.parquet'."
            )
        return p

    @classmethod
    def read(cls, path: str | os.PathLike[str], *, drop_nonfinite: bool = False) -> Trajectory:
        """Read a file written by :meth:`write` (or by the recorder).

        ``drop_nonfinite=True`` drops rows whose loss is NaN/inf (e.g. the flagged last row
        of a run that diverged) instead of raising.
        """
        p = Path(path)
        if not p.is_file():
            raise DataError(f"{str(p)!r} does not exist or is not a file; check the path.")
        suffix = p.suffix.lower()
        if suffix == ".csv":
            meta, cols = _read_csv(p)
        elif suffix in (".parquet", ".pq"):
            meta, cols = _read_parquet(p)
        else:
            raise InvalidArgumentError(
                f"path {str(p)!r} has suffix {suffix!r}; lossrate files are '.csv' or '.parquet'. "
                "For foreign logs use lossrate.readers.read_log."
            )
        if drop_nonfinite and "loss" in cols:
            keep = np.isfinite(np.asarray(cols["loss"], dtype=float))
            cols = {k: np.asarray(v)[keep] for k, v in cols.items()}
        try:
            return cls(**cols, meta=meta)
        except DataError as exc:
            raise DataError(f"{str(p)!r}: {exc}") from None
        except TypeError as exc:
            raise DataError(
                f"{str(p)!r}: missing required column ({exc}); need step, t, loss."
            ) from None

    def _csv_text(self) -> str:
        cols = self.columns()
        lines = csv_header_lines(self.meta, cols)
        arrays = list(cols.values())
        for i in range(self.n):
            lines.append(csv_row(arrays[0][i], [a[i] for a in arrays[1:]]))
        return "\n".join(lines) + "\n"

    def _write_parquet(self, p: Path) -> None:
        pa, pq = _pyarrow()
        cols = self.columns()
        table = pa.table({k: pa.array(v) for k, v in cols.items()})
        header = {"format": FORMAT_TAG, "version": FORMAT_VERSION, "meta": self.meta.to_dict()}
        table = table.replace_schema_metadata({b"lossrate": json.dumps(header).encode()})
        atomic_write(p, lambda f: pq.write_table(table, f), binary=True)


def csv_header_lines(meta: RunMeta, columns: Iterable[str]) -> list[str]:
    """The two header lines of a trajectory CSV (no newlines): the metadata comment and the
    column names. ``columns`` are names from the module docstring, "step" first."""
    header = {"format": FORMAT_TAG, "version": FORMAT_VERSION, "meta": meta.to_dict()}
    return [f"# {json.dumps(header, sort_keys=True)}", ",".join(columns)]


def csv_row(step: Any, values: Iterable[Any]) -> str:
    """One data line of a trajectory CSV (no newline): the integer step, then each value as
    the shortest repr that reads back exactly (``nan`` for NaN)."""
    return ",".join([str(int(step)), *(_fmt(float(v)) for v in values)])


def _fmt(x: float) -> str:
    if math.isnan(x):
        return "nan"
    return repr(x)


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise InvalidArgumentError(
            "Parquet files need pyarrow; install it with `pip install 'lossrate[parquet]'` "
            "or use a '.csv' path."
        ) from None
    return pa, pq


def _parse_header(text: str, source: str) -> RunMeta:
    from ._validate import parse_json

    header = parse_json(
        text,
        source=f"{source}: the metadata line",
        fix="Rewrite the file with Trajectory.write, or remove its first '#' line.",
    )
    if not isinstance(header, dict) or header.get("format") != FORMAT_TAG:
        raise DataError(f"{source}: not a lossrate trajectory (no '{FORMAT_TAG}' header).")
    if header.get("version") != FORMAT_VERSION:
        raise DataError(
            f"{source}: trajectory format version {header.get('version')!r} is not supported "
            f"(this lossrate reads version {FORMAT_VERSION}); upgrade lossrate."
        )
    return RunMeta.from_dict(header.get("meta", {}), source=source)


def _read_csv(p: Path) -> tuple[RunMeta, dict[str, np.ndarray]]:
    source = str(p)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{source!r} is not UTF-8 text; is it a binary file?") from None
    lines = text.splitlines()
    meta = RunMeta()
    if lines and lines[0].startswith("#"):
        meta = _parse_header(lines[0][1:].strip(), source)
        lines = lines[1:]
    if not lines or not lines[0].strip():
        raise DataError(f"{source!r} has no header row; expected e.g. 'step,t,loss'.")
    names = [c.strip() for c in lines[0].split(",")]
    unknown = [c for c in names if c not in ALL_COLUMNS]
    if unknown:
        raise DataError(
            f"{source!r}: unknown column(s) {unknown}; a lossrate trajectory has {list(ALL_COLUMNS)}. "
            "For other logs use lossrate.readers.read_csv with a column mapping."
        )
    if len(set(names)) != len(names):
        raise DataError(f"{source!r}: a column name appears twice in {names}.")
    rows = [ln for ln in lines[1:] if ln.strip()]
    data = np.empty((len(rows), len(names)))
    for i, ln in enumerate(rows):
        cells = ln.split(",")
        if len(cells) != len(names):
            raise DataError(
                f"{source!r}: row {i + 1} has {len(cells)} fields, the header has {len(names)} "
                "(a truncated or corrupted file?). Remove the bad row."
            )
        try:
            data[i] = [float(c) for c in cells]
        except ValueError:
            raise DataError(
                f"{source!r}: row {i + 1} holds a value that is not a number: {ln[:80]!r}."
            ) from None
    return meta, {name: data[:, j] for j, name in enumerate(names)}


def _read_parquet(p: Path) -> tuple[RunMeta, dict[str, np.ndarray]]:
    pa, pq = _pyarrow()
    try:
        table = pq.read_table(p)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{str(p)!r} is not a readable Parquet file ({exc}).") from None
    raw = (table.schema.metadata or {}).get(b"lossrate")
    meta = _parse_header(raw.decode(), str(p)) if raw else RunMeta()
    unknown = [c for c in table.column_names if c not in ALL_COLUMNS]
    if unknown:
        raise DataError(f"{str(p)!r}: unknown column(s) {unknown}; known are {list(ALL_COLUMNS)}.")
    return meta, {c: table.column(c).to_numpy() for c in table.column_names}


def atomic_write(path: Path, write: Callable[[Any], Any], *, binary: bool = False) -> None:
    """Call ``write(file)`` on a temporary file beside ``path`` and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w", encoding=None if binary else "utf-8") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
