"""From a foreign table of logged values to a validated :class:`~lossrate.Trajectory`.

Every reader turns its file into a :class:`Table` (the names of the logged series and a
way to load some of them as rows) and hands it to :func:`build`, which does the part
all formats share:

1. pick the column (tag) of each *role* — ``step``, ``loss``, ``lr``, ``loss_std``,
   ``wall_time`` (a cumulative clock), ``wall_s`` and the other trajectory columns —
   from the explicit ``columns`` mapping, else by name (:data:`CANDIDATES`);
2. merge rows logged at the same step (sparse logs such as Lightning's write ``lr`` and
   ``loss`` on separate rows): each series keeps its last value at that step, and with
   ``dedupe='error'`` a series logged twice at one step is an error;
3. sort by step, keep the steps that have a loss, refuse (or with
   ``drop_nonfinite=True`` drop) rows with a NaN/inf loss or an infinite value;
4. use ``lr`` only where it is known at every kept step (or with
   ``interpolate_lr=True`` after interpolating its gaps in step), build the intrinsic
   time ``t = sum(lr)`` and turn a cumulative clock into seconds per step;
5. bin a log longer than ``max_points`` rows by step (:mod:`._bins`: bin means, the
   loss std pooled), noted in ``meta.extra['thinned']`` and ``meta.extra['source_rows']``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._errors import DataError, InvalidArgumentError, check_choice
from ..trajectory import OPTIONAL_COLUMNS, RunMeta, Trajectory, intrinsic_time
from ._bins import DEFAULT_MAX_POINTS, bin_by_step, check_max_points
from ._files import DEFAULT_MAX_BYTES

__all__ = ["CANDIDATES", "ROLES", "Options", "Rows", "Table", "build", "make_options"]

#: What a column of a foreign log can be used as: the trajectory's columns (``t`` is
#: always derived), ``step``, and ``wall_time``, a cumulative clock in seconds
#: (W&B ``_runtime``, TensorBoard event time) that is turned into ``wall_s`` per step.
ROLES: tuple[str, ...] = ("step", "loss", *OPTIONAL_COLUMNS, "wall_time")

_NAMED: dict[str, tuple[str, ...]] = {
    "step": (
        "step",
        "global_step",
        "trainer_global_step",
        "train_global_step",
        "iteration",
        "iter",
        "steps",
        "_step",
    ),
    "loss": (
        "train_loss_step",
        "train_loss",
        "loss_train",
        "training_loss",
        "trainer_loss",
        "loss_step",
        "loss",
    ),
    "lr": ("lr", "learning_rate", "train_lr", "train_learning_rate", "lr_step", "optimizer_lr"),
    "loss_std": ("loss_std", "train_loss_std"),
    "wall_s": ("wall_s", "step_time", "train_step_time"),
    "wall_time": (
        "_runtime",
        "runtime",
        "wall_time",
        "walltime",
        "elapsed",
        "time",
        "_timestamp",
        "timestamp",
    ),
    "test_loss": (
        "test_loss",
        "val_loss",
        "valid_loss",
        "validation_loss",
        "eval_loss",
        "loss_val",
        "loss_test",
        "loss_valid",
        "val_loss_epoch",
    ),
}
#: Names recognised per role, in order of preference, compared after :func:`normalize`
#: (lower case, ``/ . -`` and spaces as ``_``, a W&B chart export's ``"run - "`` prefix
#: dropped). Two different columns matching equally well are an error, not a guess.
#: Roles not listed in ``_NAMED`` match their own name only.
CANDIDATES: dict[str, tuple[str, ...]] = {role: _NAMED.get(role, (role,)) for role in ROLES}

# Lightning's LearningRateMonitor writes "lr-<Optimizer>" (and "/pg<k>" per group).
_LR_PREFIX = re.compile(r"^lr_[a-z0-9_]+$")
_NOT_LR = ("momentum", "beta", "weight_decay", "wd")
_SEP = re.compile(r"[/.\-\s]+")

MAX_STEP = 2**53  # larger step values are not exact in float64


def normalize(name: str) -> str:
    """The form a column name is matched in: ``"run - train/Loss"`` -> ``"train_loss"``."""
    return _SEP.sub("_", name.rsplit(" - ", 1)[-1].strip().lower())


def _rank(role: str, name: str) -> int | None:
    key = normalize(name)
    cands = CANDIDATES[role]
    if key in cands:
        return cands.index(key)
    if role == "lr" and _LR_PREFIX.match(key) and not any(w in key for w in _NOT_LR):
        return len(cands)
    return None


@dataclass(frozen=True)
class Options:
    """The reading options every format shares (validated by :func:`make_options`)."""

    columns: Mapping[str, str | None] = field(default_factory=dict)
    meta: RunMeta | None = None
    dedupe: str = "last"
    drop_nonfinite: bool = False
    interpolate_lr: bool = False
    allow_truncated: bool = False
    max_bytes: int | None = DEFAULT_MAX_BYTES
    max_points: int | None = DEFAULT_MAX_POINTS


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidArgumentError(f"{name} must be True or False, got {value!r}.")
    return value


def make_options(
    *,
    columns: Mapping[str, str | None] | None = None,
    loss_tag: str | None = None,
    lr_tag: str | None = None,
    meta: RunMeta | None = None,
    dedupe: str = "last",
    drop_nonfinite: bool = False,
    interpolate_lr: bool = False,
    allow_truncated: bool = False,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
    max_points: int | None = DEFAULT_MAX_POINTS,
) -> Options:
    """Check the shared reader arguments and fold ``loss_tag``/``lr_tag`` into ``columns``."""
    if columns is None:
        columns = {}
    if not isinstance(columns, Mapping):
        raise InvalidArgumentError(
            f"columns must be a mapping role -> column name, got {type(columns).__name__}; "
            "e.g. columns={'loss': 'train/loss', 'lr': 'lr-AdamW'}."
        )
    cols: dict[str, str | None] = {}
    for role, name in columns.items():
        if role not in ROLES:
            raise InvalidArgumentError(
                f"columns has unknown role {role!r}; the roles are {', '.join(ROLES)}."
            )
        if name is not None and (not isinstance(name, str) or not name):
            raise InvalidArgumentError(
                f"columns[{role!r}] must be a column name (a non-empty string) or None "
                f"(do not use that role), got {name!r}."
            )
        cols[role] = name
    for role, tag in (("loss", loss_tag), ("lr", lr_tag)):
        if tag is None:
            continue
        if not isinstance(tag, str) or not tag:
            raise InvalidArgumentError(f"{role}_tag must be a non-empty string, got {tag!r}.")
        if role in cols and cols[role] != tag:
            raise InvalidArgumentError(
                f"{role}_tag={tag!r} contradicts columns[{role!r}]={cols[role]!r}; give only one."
            )
        cols[role] = tag
    if meta is not None and not isinstance(meta, RunMeta):
        raise InvalidArgumentError(
            f"meta must be a RunMeta or None, got {type(meta).__name__}; "
            "e.g. meta=RunMeta(loss='ce', classes=10)."
        )
    check_choice("dedupe", dedupe, ("last", "error"))
    if max_bytes is not None and (
        isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0
    ):
        raise InvalidArgumentError(
            f"max_bytes must be a positive int (bytes) or None for no limit, got {max_bytes!r}."
        )
    return Options(
        columns=cols,
        meta=meta,
        dedupe=dedupe,
        drop_nonfinite=_flag("drop_nonfinite", drop_nonfinite),
        interpolate_lr=_flag("interpolate_lr", interpolate_lr),
        allow_truncated=_flag("allow_truncated", allow_truncated),
        max_bytes=max_bytes,
        max_points=check_max_points(max_points),
    )


Series = tuple[np.ndarray, np.ndarray]  # (float values, present mask); absent cells are NaN


@dataclass(frozen=True)
class Rows:
    """Some series of a log as aligned rows (one per logged record, in file order).

    ``series`` maps a column name to its values; ``builtin`` maps a role the format itself
    supplies (TensorBoard events carry ``step`` and ``wall_time``) to its values;
    ``where(i)`` names row i for error messages ("line 17", "record 5 of events...").
    """

    n: int
    series: Mapping[str, Series]
    where: Callable[[int], str]
    builtin: Mapping[str, Series] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Table:
    """A foreign log before column selection: its series names and a loader of rows."""

    source: str
    reader: str
    names: tuple[str, ...]
    load: Callable[[list[str]], Rows]
    run_name: str
    builtin: frozenset[str] = frozenset()


def _resolve(table: Table, opts: Options) -> dict[str, str]:
    names = table.names
    available = ", ".join(repr(n) for n in names[:40]) + (" ..." if len(names) > 40 else "")
    chosen: dict[str, str] = {}
    for role, name in opts.columns.items():
        if name is None:
            continue
        if role == "step" and "step" in table.builtin:
            raise InvalidArgumentError(
                f"columns['step'] does not apply to {table.reader} logs: their records carry "
                "their own step; leave it out."
            )
        if name not in names:
            kind = "tag" if table.reader == "tensorboard" else "column"
            raise DataError(
                f"{table.source!r}: {kind} {name!r} (given for {role!r}) is not in the log; "
                f"available: {available or 'none'}."
            )
        chosen[role] = name
    used = set(chosen.values())
    for role in ROLES:
        if role in opts.columns or role in table.builtin:
            continue
        if role == "wall_time" and "wall_s" in chosen:
            continue
        ranked = [(r, n) for n in names if n not in used and (r := _rank(role, n)) is not None]
        if not ranked:
            continue
        best = min(r for r, _ in ranked)
        tied = [n for r, n in ranked if r == best]
        if len(set(tied)) > 1:
            raise DataError(
                f"{table.source!r}: several columns could be the {role!r}: {tied}; pick one with "
                f"columns={{{role!r}: {tied[0]!r}}} (or {role!r}: None to use none)."
            )
        chosen[role] = tied[0]
        used.add(tied[0])
    if "loss" not in chosen:
        raise DataError(
            f"{table.source!r}: no loss column found among {available or 'no columns'}; "
            "name it with columns={'loss': '<column>'} (read_log: loss_tag='<tag>')."
        )
    return chosen


def _merge(
    step: np.ndarray,
    series: dict[str, Series],
    label: Mapping[str, str],
    dedupe: str,
    where: Callable[[int], str],
    source: str,
) -> tuple[np.ndarray, dict[str, Series], dict[str, np.ndarray]]:
    """Group rows by step (sorted); each series keeps its last present value per step.

    Returns the unique steps, the merged series and, per series, the row each kept
    value came from (-1 where absent; for steps already strictly increasing, one shared
    array of row numbers, and the series themselves, uncopied).
    """
    if step.size < 2 or bool(np.all(step[1:] > step[:-1])):
        rows = np.arange(step.size, dtype=np.int32 if step.size < 2**31 else np.int64)
        return step, dict(series), {name: rows for name in series}
    order = np.argsort(step, kind="stable")
    s = step[order]
    new = np.ones(s.shape[0], dtype=bool)
    new[1:] = s[1:] != s[:-1]
    gid = np.cumsum(new) - 1
    n_groups = int(gid[-1]) + 1 if s.size else 0
    merged: dict[str, Series] = {}
    origin: dict[str, np.ndarray] = {}
    for name, (vals, present) in series.items():
        p = present[order]
        pos = np.flatnonzero(p)
        g = gid[pos]
        out = np.full(n_groups, np.nan)
        has = np.zeros(n_groups, dtype=bool)
        src = np.full(n_groups, -1, dtype=np.int64)
        if pos.size:
            last = np.ones(pos.size, dtype=bool)
            last[:-1] = g[1:] != g[:-1]
            out[g[last]] = vals[order][pos[last]]
            has[g[last]] = True
            src[g[last]] = order[pos[last]]
            if dedupe == "error":
                counts = np.bincount(g, minlength=n_groups)
                if (counts > 1).any():
                    k = int(np.flatnonzero(counts > 1)[0])
                    rows = order[pos[g == k]]
                    raise DataError(
                        f"{source!r}: {label[name]} is logged {counts[k]} times at step {int(s[new][k])} "
                        f"({', '.join(where(int(r)) for r in rows[:5])}); a resumed run logs steps "
                        "again. Pass dedupe='last' to keep the last value, or remove the repeats."
                    )
        merged[name] = (out, has)
        origin[name] = src
    return s[new], merged, origin


def _check_steps(
    step: Series, loss_present: np.ndarray, where: Callable[[int], str], source: str
) -> None:
    vals, present = step
    orphan = loss_present & ~present
    if orphan.any():
        i = int(np.flatnonzero(orphan)[0])
        raise DataError(
            f"{source!r}: {where(i)} has a loss but no step value; fill the step, drop the row, "
            "or map another step column with columns={'step': ...}."
        )
    v = np.where(present, vals, 0.0)
    bad = present & (~np.isfinite(v) | (np.abs(v) > MAX_STEP) | (v != np.round(v)))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{source!r}: {where(i)} has step {float(vals[i])!r}; steps must be whole numbers of "
            f"magnitude <= 2**53. Fix the step column or map another with columns={{'step': ...}}."
        )


def _per_step_seconds(step: np.ndarray, clock: np.ndarray) -> np.ndarray:
    """Seconds per optimizer step from a cumulative clock: (T_i - T_{i-1}) / (s_i - s_{i-1})."""
    out = np.full(step.shape[0], np.nan)
    with np.errstate(all="ignore"):
        out[1:] = np.diff(clock) / np.diff(step)
    out[~np.isfinite(out) | (out < 0)] = np.nan
    return out


def build(table: Table, opts: Options) -> Trajectory:
    """Select, merge, check and convert ``table`` into a Trajectory (see the module doc)."""
    src = table.source
    chosen = _resolve(table, opts)
    rows = table.load(sorted(set(chosen.values())))
    where = rows.where
    series: dict[str, Series] = {role: rows.series[name] for role, name in chosen.items()}
    for role, values in rows.builtin.items():
        if role == "step" or role not in opts.columns:
            series.setdefault(role, values)
    if "wall_s" in series:
        series.pop("wall_time", None)
    notes = list(rows.notes)
    loss_present = series["loss"][1]
    if "step" in series:
        _check_steps(series["step"], loss_present, where, src)
        step_vals, step_present = series.pop("step")
        keep = None if step_present.all() else np.flatnonzero(step_present)
    else:
        keep = None
        step_vals = np.arange(rows.n, dtype=float)
        notes.append("no step column: steps are the row numbers")
    if keep is not None:  # (no copies when every row has a step: long logs stay light)
        series = {k: (v[keep], p[keep]) for k, (v, p) in series.items()}
        step_vals = step_vals[keep]
    row_of = keep

    def where_kept(i: int) -> str:
        return where(int(i if row_of is None else row_of[i]))

    label = {
        role: repr(role) if chosen.get(role, role) == role else f"{role!r} ({chosen[role]!r})"
        for role in series
    }
    steps, merged, origin = _merge(step_vals, series, label, opts.dedupe, where_kept, src)
    loss, has_loss = merged["loss"]
    if not has_loss.any():
        raise DataError(
            f"{src!r}: the loss column {chosen['loss']!r} holds no value; "
            "name the right one with columns={'loss': '<column>'}."
        )
    take = has_loss.copy()
    bad = take & ~np.isfinite(loss)
    for role, (vals, has) in merged.items():
        if role != "loss":
            bad |= take & has & np.isinf(vals)
    if bad.any():
        if not opts.drop_nonfinite:
            k = int(np.flatnonzero(bad)[0])
            role = next(
                r
                for r, (v, h) in merged.items()
                if h[k] and (np.isinf(v[k]) or (r == "loss" and not np.isfinite(v[k])))
            )
            raise DataError(
                f"{src!r}: {label[role]} is {float(merged[role][0][k])!r} at step {int(steps[k])} "
                f"({where_kept(int(origin[role][k]))}); a diverged or corrupted row? Pass "
                "drop_nonfinite=True to drop such rows, or fix the log."
            )
        notes.append(f"dropped {int(bad.sum())} row(s) with a non-finite value")
        take &= ~bad
    if not take.any():
        raise DataError(f"{src!r}: every row has a non-finite value; nothing is left to read.")
    cols: dict[str, Any] = {role: vals for role, (vals, _) in merged.items()}
    if not take.all():
        steps = steps[take]
        cols = {role: vals[take] for role, vals in cols.items()}
        taken: dict[int, np.ndarray] = {}  # series merged alike share one origin array
        for o in origin.values():
            if id(o) not in taken:
                taken[id(o)] = o[take]
        origin = {role: taken[id(o)] for role, o in origin.items()}

    lr = cols.pop("lr", None)
    if lr is not None:
        lr = _lr_column(
            lr, steps, origin["lr"], opts, notes, chosen.get("lr", "lr"), where_kept, src
        )
    clock = cols.pop("wall_time", None)
    if clock is not None:
        cols["wall_s"] = _per_step_seconds(steps, clock)
    t = None
    if lr is not None:
        t = _intrinsic(steps, lr, src)
    loss = cols.pop("loss")
    facts: dict[str, Any] = {}
    if opts.max_points is not None and steps.size > opts.max_points:
        n_rows = int(steps.size)
        steps, loss, lr, t, cols = bin_by_step(steps, loss, lr, t, cols, opts.max_points)
        facts["source_rows"] = n_rows
        facts["thinned"] = (
            f"{steps.size:,} of {n_rows:,} logged steps kept: binned by step (log-spaced and "
            f"evenly spaced bins, at most max_points={opts.max_points:,}), each point the mean "
            "loss of its bin" + (" with the loss std pooled over it" if "loss_std" in cols else "")
        )
    meta = _meta(table, opts, chosen, notes, facts)
    try:
        return Trajectory.from_arrays(loss, step=steps, lr=lr, t=t, meta=meta, **cols)
    except DataError as exc:
        raise DataError(f"{src!r}: {exc}") from None


def _lr_column(
    lr: np.ndarray,
    steps: np.ndarray,
    origin: np.ndarray,
    opts: Options,
    notes: list[str],
    name: str,
    where: Callable[[int], str],
    src: str,
) -> np.ndarray | None:
    known = np.isfinite(lr)
    neg = known & (lr < 0)
    if neg.any():
        k = int(np.flatnonzero(neg)[0])
        raise DataError(
            f"{src!r}: the learning rate {name!r} is negative ({float(lr[k])!r}) at step {int(steps[k])} "
            f"({where(int(origin[k]))}); map the right column with columns={{'lr': ...}}."
        )
    if known.all():
        return lr
    if not known.any():
        notes.append(f"lr column {name!r} has no value at the loss steps; lr left out")
        return None
    if not opts.interpolate_lr:
        notes.append(
            f"lr column {name!r} is missing at {int((~known).sum())} of {lr.size} loss steps; "
            "lr left out (interpolate_lr=True fills the gaps)"
        )
        return None
    notes.append(f"lr interpolated at {int((~known).sum())} step(s)")
    return np.interp(steps, steps[known], lr[known])


def _intrinsic(steps: np.ndarray, lr: np.ndarray, src: str) -> np.ndarray:
    with np.errstate(all="ignore"):
        t = intrinsic_time(steps, lr)
    if not np.isfinite(t).all():
        raise DataError(
            f"{src!r}: the learning rates are too large: t = sum(lr) overflows; "
            "check that the lr column holds learning rates."
        )
    if t.size > 1 and not t[-1] > t[0]:
        raise DataError(
            f"{src!r}: the learning rate is 0 at every logged step, so the intrinsic time "
            "t = sum(lr) does not advance; check the lr column (--lr-key) or read without the "
            "learning rate (columns={'lr': None}) and pass the lr used."
        )
    return t


def _meta(
    table: Table,
    opts: Options,
    chosen: Mapping[str, str],
    notes: list[str],
    facts: Mapping[str, Any],
) -> RunMeta:
    used = set(chosen.values())
    ignored = [n for n in table.names if n not in used]
    shown = ", ".join(ignored[:20]) + (
        f" ... ({len(ignored) - 20} more)" if len(ignored) > 20 else ""
    )
    info = {
        "source": table.source,
        "source_format": table.reader,
        "source_columns": ", ".join(f"{r}={n}" for r, n in chosen.items()),
    }
    if ignored:
        info["source_ignored"] = shown
    if notes:
        info["source_notes"] = "; ".join(notes)
    info.update(facts)
    meta = opts.meta or RunMeta()
    return dataclasses.replace(
        meta,
        name=meta.name if meta.name is not None else table.run_name,
        extra={**info, **meta.extra},
    )
