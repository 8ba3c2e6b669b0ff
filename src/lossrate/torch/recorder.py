"""Stream a training run to ``run_dir/trajectory.csv``, one row per optimizer step.

The file is exactly the :class:`lossrate.Trajectory` CSV format (metadata comment line,
header, one line per step; ``Trajectory.read`` reads it and writes it back byte for byte),
with every column present:

    step, t, loss, lr, loss_std, batch_size, residual_sq, grad_sq, pgrad_sq, alpha_eff,
    k_sq, wall_s, energy_j, test_loss

``t`` is intrinsic time, the sum of the learning rates of the steps before this one, and
continues across a resume. Unmeasured values are ``nan``.

Durability. The metadata and header lines are written and ``fsync``ed when the file is
created. Rows are kept in memory and written with one ``os.write`` and an ``fsync`` every
``flush_every`` rows, on ``flush()``, ``close()``, leaving a ``with`` block, interpreter exit
and a non-finite loss. A killed process (even SIGKILL) or a crashed machine therefore loses
at most the rows since the last flush, and the file stays readable: a write cut short leaves
a torn last line (no trailing newline), which ``resume=True`` removes before continuing after
the last complete step. Call ``flush()`` before saving a training checkpoint, so the file
never lags behind it; ``resume_step`` drops the rows a checkpoint does not cover.

Rules. Steps are consecutive integers (every optimizer step is logged, which is what makes
``t`` exact); a step <= the last one (a duplicate) or a gap raises before anything is
recorded. A non-finite loss is recorded, flushed, and then :class:`NonFiniteLossError` is
raised: the row itself is the flag (``Trajectory.read(path, drop_nonfinite=True)`` drops
it). Non-finite optional values (e.g. an overflowed gradient norm) are written as ``nan``
(the format reserves +-inf), negative ones are an error. A learning rate of 0 is accepted
but gives the next row the same t, which ``Trajectory`` (strictly increasing t) rejects.
Under torch.distributed only rank 0 writes; the other ranks check and count steps the same
way, so every rank raises together.

Gradient noise. A ``grad`` measured with gradient groups (``gradient_metrics(...,
groups=...)``, see :mod:`lossrate.torch.groups`) also writes one row of
``run_dir/gradient_noise.csv`` (:data:`lossrate.measured.NOISE_COLUMNS`: the raw and debiased
gradient norms with their standard errors, tr(Sigma_g) and the smoothed noise scale; read it
with :func:`lossrate.measured.read_gradient_noise`). It is flushed and resumed with the
trajectory; the standard errors restart their trailing window after a resume.
"""

from __future__ import annotations

import atexit
import math
import os
import time
from pathlib import Path
from typing import Any

from .._errors import DataError, InvalidArgumentError, LossrateError
from ..measured import NOISE_COLUMNS, NOISE_FILENAME, NOISE_FORMAT, NoiseRows
from ..trajectory import (
    ALL_COLUMNS,
    RunMeta,
    _parse_header,
    atomic_write,
    csv_header_lines,
    csv_row,
)
from ._stats import BatchStats, _LazyStats
from .distributed import global_rank
from .gradients import GradStats

__all__ = ["COLUMNS", "FILENAME", "NonFiniteLossError", "Recorder"]

FILENAME = "trajectory.csv"
#: step, t, loss, then the optional columns in file order; the debiased gradient norm is
#: written to gradient_noise.csv (lossrate.measured), and read_log attaches it on reading
COLUMNS = tuple(c for c in ALL_COLUMNS if c != "pgrad_sq_debiased")
_NAN = math.nan
_STAT_NAMES = ("loss_std", "residual_sq", "alpha_eff")
_OPTIONAL = COLUMNS[3:]


class NonFiniteLossError(LossrateError, FloatingPointError):
    """The loss of a logged step was NaN or infinite (the row was recorded and flushed)."""


class Recorder:
    """Append one row per optimizer step to ``run_dir/trajectory.csv``.

    ``rec = Recorder(run_dir, meta=RunMeta(loss="ce", classes=10))``, then every step
    ``rec.log(step=k, lr=lr, batch=crit.last, grad=gs)``; ``rec.close()`` at the end (or
    use it as a context manager).

    Args:
        run_dir: directory of the run (created if missing).
        meta: the run's metadata, written once in the file's first line. On resume the file
            keeps its own; a ``meta`` that differs from it is an error (pass None to accept it).
        flush_every: rows kept in memory between writes + ``fsync``s (>= 1).
        resume: continue an existing file after its last complete step (a missing file
            starts a new one). Without it an existing file is an error, never overwritten.
        resume_step: with ``resume``, the step the run continues at (a checkpoint's step):
            rows of steps >= ``resume_step`` are dropped from the file. The file must hold
            every step before it.
        energy: an object with ``step_energy() -> joules`` (e.g.
            :class:`lossrate.energy.EnergyMeter`) read at every ``log`` that gets no
            ``energy_j``.
        rank: this process's rank; default: torch.distributed's rank (0 when not
            distributed). Only rank 0 writes.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        meta: RunMeta | None = None,
        *,
        flush_every: int = 50,
        resume: bool = False,
        resume_step: int | None = None,
        energy: Any = None,
        rank: int | None = None,
    ) -> None:
        if meta is not None and not isinstance(meta, RunMeta):
            raise InvalidArgumentError(
                f"meta must be a RunMeta or None, got {type(meta).__name__}."
            )
        if isinstance(flush_every, bool) or not isinstance(flush_every, int) or flush_every < 1:
            raise InvalidArgumentError(f"flush_every must be an integer >= 1, got {flush_every!r}.")
        if resume_step is not None and (
            not resume or not isinstance(resume_step, int) or resume_step < 0
        ):
            raise InvalidArgumentError(
                f"resume_step={resume_step!r} needs resume=True and an integer >= 0 (the step "
                "the run continues at)."
            )
        if energy is not None and not callable(getattr(energy, "step_energy", None)):
            raise InvalidArgumentError(
                "energy must have a step_energy() method (e.g. lossrate.energy.EnergyMeter()), "
                f"got {type(energy).__name__}."
            )
        self.path = Path(run_dir) / FILENAME
        self.noise_path = Path(run_dir) / NOISE_FILENAME
        self._noise = NoiseRows()
        self._noise_rows: list[tuple[float, ...]] = []
        self._noise_fd: int | None = None
        self.flush_every = flush_every
        self.energy = energy
        self.rank = global_rank() if rank is None else int(rank)
        self.meta = meta or RunMeta()
        self._fd: int | None = None
        self._rows: list[tuple[float, ...]] = []
        self._lazy: list[tuple[int, _LazyStats]] = []  # rows whose statistics are deferred
        self._last_step: int | None = None
        self._t_next = 0.0  # t of the next step: the sum of the lrs logged so far
        self._tick = time.perf_counter()
        if self.rank == 0:
            self._open(meta, resume, resume_step)
            atexit.register(self.close)
        elif resume_step is not None:
            self._last_step = resume_step - 1 if resume_step else None

    # ------------------------------------------------------------------ file handling
    def _open(self, meta: RunMeta | None, resume: bool, resume_step: int | None) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        exists = self.path.exists() and self.path.stat().st_size > 0
        if exists and not resume:
            raise InvalidArgumentError(
                f"{str(self.path)!r} already exists; pass resume=True to continue that run or "
                "choose a new run_dir (lossrate never overwrites a recorded run)."
            )
        if not (exists and self._resume(meta, resume_step)):
            if resume_step:
                raise DataError(
                    f"cannot resume at step {resume_step}: {str(self.path)!r} holds no rows; "
                    "its steps before the checkpoint are lost. Start the run again."
                )
            header = "\n".join(csv_header_lines(self.meta, COLUMNS)) + "\n"
            atomic_write(self.path, lambda f: f.write(header))
            self.noise_path.unlink(missing_ok=True)  # a stale file of no recorded run
        elif self.noise_path.exists():
            self._resume_noise()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)

    def _resume_noise(self) -> None:
        """Keep the gradient-noise rows of the steps the trajectory keeps."""
        last = -1 if self._last_step is None else self._last_step
        lines = self.noise_path.read_text().split("\n")
        head, rows = lines[:2], [ln for ln in lines[2:] if ln.count(",") == len(NOISE_COLUMNS) - 1]
        try:
            keep = [ln for ln in rows if float(ln.split(",")[0]) <= last]
        except ValueError:
            raise DataError(
                f"{str(self.noise_path)!r} holds a malformed row; remove the file to resume "
                "without the earlier gradient-noise rows."
            ) from None
        text = "\n".join([*head, *keep]) + "\n"
        atomic_write(self.noise_path, lambda f: f.write(text))
        self._noise_fd = os.open(self.noise_path, os.O_WRONLY | os.O_APPEND)

    def _resume(self, meta: RunMeta | None, resume_step: int | None) -> bool:
        """Continue an existing file; False when it holds no complete header (a run killed
        while creating it), which is then started afresh."""
        raw = self.path.read_bytes()
        keep = raw.rfind(b"\n") + 1  # drop a torn last line (no trailing newline)
        lines = raw[:keep].decode("utf-8", errors="replace").splitlines()
        if len(lines) < 2:
            return False
        where = repr(str(self.path))
        if not lines[0].startswith("#") or lines[1] != ",".join(COLUMNS):
            raise DataError(
                f"{where} is not a recorder file (its header is {lines[1][:60]!r}, expected "
                f"{','.join(COLUMNS)!r}); choose a new run_dir."
            )
        file_meta = _parse_header(lines[0][1:].strip(), where)
        if meta is not None and meta != file_meta:
            theirs = file_meta.to_dict()
            diff = sorted(k for k, v in meta.to_dict().items() if theirs.get(k) != v)
            raise InvalidArgumentError(
                f"meta differs from the metadata of {where} in {diff}; pass the same RunMeta, "
                "or meta=None to keep the file's."
            )
        self.meta = file_meta
        rows = lines[2:]
        if resume_step is not None:
            rows = [ln for ln in rows if _row(ln, where)[0] < resume_step]
            last = _row(rows[-1], where)[0] if rows else -1
            if last != resume_step - 1:
                raise DataError(
                    f"cannot resume at step {resume_step}: the last step in {where} before it is "
                    f"{last if rows else 'none'}, so steps are missing (rows lost in a crash "
                    "after the checkpoint was written?). Resume from an earlier checkpoint."
                )
        if rows:
            step, t, lr = _row(rows[-1], where)
            self._last_step = step
            self._t_next = t + (lr if math.isfinite(lr) else 0.0)
        if len(rows) != len(lines) - 2:
            text = "\n".join([*lines[:2], *rows]) + "\n"
            atomic_write(self.path, lambda f: f.write(text))
        elif keep < len(raw):
            with open(self.path, "r+b") as f:
                f.truncate(keep)
                os.fsync(f.fileno())
        return True

    # ------------------------------------------------------------------------ public
    @property
    def last_step(self) -> int | None:
        """The last logged step (after a resume: the last step on disk); None before any."""
        return self._last_step

    def log(
        self,
        *,
        step: int,
        lr: float,
        batch: BatchStats | None = None,
        grad: GradStats | None = None,
        loss: float | None = None,
        wall_s: float | None = None,
        energy_j: float | None = None,
        test_loss: float | None = None,
        k_sq: float | None = None,
    ) -> None:
        """Record optimizer step ``step``, taken with learning rate ``lr``.

        ``batch`` gives loss, loss_std, batch_size, residual_sq and alpha_eff (or pass a plain
        ``loss``); ``grad`` gives grad_sq and pgrad_sq. ``wall_s`` defaults to the time since
        the previous ``log`` (since construction for the first); ``energy_j`` defaults to the
        ``energy`` meter's reading when one was given. Other missing values are NaN.

        Raises:
            InvalidArgumentError: a duplicate or skipped step, a bad lr, a negative value,
                neither or both of ``batch`` and ``loss``, or a closed recorder (nothing is
                recorded).
            NonFiniteLossError: the loss was NaN/inf; raised after the row was written.
        """
        now = time.perf_counter()
        step = self._check_step(step)
        lr = _number("lr", lr)
        if not (lr >= 0 and math.isfinite(lr)):
            raise InvalidArgumentError(f"lr must be finite and >= 0, got {lr!r}.")
        lazy = None
        if batch is not None and loss is None and type(batch) is BatchStats:
            loss = batch.loss
            stats: tuple[Any, ...] = (batch.loss_std, batch.batch_size, batch.residual_sq)
            alpha: Any = batch.alpha_eff
        elif batch is not None and loss is None and type(batch) is _LazyStats:
            # deferred statistics (InstrumentedLoss): the loss now, the rest when written
            lazy, loss = batch, batch.loss
            stats, alpha = (_NAN, batch.batch_size, _NAN), _NAN
        elif batch is not None and loss is None and isinstance(batch, BatchStats):
            loss = batch.loss
            stats = (batch.loss_std, batch.batch_size, batch.residual_sq)
            alpha = batch.alpha_eff
        elif batch is None and loss is not None:
            loss = _number("loss", loss)
            stats, alpha = (_NAN, _NAN, _NAN), _NAN
        elif batch is not None and loss is None:
            raise InvalidArgumentError(
                f"batch must be a BatchStats (crit.last), got {type(batch).__name__}."
            )
        else:
            raise InvalidArgumentError(
                "pass exactly one of batch=crit.last (an InstrumentedLoss's BatchStats) or "
                f"loss=<float>; got batch={batch!r}, loss={loss!r}."
            )
        if grad is None:
            g: tuple[Any, ...] = (_NAN, _NAN)
        elif type(grad) is GradStats:
            g = (grad.grad_sq, grad.pgrad_sq)
        else:
            raise InvalidArgumentError(
                f"grad must be a GradStats (gradient_metrics(...)), got {type(grad).__name__}."
            )
        if loss < 0 and loss != -math.inf:
            raise InvalidArgumentError(
                f"loss must be >= 0, got {loss!r} at step {step}; lossrate models losses >= 0 "
                "(shift the loss by its known minimum)."
            )
        if self.rank == 0 and self._fd is None:
            raise InvalidArgumentError(f"the recorder of {str(self.path)!r} is closed.")
        if energy_j is None and self.energy is not None and self.rank == 0:
            energy_j = self.energy.step_energy()
        values = (
            lr,
            *stats,
            *g,
            alpha,
            k_sq,
            now - self._tick if wall_s is None else wall_s,
            energy_j,
            test_loss,
        )
        row = (
            step,
            self._t_next,
            loss,
            *[
                _NAN
                if v is None
                else v
                if type(v) is float and (0.0 <= v < math.inf or v != v)
                else _optional(name, v)
                for name, v in zip(_OPTIONAL, values)
            ],
        )
        if self.rank == 0:
            if lazy is not None:
                self._lazy.append((len(self._rows), lazy))
            self._rows.append(row)
            if grad is not None and grad.groups > 0:
                self._noise_rows.append(
                    self._noise.row(
                        step,
                        groups=grad.groups,
                        batch_size=grad.batch_size,
                        grad_sq_raw=grad.grad_sq,
                        grad_sq=grad.grad_sq_debiased,
                        pgrad_sq_raw=grad.pgrad_sq,
                        pgrad_sq=grad.pgrad_sq_debiased,
                        trace_sigma=grad.trace_sigma,
                        ptrace_sigma=grad.ptrace_sigma,
                        update_dot=grad.update_dot,
                    )
                )
        self._last_step = step
        self._t_next += lr
        self._tick = time.perf_counter()
        if not math.isfinite(loss):
            self.flush()
            raise NonFiniteLossError(
                f"the loss at step {step} is {loss!r} (lr {lr!r}); the row was recorded in "
                f"{str(self.path)!r} and flushed. Training diverged: lower the learning rate or "
                "check the data, then resume from a checkpoint before the divergence."
            )
        if len(self._rows) >= self.flush_every:
            self.flush()

    def _check_step(self, step: Any) -> int:
        if type(step) is not int:
            try:
                if isinstance(step, bool) or float(step) != int(step):
                    raise ValueError
                step = int(step)
            except (TypeError, ValueError, OverflowError):
                raise InvalidArgumentError(
                    f"step must be an integer (the optimizer step index), got {step!r}."
                ) from None
        last = self._last_step
        if last is None:
            if step < 0:
                raise InvalidArgumentError(f"step must be >= 0, got {step}.")
        elif step != last + 1:
            if step <= last:
                raise InvalidArgumentError(
                    f"step {step} was already recorded (the last recorded step is {last}); "
                    f"each step is logged once, in order. After a resume, continue at step "
                    f"{last + 1}."
                )
            raise InvalidArgumentError(
                f"step {step} leaves a gap after step {last}; log every optimizer step "
                f"(t = sum of learning rates needs each one), the next is {last + 1}."
            )
        return step

    def flush(self) -> None:
        """Write the rows kept in memory and make them durable (``fsync``)."""
        if self._noise_rows and self._fd is not None:
            if self._noise_fd is None:
                header = f"# {NOISE_FORMAT}\n{','.join(NOISE_COLUMNS)}\n"
                atomic_write(self.noise_path, lambda f: f.write(header))
                self._noise_fd = os.open(self.noise_path, os.O_WRONLY | os.O_APPEND)
            text = "".join([csv_row(r[0], r[1:]) + "\n" for r in self._noise_rows])
            data = text.encode("utf-8")
            while data:
                data = data[os.write(self._noise_fd, data) :]
            os.fsync(self._noise_fd)
            self._noise_rows.clear()
        if not self._rows or self._fd is None:
            return
        if self._lazy:  # deferred statistics: computed now, all queued calls in one pass
            rows, inf = self._rows, math.inf
            for i, lazy in self._lazy:
                b = lazy.resolved()
                std, res, alpha = b.loss_std, b.residual_sq, b.alpha_eff
                if not (0.0 <= std < inf and 0.0 <= res < inf and 0.0 <= alpha < inf):
                    std, res, alpha = map(_optional, _STAT_NAMES, (std, res, alpha))
                r = rows[i]
                rows[i] = (*r[:4], std, r[5], res, *r[7:9], alpha, *r[10:])
            self._lazy.clear()
        data = "".join([csv_row(r[0], r[1:]) + "\n" for r in self._rows]).encode("utf-8")
        while data:
            data = data[os.write(self._fd, data) :]
        os.fsync(self._fd)
        self._rows.clear()

    def close(self) -> None:
        """Flush and close the file (idempotent; also run at interpreter exit)."""
        if self._fd is not None:
            try:
                self.flush()
            finally:
                os.close(self._fd)
                self._fd = None
                if self._noise_fd is not None:
                    os.close(self._noise_fd)
                    self._noise_fd = None
        atexit.unregister(self.close)

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Recorder({str(self.path)!r}, last_step={self._last_step})"


def _row(line: str, where: str) -> tuple[int, float, float]:
    """(step, t, lr) of a complete data line, or a DataError naming it."""
    cells = line.split(",")
    try:
        if len(cells) != len(COLUMNS):
            raise ValueError
        return int(cells[0]), float(cells[1]), float(cells[3])
    except ValueError:
        raise DataError(
            f"cannot resume {where}: the line {line[:60]!r} is not a row of {len(COLUMNS)} "
            "numbers; remove it and resume again."
        ) from None


def _number(name: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"{name} must be a number, got {value!r}.") from None


def _optional(name: str, value: Any) -> float:
    """An optional column's value: None and +-inf -> NaN; negative -> error."""
    if value is None:
        return _NAN
    x = value if type(value) is float else _number(name, value)
    if x >= 0:
        return x if x != math.inf else _NAN
    if x != x or x == -math.inf:
        return _NAN
    raise InvalidArgumentError(f"{name} must be >= 0 (or None for not measured), got {x!r}.")
