"""Stream a training run to ``run_dir/trajectory.csv``, one row per optimizer step.

The file is exactly the :class:`lossrate.Trajectory` CSV format (metadata comment line,
header, one line per step; ``Trajectory.read`` reads it), with every column present:

    step, t, loss, lr, loss_std, batch_size, residual_sq, grad_sq, pgrad_sq, alpha_eff,
    k_sq, wall_s, energy_j, test_loss

``t`` is intrinsic time, the sum of the learning rates of the steps before this one, and
continues across a resume. Unmeasured values are ``nan``.

Durability. Each row is handed to the operating system with one ``os.write`` as it is
logged, so killing the process (even SIGKILL) loses nothing already logged; ``flush()``
(every ``flush_every`` rows, on ``close()``, on leaving a ``with`` block and at interpreter
exit) also ``fsync``s, so a machine crash loses at most the rows since the last flush. A
crash in the middle of a write leaves a torn last line (no trailing newline); ``resume=True``
cuts it off and continues after the last complete step.

Rules. Steps are consecutive integers (every optimizer step is logged, which is what makes
``t`` exact); a step <= the last one (a duplicate) or a gap raises before anything is
written. A non-finite loss is recorded, flushed, and then :class:`NonFiniteLossError` is
raised: the row itself is the flag (``Trajectory.read(path, drop_nonfinite=True)`` drops
it). Non-finite optional values (e.g. an overflowed gradient norm) are written as ``nan``
(the format reserves +-inf), negative ones are an error. Under torch.distributed only rank
0 writes; the other ranks check and count steps the same way, so every rank raises
together.
"""

from __future__ import annotations

import atexit
import math
import os
import time
from pathlib import Path
from typing import Any

from .._errors import DataError, InvalidArgumentError, LossrateError
from ..trajectory import ALL_COLUMNS, RunMeta, _parse_header, csv_header_lines, csv_row
from .distributed import global_rank
from .gradients import GradStats
from .losses import BatchStats

__all__ = ["FILENAME", "NonFiniteLossError", "Recorder"]

FILENAME = "trajectory.csv"
COLUMNS = ALL_COLUMNS  # step, t, loss, then the optional columns in file order


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
        flush_every: rows between ``fsync``s (>= 1).
        resume: continue an existing file after its last complete step (a missing file
            starts a new one). Without it an existing file is an error, never overwritten.
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
        energy: Any = None,
        rank: int | None = None,
    ) -> None:
        if meta is not None and not isinstance(meta, RunMeta):
            raise InvalidArgumentError(
                f"meta must be a RunMeta or None, got {type(meta).__name__}."
            )
        if isinstance(flush_every, bool) or not isinstance(flush_every, int) or flush_every < 1:
            raise InvalidArgumentError(f"flush_every must be an integer >= 1, got {flush_every!r}.")
        if energy is not None and not callable(getattr(energy, "step_energy", None)):
            raise InvalidArgumentError(
                "energy must have a step_energy() method (e.g. lossrate.energy.EnergyMeter()), "
                f"got {type(energy).__name__}."
            )
        self.path = Path(run_dir) / FILENAME
        self.flush_every = flush_every
        self.energy = energy
        self.rank = global_rank() if rank is None else int(rank)
        self._fd: int | None = None
        self._unsynced = 0
        self._last_step: int | None = None
        self._t_next = 0.0  # t of the next step: sum of the lrs logged so far
        self._tick = time.perf_counter()
        self.meta = meta or RunMeta()
        if self.rank == 0:
            self._open(meta, resume)
            atexit.register(self.close)

    # ------------------------------------------------------------------ file handling
    def _open(self, meta: RunMeta | None, resume: bool) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        exists = self.path.exists() and self.path.stat().st_size > 0
        if exists and not resume:
            raise InvalidArgumentError(
                f"{str(self.path)!r} already exists; pass resume=True to continue that run or "
                "choose a new run_dir (lossrate never overwrites a recorded run)."
            )
        if exists and self._resume(meta):
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self._fd = fd
        self._write("\n".join(csv_header_lines(self.meta, COLUMNS)) + "\n")
        self._sync()

    def _resume(self, meta: RunMeta | None) -> bool:
        """Open an existing file for appending; False when it holds no complete header
        (a run killed while creating it), which is then started afresh."""
        raw = self.path.read_bytes()
        cut = raw.rfind(b"\n") + 1  # drop a torn last line (no trailing newline)
        lines = raw[:cut].decode("utf-8", errors="replace").splitlines()
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
        if len(lines) > 2:
            cells = lines[-1].split(",")
            try:
                if len(cells) != len(COLUMNS):
                    raise ValueError
                step, t, lr = int(cells[0]), float(cells[1]), float(cells[3])
            except ValueError:
                raise DataError(
                    f"cannot resume {where}: its last complete line is not a row of "
                    f"{len(COLUMNS)} numbers ({lines[-1][:60]!r}); remove it and resume again."
                ) from None
            self._last_step = step
            self._t_next = t + (lr if math.isfinite(lr) else 0.0)
        self.meta = file_meta
        if cut < len(raw):
            with open(self.path, "r+b") as f:
                f.truncate(cut)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._sync()
        return True

    def _write(self, text: str) -> None:
        assert self._fd is not None
        data = text.encode("utf-8")
        while data:
            n = os.write(self._fd, data)
            data = data[n:]

    def _sync(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)
        self._unsynced = 0

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
                written).
            NonFiniteLossError: the loss was NaN/inf; raised after the row was written.
        """
        now = time.perf_counter()
        step = self._check_step(step)
        lr_f = _number("lr", lr)
        if not (math.isfinite(lr_f) and lr_f >= 0):
            raise InvalidArgumentError(f"lr must be finite and >= 0, got {lr!r}.")
        if (batch is None) == (loss is None):
            raise InvalidArgumentError(
                "pass exactly one of batch=crit.last (an InstrumentedLoss's BatchStats) or "
                f"loss=<float>; got batch={batch!r}, loss={loss!r}."
            )
        if batch is not None:
            if not isinstance(batch, BatchStats):
                raise InvalidArgumentError(
                    f"batch must be a BatchStats (crit.last), got {type(batch).__name__}."
                )
            loss_f = batch.loss
            stats = (batch.loss_std, batch.batch_size, batch.residual_sq)
            alpha = batch.alpha_eff
        else:
            loss_f = _number("loss", loss)
            stats, alpha = (math.nan, math.nan, math.nan), math.nan
        if grad is not None and not isinstance(grad, GradStats):
            raise InvalidArgumentError(
                f"grad must be a GradStats (gradient_metrics(...)), got {type(grad).__name__}."
            )
        g = (math.nan, math.nan) if grad is None else (grad.grad_sq, grad.pgrad_sq)
        if wall_s is None:
            wall_s = now - self._tick
        if energy_j is None and self.energy is not None and self.rank == 0:
            energy_j = self.energy.step_energy()
        if math.isfinite(loss_f) and loss_f < 0:
            raise InvalidArgumentError(
                f"loss must be >= 0, got {loss_f!r} at step {step}; lossrate models losses >= 0 "
                "(shift the loss by its known minimum)."
            )
        optional = [
            _optional(name, v)
            for name, v in zip(
                COLUMNS[3:],
                (lr_f, *stats, *g, alpha, k_sq, wall_s, energy_j, test_loss),
            )
        ]
        if self.rank == 0:
            if self._fd is None:
                raise InvalidArgumentError(f"the recorder of {str(self.path)!r} is closed.")
            self._write(csv_row(step, [self._t_next, loss_f, *optional]) + "\n")
            self._unsynced += 1
        self._last_step = step
        self._t_next += lr_f
        self._tick = time.perf_counter()
        if not math.isfinite(loss_f):
            self.flush()
            raise NonFiniteLossError(
                f"the loss at step {step} is {loss_f!r} (lr {lr_f!r}); the row was recorded in "
                f"{str(self.path)!r} and flushed. Training diverged: lower the learning rate or "
                "check the data, then resume from a checkpoint before the divergence."
            )
        if self._unsynced >= self.flush_every:
            self.flush()

    def _check_step(self, step: Any) -> int:
        if isinstance(step, bool) or not isinstance(step, int):
            try:
                if float(step) != int(step):
                    raise ValueError
                step = int(step)
            except (TypeError, ValueError, OverflowError):
                raise InvalidArgumentError(
                    f"step must be an integer (the optimizer step index), got {step!r}."
                ) from None
        if step < 0:
            raise InvalidArgumentError(f"step must be >= 0, got {step}.")
        last = self._last_step
        if last is not None and step <= last:
            raise InvalidArgumentError(
                f"step {step} was already recorded (the last recorded step is {last}); each "
                f"step is logged once, in order. After a resume, continue at step {last + 1}."
            )
        if last is not None and step != last + 1:
            raise InvalidArgumentError(
                f"step {step} leaves a gap after step {last}; log every optimizer step "
                f"(t = sum of learning rates needs each one), the next is {last + 1}."
            )
        return step

    def flush(self) -> None:
        """Make every logged row durable (``fsync``)."""
        if self.rank == 0 and self._fd is not None and self._unsynced:
            self._sync()

    def close(self) -> None:
        """Flush and close the file (idempotent; also run at interpreter exit)."""
        if self._fd is not None:
            try:
                self._sync()
            finally:
                os.close(self._fd)
                self._fd = None
        atexit.unregister(self.close)

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Recorder({str(self.path)!r}, last_step={self._last_step})"


def _number(name: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"{name} must be a number, got {value!r}.") from None


def _optional(name: str, value: Any) -> float:
    if value is None:
        return math.nan
    x = _number(name, value)
    if not math.isfinite(x):
        return math.nan
    if x < 0:
        raise InvalidArgumentError(f"{name} must be >= 0 (or None for not measured), got {x!r}.")
    return x
