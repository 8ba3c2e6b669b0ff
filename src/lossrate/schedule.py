"""Learning-rate schedules as per-step arrays, and intrinsic time S = sum of learning rates.

A :class:`Schedule` is the learning rate eta_k of every optimizer step k = 0 .. n-1.
Intrinsic time before step k is S_k = sum_{j<k} eta_j (S_0 = 0). The same object drives
training (:mod:`lossrate.experiments`), schedule-aware rates and every peer law, so a
prediction "under another schedule" is a prediction with another :class:`Schedule`.

Shapes (all step counts are optimizer steps):

* constant:  eta_k = peak
* cosine:    eta_k = final + (peak - final) (1 + cos(pi u)) / 2,  u = (k - w) / (n - w)
* wsd:       constant until ``decay_start``, then decay to ``final`` at ``n``
             (``decay="linear"`` or ``"geometric"``: peak^(1-u) final^u)
* step:      eta_k = peak * factor^(number of milestones <= k)
* every shape may start with a linear warmup 0 -> peak over ``warmup`` steps
  (eta_k = peak (k + 1) / warmup for k < warmup).

Files: :meth:`Schedule.write` writes a CSV with the header ``step,lr`` and one row per
step (k, eta_k), every lr in its shortest exact decimal form, so :meth:`Schedule.read`
gives back the same floats; a training loop reads it with ``csv`` or ``np.loadtxt(path,
delimiter=",", skiprows=1)`` and sets ``lr = rows[k][1]`` before step k.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import DataError, InvalidArgumentError, check_positive

__all__ = ["SHAPES", "Schedule"]

SHAPES = ("constant", "cosine", "wsd", "step", "linear")


def _steps(name: str, value: Any, *, minimum: int = 0) -> int:
    try:
        k = int(value)
    except (TypeError, ValueError):
        raise InvalidArgumentError(
            f"{name} must be a whole number of steps, got {value!r}."
        ) from None
    if k != value or k < minimum:
        raise InvalidArgumentError(f"{name} must be a whole number >= {minimum}, got {value!r}.")
    return k


@dataclass(frozen=True, eq=False)
class Schedule:
    """Per-step learning rates ``lr[k]`` for k = 0 .. len-1, with a descriptive ``name``."""

    lr: np.ndarray
    name: str = "custom"

    def __post_init__(self) -> None:
        arr = np.asarray(self.lr, dtype=float)
        if arr.ndim != 1 or arr.size == 0:
            raise InvalidArgumentError(
                f"lr must be a non-empty 1-D array of per-step learning rates, got shape {arr.shape}."
            )
        if not np.isfinite(arr).all() or (arr < 0).any():
            raise InvalidArgumentError("lr must hold finite learning rates >= 0 for every step.")
        arr = arr.copy()
        arr.setflags(write=False)
        object.__setattr__(self, "lr", arr)
        cum = np.concatenate([[0.0], np.cumsum(arr)])
        cum.setflags(write=False)
        object.__setattr__(self, "_cum", cum)

    def __len__(self) -> int:
        return int(self.lr.shape[0])

    @property
    def n_steps(self) -> int:
        """Number of optimizer steps the schedule covers."""
        return len(self)

    @property
    def cumulative(self) -> np.ndarray:
        """S at every step boundary: ``cumulative[k] = sum_{j<k} lr[j]``, length n + 1."""
        return self._cum  # type: ignore[attr-defined, no-any-return]

    def _check_steps(self, steps: Any, *, upto: int) -> np.ndarray:
        s = np.asarray(steps)
        if s.size and (not np.issubdtype(s.dtype, np.number) or (s < 0).any() or (s > upto).any()):
            raise InvalidArgumentError(
                f"steps must lie in [0, {upto}] for this {self.n_steps}-step schedule, got "
                f"range [{np.min(s)!r}, {np.max(s)!r}]; extend the schedule (Schedule.extend) first."
            )
        return s

    def S(self, steps: Any) -> np.ndarray:
        """Intrinsic time before each step: S(k) = sum_{j<k} lr[j] (fractional k interpolates)."""
        s = self._check_steps(steps, upto=self.n_steps).astype(float)
        # linear between whole steps, indexed directly: np.interp over the n + 1 step grid
        # cost O(n) per call, and a fit calls this thousands of times on a 5M-step run
        cum = self.cumulative
        k = np.floor(s).astype(np.int64)
        k1 = np.minimum(k + 1, self.n_steps)
        return cum[k] + (s - k) * (cum[k1] - cum[k])

    def at(self, steps: Any) -> np.ndarray:
        """Learning rate used at each (whole) step."""
        s = self._check_steps(steps, upto=self.n_steps - 1)
        return self.lr[np.asarray(s, dtype=np.int64)]

    def extend(self, n_steps: int, *, value: float | None = None) -> Schedule:
        """The schedule continued to ``n_steps`` with ``value`` (default: the last lr)."""
        n = _steps("n_steps", n_steps, minimum=1)
        if n <= self.n_steps:
            return Schedule(self.lr[:n], self.name)
        fill = self.lr[-1] if value is None else check_positive("value", value, allow_zero=True)
        return Schedule(np.concatenate([self.lr, np.full(n - self.n_steps, fill)]), self.name)

    def held_from(
        self, step: int, value: float | None = None, *, name: str | None = None
    ) -> Schedule:
        """The same length, with the lr after ``step`` held at ``value`` (default: the lr at
        ``step``): the "no decay" plan a what-if is compared against."""
        k = int(np.clip(step, 0, self.n_steps - 1))
        v = float(self.lr[k]) if value is None else float(value)
        lr = np.concatenate([self.lr[: k + 1], np.full(self.n_steps - k - 1, v)])
        return Schedule(lr, self.name if name is None else name)

    # ------------------------------------------------------------ files
    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the schedule as CSV: header ``step,lr``, then ``k,eta_k`` for every step.

        The lrs are written with ``repr`` (the shortest decimal that reads back to the same
        float), so ``Schedule.read(path).lr`` equals ``lr`` exactly. Returns the path.
        """
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        rows = "".join(f"{k},{float(v)!r}\n" for k, v in enumerate(self.lr))
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text("step,lr\n" + rows, encoding="utf-8")
        os.replace(tmp, out)
        return out

    @classmethod
    def read(cls, path: str | os.PathLike[str], *, name: str | None = None) -> Schedule:
        """Read a schedule CSV written by :meth:`write` (or any CSV with an ``lr`` column and
        one row per step; a ``step`` column, when present, must count 0, 1, 2, ...; a file
        of bare numbers is one lr per line). ``name`` defaults to the file's stem.

        Raises:
            DataError: a missing file, a malformed row, or steps out of order.
        """
        p = Path(path)
        if not p.is_file():
            raise DataError(f"schedule file {str(p)!r} does not exist.")
        lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
        if not lines:
            raise DataError(f"schedule file {str(p)!r} is empty.")
        head = [c.strip().lower() for c in lines[0].split(",")]
        if "lr" in head:
            col, step_col, body, first = head.index("lr"), None, lines[1:], 2
            if "step" in head:
                step_col = head.index("step")
        else:
            col, step_col, body, first = 0, None, lines, 1
        lr = np.empty(len(body))
        for i, line in enumerate(body):
            cells = line.split(",")
            try:
                lr[i] = float(cells[col])
                if step_col is not None and int(cells[step_col]) != i:
                    raise DataError(
                        f"{str(p)!r} line {i + first}: step {cells[step_col]} where {i} was "
                        "expected (one row per step, from step 0)."
                    )
            except (ValueError, IndexError):
                raise DataError(
                    f"{str(p)!r} line {i + first}: expected step,lr numbers, got {line!r}."
                ) from None
        if lr.size == 0:
            raise DataError(f"schedule file {str(p)!r} holds no learning rates.")
        try:
            return cls(lr, p.stem if name is None else name)
        except InvalidArgumentError as exc:
            raise DataError(f"{str(p)!r}: {exc}") from None

    # ------------------------------------------------------------ constructors
    @classmethod
    def constant(cls, peak: float, n_steps: int, *, warmup: int = 0) -> Schedule:
        """Constant ``peak`` after an optional linear warmup."""
        return cls.make("constant", peak=peak, n_steps=n_steps, warmup=warmup)

    @classmethod
    def cosine(cls, peak: float, n_steps: int, *, final: float = 0.0, warmup: int = 0) -> Schedule:
        """Cosine from ``peak`` to ``final`` over the steps after warmup."""
        return cls.make("cosine", peak=peak, n_steps=n_steps, final=final, warmup=warmup)

    @classmethod
    def wsd(
        cls,
        peak: float,
        n_steps: int,
        *,
        decay_start: int,
        final: float = 0.0,
        warmup: int = 0,
        decay: str = "linear",
    ) -> Schedule:
        """Warmup-stable-decay: constant until ``decay_start``, then decay to ``final``."""
        return cls.make(
            "wsd",
            peak=peak,
            n_steps=n_steps,
            final=final,
            warmup=warmup,
            decay_start=decay_start,
            decay=decay,
        )

    @classmethod
    def make(
        cls,
        shape: str,
        *,
        peak: float,
        n_steps: int,
        warmup: int = 0,
        final: float = 0.0,
        decay_start: int | None = None,
        decay: str = "linear",
        milestones: Sequence[int] = (),
        factor: float = 0.1,
    ) -> Schedule:
        """Build a schedule by shape name (see the module docstring)."""
        if shape not in SHAPES:
            raise InvalidArgumentError(
                f"shape={shape!r} is not known; choose one of {', '.join(SHAPES)}."
            )
        peak = check_positive("peak", peak)
        n = _steps("n_steps", n_steps, minimum=1)
        w = _steps("warmup", warmup)
        if w >= n:
            raise InvalidArgumentError(f"warmup={w} must be shorter than n_steps={n}.")
        final = check_positive("final", final, allow_zero=True)
        k = np.arange(n, dtype=float)
        lr = np.full(n, peak)
        if shape == "cosine":
            u = np.clip((k - w) / max(n - w, 1), 0.0, 1.0)
            lr = final + (peak - final) * 0.5 * (1.0 + np.cos(np.pi * u))
        elif shape == "linear":
            u = np.clip((k - w) / max(n - w, 1), 0.0, 1.0)
            lr = peak + (final - peak) * u
        elif shape == "wsd":
            if decay_start is None:
                raise InvalidArgumentError(
                    "decay_start is required for shape='wsd', e.g. decay_start=int(0.8 * n_steps)."
                )
            d0 = _steps("decay_start", decay_start)
            if not w <= d0 < n:
                raise InvalidArgumentError(
                    f"decay_start={d0} must lie in [warmup={w}, n_steps={n})."
                )
            u = np.clip((k - d0) / max(n - d0, 1), 0.0, 1.0)
            if decay == "linear":
                dec = peak + (final - peak) * u
            elif decay == "geometric":
                if final <= 0:
                    raise InvalidArgumentError(
                        "decay='geometric' needs final > 0 (lr = peak^(1-u) final^u)."
                    )
                dec = peak ** (1 - u) * final**u
            else:
                raise InvalidArgumentError(
                    f"decay={decay!r} is not known; choose 'linear' or 'geometric'."
                )
            lr = np.where(k < d0, peak, dec)
        elif shape == "step":
            ms = np.asarray([_steps("milestones", m) for m in milestones], dtype=float)
            factor = check_positive("factor", factor)
            lr = peak * factor ** np.sum(k[:, None] >= ms[None, :], axis=1) if ms.size else lr
        if w:
            lr = np.where(k < w, peak * (k + 1) / w, lr)
        return cls(lr, shape)

    @classmethod
    def from_logged(cls, step: Any, lr: Any, *, n_steps: int | None = None) -> Schedule:
        """Rebuild a per-step schedule from learning rates logged at some steps.

        Between logged steps the rate is interpolated linearly (as in
        :func:`lossrate.trajectory.intrinsic_time`); before the first logged step it is
        held at the first value; beyond the last at the last value, up to ``n_steps``.
        """
        s = np.asarray(step, dtype=float)
        r = np.asarray(lr, dtype=float)
        if s.ndim != 1 or s.shape != r.shape or s.size == 0:
            raise InvalidArgumentError("step and lr must be 1-D arrays of equal, non-zero length.")
        n = int(s[-1]) + 1 if n_steps is None else _steps("n_steps", n_steps, minimum=1)
        return cls(np.interp(np.arange(n, dtype=float), s, r), "logged")


def decays_after_peak(lr: Any, share: float = 0.9) -> bool:
    """Whether the learning rates ``lr`` fall below ``share`` of their peak after the peak
    (whether they show a decay; warmups and constant stretches do not count)."""
    a = np.asarray(lr, dtype=float)
    if a.size == 0:
        return False
    i = int(np.argmax(a))
    return bool(a[i] > 0 and float(np.min(a[i:])) < share * float(a[i]))


def continues(fitted: Schedule, what_if: Schedule, cut: int) -> bool:
    """Whether ``what_if`` follows the same learning rates as ``fitted`` over the steps
    0 .. ``cut`` (a what-if that goes on from the fitted run, not another run from step 0)."""
    n = int(cut) + 1
    if fitted.n_steps < n or what_if.n_steps < n:
        return False
    a, b = fitted.lr[:n], what_if.lr[:n]
    return bool(np.allclose(a, b, rtol=1e-9, atol=1e-15 * max(float(np.max(np.abs(a))), 1.0)))
