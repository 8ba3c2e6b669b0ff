"""Sweep configs: one or more base experiments, a grid and/or a list of changes, expanded
into named runs (each trained into its own run folder by :mod:`.sweep_exec`).

A sweep file (TOML)::

    name = "lr_seeds"                       # the sweep (default run folder: runs/<name>/)
    description = "3 peak lr x 2 seeds"
    base = "mnist_mlp_sgd"                  # a shipped config name or a path; or a list
    run_name = "{base}__lr{optim.lr:g}_s{train.seed}"   # optional; see below

    [set]                                   # changes applied to every run
    "train.steps" = 500

    [grid]                                  # every combination, the last key varying fastest
    "optim.lr" = [0.05, 0.1, 0.2]
    "train.seed" = [0, 1]

    [[runs]]                                # explicit runs, after the grid's
    "optim.name" = "adam"
    "optim.lr" = 1e-3

Keys are the dotted keys of an experiment config (``optim.lr``, ``data.teacher.dim``; TOML
reads ``optim.lr = ...`` unquoted as a nested table, which means the same). One key is not a
config key: ``lr_factor`` multiplies the base config's own ``optim.lr`` (for sweeps over
several bases with different learning rates). A ``[[runs]]`` entry may also give its own
``name`` and ``base``. Each base is crossed with every grid point, then with every entry of
``runs`` (a sweep with neither has one run per base).

``run_name`` is a Python format string over ``{base}`` (the base config's name), ``{i}`` (the
run's index), ``{lr_factor}`` and the config parts (``{optim.lr:g}``, ``{train.seed}``); the
default names a run by its base and the values it changes. Names must be unique and usable
as folder names. Every problem (a file, a key, a value, a duplicate name) is reported when the
sweep is loaded, before anything runs.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._errors import DataError, InvalidArgumentError
from .config import _NAME, ExperimentConfig, _read_toml, load_config

__all__ = ["Sweep", "SweepConfig", "SweepRun", "load_sweep", "shipped_sweeps"]

#: the one sweep key that is not a config key: a factor on the base config's optim.lr
LR_FACTOR = "lr_factor"
_TOP_KEYS = ("name", "description", "base", "run_name", "set", "grid", "runs")
#: most runs one sweep may expand to (a typo in a grid should not queue a million runs)
MAX_RUNS = 100_000


def _flat(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"optim": {"lr": 1}} and {"optim.lr": 1} -> {"optim.lr": 1}."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


@dataclass(frozen=True)
class SweepRun:
    """One run of a sweep: its folder name, its config, and what it changes from its base."""

    name: str
    config: ExperimentConfig
    base: str  # the base config's name
    changes: tuple[tuple[str, Any], ...]  # (dotted key, value) applied to the base, in order


@dataclass(frozen=True)
class Sweep:
    """A validated sweep (see the module docstring); :meth:`plan` lists its runs."""

    name: str
    base: tuple[str, ...]
    grid: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    runs: tuple[tuple[tuple[str, Any], ...], ...] = ()
    set: tuple[tuple[str, Any], ...] = ()
    run_name: str = ""
    description: str = ""
    source: str = "sweep"  # where it was read from (for messages)

    def plan(self) -> list[SweepRun]:
        """The runs, in a fixed order: base, then grid point (last key fastest), then entry."""
        out: list[SweepRun] = []
        keys = [k for k, _ in self.grid]
        points = [
            tuple(zip(keys, combo)) for combo in itertools.product(*(v for _, v in self.grid))
        ]
        entries = self.runs or ((),)
        for source in self.base:
            try:
                base = load_config(source)
            except (InvalidArgumentError, DataError) as exc:
                raise type(exc)(
                    f"{self.source}: base = {source!r}: {exc} Fix base in the sweep file."
                ) from None
            for point in points:
                for entry in entries:
                    name = dict(entry).get("name")
                    entry_base = dict(entry).get("base")
                    if entry_base is not None and entry_base != source:
                        continue
                    changes = (
                        *self.set,
                        *point,
                        *((k, v) for k, v in entry if k not in ("name", "base")),
                    )
                    cfg = _apply(base, changes, self.source, where=_where(point, entry))
                    run = name or _run_name(self, base, cfg, changes, len(out))
                    out.append(
                        SweepRun(run, dataclasses.replace(cfg, name=run), base.name, changes)
                    )
                    if len(out) > MAX_RUNS:
                        raise InvalidArgumentError(
                            f"{self.source}: the sweep expands to more than {MAX_RUNS:,} runs; "
                            "shorten the [grid] lists or split the sweep."
                        )
        if not out:
            raise InvalidArgumentError(
                f"{self.source}: the sweep expands to no runs (every [[runs]] entry names a "
                "'base' that is not in base); give each entry one of the bases."
            )
        seen: dict[str, int] = {}
        for i, run in enumerate(out):
            if not _NAME.fullmatch(run.name):
                raise InvalidArgumentError(
                    f"{self.source}: run {i} is named {run.name!r}, which is not a folder name "
                    "(letters, digits, '_', '-' and '.', at most 100); change run_name or the "
                    "entry's name."
                )
            if run.name in seen:
                raise InvalidArgumentError(
                    f"{self.source}: runs {seen[run.name]} and {i} are both named {run.name!r} "
                    "(their folders would collide); put the keys that tell them apart into "
                    "run_name, e.g. {train.seed}, or give the [[runs]] entries a name."
                )
            seen[run.name] = i
        return out

    def expand(self) -> list[ExperimentConfig]:
        """The configs of :meth:`plan`, each named after its run."""
        return [run.config for run in self.plan()]

    def with_changes(self, changes: Mapping[str, Any]) -> Sweep:
        """A copy with ``changes`` (dotted keys, e.g. from ``--set``) applied to every run."""
        merged = dict(self.set)
        merged.update(changes)
        new = dataclasses.replace(self, set=tuple(merged.items()))
        new.plan()  # validate now
        return new


#: the old name of :class:`Sweep`
SweepConfig = Sweep


def _where(point: tuple[tuple[str, Any], ...], entry: tuple[tuple[str, Any], ...]) -> str:
    parts = [f"{k} = {v!r}" for k, v in point] + [f"[[runs]] {k} = {v!r}" for k, v in entry]
    return ", ".join(parts) or "(no changes)"


def _apply(
    base: ExperimentConfig, changes: Sequence[tuple[str, Any]], source: str, *, where: str
) -> ExperimentConfig:
    plain: dict[str, Any] = {}
    factor = 1.0
    for key, value in changes:
        if key == LR_FACTOR:
            factor = value
        else:
            plain[key] = value
    if factor != 1.0:
        plain["optim.lr"] = plain.get("optim.lr", base.optim.lr) * factor
    try:
        return base.override(plain)
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(
            f"{source}: base {base.name!r} with {where}: {exc} Fix the value in the sweep file "
            "(or the base config)."
        ) from None


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return "-".join(_fmt(v) for v in value)
    return str(value)


def _run_name(
    sweep: Sweep,
    base: ExperimentConfig,
    cfg: ExperimentConfig,
    changes: Sequence[tuple[str, Any]],
    index: int,
) -> str:
    lr_factor = dict(changes).get(LR_FACTOR, 1.0)
    if sweep.run_name:
        fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
        fields.update(base=base.name, i=index, lr_factor=lr_factor)
        try:
            return sweep.run_name.format(**fields)
        except (KeyError, AttributeError, IndexError, ValueError) as exc:
            raise InvalidArgumentError(
                f"{sweep.source}: run_name = {sweep.run_name!r} cannot be filled in "
                f"({type(exc).__name__}: {exc}); use {{base}}, {{i}}, {{lr_factor}} and config "
                "keys such as {optim.lr:g} or {train.seed}."
            ) from None
    varied = [(k, v) for k, v in changes if k not in dict(sweep.set) or k == LR_FACTOR]
    text = "__".join(
        [base.name, *(f"{k.rsplit('.', 1)[-1]}{_fmt(v)}" for k, v in dict(varied).items())]
    )
    return re.sub(r"[^A-Za-z0-9_.\-]", "-", text)


# ------------------------------------------------------------------ loading
def shipped_sweeps() -> list[str]:
    """Names of the sweep configs shipped with lossrate (``sweep_*``)."""
    from importlib import resources

    folder = resources.files("lossrate") / "configs"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.startswith("sweep"))


def _values(source: str, key: str, value: Any) -> tuple[Any, ...]:
    if not isinstance(value, list) or not value:
        raise InvalidArgumentError(
            f"{source}: [grid] {key} = {value!r}: a grid key takes a non-empty list of values, "
            f"e.g. {key} = [{value!r}]."
        )
    return tuple(tuple(v) if isinstance(v, list) else v for v in value)


def _check_factor(source: str, where: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise InvalidArgumentError(
            f"{source}: {where} {LR_FACTOR} = {value!r}: must be a number > 0."
        )
    if not math.isfinite(value):
        raise InvalidArgumentError(f"{source}: {where} {LR_FACTOR} = {value!r}: must be finite.")


def sweep_from_dict(table: Mapping[str, Any], *, source: str = "sweep") -> Sweep:
    """Build and validate a :class:`Sweep` from a parsed TOML table (expanding it once)."""
    unknown = sorted(set(table) - set(_TOP_KEYS))
    if unknown:
        legacy = {"experiments", "lr_factors", "schedules", "seeds"} & set(unknown)
        hint = (
            " This is the old sweep format: write base = [...] and a [grid] with lr_factor, "
            '"schedule.shape" and "train.seed" lists.'
            if legacy
            else ""
        )
        raise InvalidArgumentError(
            f"{source}: unknown sweep key(s) {unknown}; a sweep file has {list(_TOP_KEYS)}.{hint}"
        )
    if "data" in table or "base" not in table:
        raise InvalidArgumentError(
            f'{source}: a sweep file needs base = "<config name or path>" (or a list of them); '
            "an experiment config is run with `lossrate train`."
        )
    base = table["base"]
    bases = (base,) if isinstance(base, str) else base
    if (
        not isinstance(bases, list | tuple)
        or not bases
        or not all(isinstance(b, str) for b in bases)
    ):
        raise InvalidArgumentError(
            f"{source}: base = {base!r}: give a config name or path, or a non-empty list of them."
        )
    here = Path(source).parent if Path(source).is_file() else None
    # a base path is read relative to the sweep file when it is not one from the current folder
    bases = [
        str(here / b) if here and not Path(b).is_file() and (here / b).is_file() else b
        for b in bases
    ]
    name = table.get("name", Path(source).stem if source != "sweep" else "sweep")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidArgumentError(
            f"{source}: name = {name!r}: give a short name without spaces or slashes (it names "
            "the default output folder runs/<name>)."
        )
    for key in ("description", "run_name"):
        if not isinstance(table.get(key, ""), str):
            raise InvalidArgumentError(f"{source}: {key} = {table[key]!r}: must be a string.")
    for key in ("set", "grid"):
        if not isinstance(table.get(key, {}), Mapping):
            raise InvalidArgumentError(
                f"{source}: {key} must be a table ([{key}] with dotted config keys)."
            )
    settings = _flat(table.get("set", {}))
    grid = tuple((k, _values(source, k, v)) for k, v in _flat(table.get("grid", {})).items())
    for key, values in grid:
        if key == LR_FACTOR:
            for v in values:
                _check_factor(source, "[grid]", v)
    if LR_FACTOR in settings:
        _check_factor(source, "[set]", settings[LR_FACTOR])
    runs_table = table.get("runs", [])
    if not isinstance(runs_table, list) or not all(isinstance(r, Mapping) for r in runs_table):
        raise InvalidArgumentError(
            f"{source}: runs must be a list of tables ([[runs]] entries of dotted config keys)."
        )
    runs = []
    for i, entry in enumerate(runs_table):
        flat = _flat(entry)
        for key in ("name", "base"):
            if key in flat and not isinstance(flat[key], str):
                raise InvalidArgumentError(
                    f"{source}: [[runs]] entry {i}: {key} = {flat[key]!r} must be a string."
                )
        if LR_FACTOR in flat:
            _check_factor(source, f"[[runs]] entry {i}:", flat[LR_FACTOR])
        runs.append(tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in flat.items()))
    sweep = Sweep(
        name=name,
        base=tuple(bases),
        grid=grid,
        runs=tuple(runs),
        set=tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in settings.items()),
        run_name=table.get("run_name", ""),
        description=table.get("description", ""),
        source=source,
    )
    sweep.plan()  # every key, value and name checked before anything runs
    return sweep


def load_sweep(source: str | Path) -> Sweep:
    """A :class:`Sweep` from a TOML file path or a shipped sweep name (``sweep_schedules``)."""
    table, where = _read_toml(source)
    return sweep_from_dict(table, source=where)
