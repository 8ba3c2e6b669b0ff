"""Out-of-sample evaluation of curve models: the prefix and the cross-run protocols.

* ``protocol="prefix"``: for every run and fraction k, fit on the first k of its steps
  (:meth:`Trajectory.prefix`; the whole schedule is known) and predict the rest.
* ``protocol="cross"``: fit one parameter set jointly on the ``train`` runs and predict
  every ``test`` run whole from its schedule (the Multi-Power-Law paper's protocol).

Validation is always out of sample: the scored points are never fitted (a round trip on
fitted points is the tautology of theory §4.1). Each (run, model, k) gives one
:class:`EvalRow` with the metrics of :mod:`lossrate.metrics` on the held-out points
(R², MAE, RMSE, PredE, WorstE, final-loss relative error) and the coverage of the
prediction interval.

A model is a registered name or a :class:`~lossrate._model.CurveModel` (fitted by
:func:`lossrate.fit` / :func:`lossrate.fit_many` with ``fit_options``), a tuple
``(label, model, options)`` with its own options, or ``(label, fitter)`` where
``fitter(runs: list[RunData]) -> FitResult`` is a foreign recipe (e.g.
:func:`lossrate.baselines.fit_multipower_published`).
"""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from . import metrics
from ._errors import InvalidArgumentError, LossrateError, check_choice
from ._model import CurveModel, RunData
from ._results import FitResult
from .fit import AUTO_OPTIONS, AutoFit, fit, fit_many, predict
from .fitting.engine import resolve_model
from .schedule import Schedule
from .trajectory import Trajectory

__all__ = ["EvalRow", "EvalTable", "evaluate"]

METRICS = (
    "r2",
    "mae",
    "rmse",
    "pred_e",
    "worst_e",
    "final_rel_err",
    "final_log_err",
    "coverage",
)
Fitter = Callable[[list[RunData]], FitResult]
RunLike = Trajectory | RunData | tuple[Trajectory, Schedule]


@dataclass(frozen=True)
class EvalRow:
    """One out-of-sample prediction: which run, model and training fraction, and its scores.

    ``k`` is the prefix fraction (NaN for the cross protocol). Metrics are NaN when the fit
    failed with an error (``message`` says why).
    """

    protocol: str
    run: str
    group: str
    model: str
    k: float
    n_train: int
    n_test: int
    r2: float
    mae: float
    rmse: float
    pred_e: float
    worst_e: float
    final_rel_err: float
    final_log_err: float
    coverage: float
    fit_ok: bool
    seconds: float
    message: str = ""
    smooth_window: int = 1


@dataclass(frozen=True)
class EvalTable:
    """The rows of an evaluation, with text / CSV views and grouped summaries."""

    rows: tuple[EvalRow, ...]
    #: why a (run, k) produced no row, one line each
    skipped: tuple[str, ...] = ()

    def summary(
        self, by: Sequence[str] = ("model", "k"), stat: str = "median"
    ) -> list[dict[str, Any]]:
        """One dict per group of ``by`` (EvalRow field names): the ``stat`` ("median" or
        "mean") of every metric over the group's rows, and ``n`` the number of rows."""
        check_choice("stat", stat, ("median", "mean"))
        names = {f.name for f in fields(EvalRow)}
        bad = [b for b in by if b not in names]
        if bad:
            raise InvalidArgumentError(f"by names unknown field(s) {bad}; use EvalRow fields.")
        groups: dict[tuple[Any, ...], list[EvalRow]] = {}
        for row in self.rows:
            groups.setdefault(tuple(getattr(row, b) for b in by), []).append(row)
        agg = np.nanmedian if stat == "median" else np.nanmean
        out = []
        for key, rows in groups.items():
            d: dict[str, Any] = dict(zip(by, key))
            d["n"] = len(rows)
            for m in METRICS:
                vals = np.array([getattr(r, m) for r in rows], dtype=float)
                d[m] = float(agg(vals)) if np.isfinite(vals).any() else float("nan")
            d["failed"] = sum(not r.fit_ok for r in rows)
            out.append(d)
        return out

    def to_text(self, by: Sequence[str] | None = None, stat: str = "median") -> str:
        """A fixed-width table: every row, or the ``summary(by, stat)`` when ``by`` is given."""
        if by is None:
            keys = ["protocol", "run", "model", "k", *METRICS, "fit_ok"]
            data = [{k: getattr(r, k) for k in keys} for r in self.rows]
        else:
            data = self.summary(by, stat)
            keys = [*by, "n", *METRICS, "failed"]
        return _table(keys, data)

    @classmethod
    def read_csv(cls, path: str) -> EvalTable:
        """The table written by :meth:`to_csv` (or ``lossrate evaluate --csv``), typed again:
        summaries and benchmark tables can be re-made without refitting."""
        from pathlib import Path

        names = {f.name: str(f.type) for f in fields(EvalRow)}
        convert: dict[str, Callable[[str], Any]] = {
            "float": float,
            "int": lambda v: int(float(v)),
            "bool": lambda v: v == "True",
        }
        file = Path(path)
        if not file.is_file():
            raise InvalidArgumentError(
                f"path {str(path)!r} is not a file; give a CSV written by to_csv."
            )
        rows = []
        with file.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = set(names) - {"message", "smooth_window"} - set(reader.fieldnames or ())
            if missing:
                raise InvalidArgumentError(
                    f"path {str(path)!r} lacks the column(s) {sorted(missing)}; give a CSV "
                    "written by EvalTable.to_csv."
                )
            for rec in reader:
                kw = {k: convert.get(names[k], str)(v) for k, v in rec.items() if k in names}
                rows.append(EvalRow(**kw))
        return cls(tuple(rows))

    def to_csv(self, path: str | None = None) -> str:
        """Every row as CSV (written to ``path`` when given); returns the text."""
        buf = io.StringIO()
        w = csv.writer(buf)
        names = [f.name for f in fields(EvalRow)]
        w.writerow(names)
        for r in self.rows:
            w.writerow([getattr(r, n) for n in names])
        text = buf.getvalue()
        if path is not None:
            from pathlib import Path

            from .trajectory import atomic_write

            atomic_write(Path(path), lambda f: f.write(text))
        return text


def _table(keys: list[str], data: list[dict[str, Any]]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, bool):
            return "yes" if v else "NO"
        if isinstance(v, float):
            return "nan" if not np.isfinite(v) else f"{v:.4g}"
        return str(v)

    cells = [[fmt(d[k]) for k in keys] for d in data]
    widths = [
        max(len(k), *(len(c[i]) for c in cells)) if cells else len(k) for i, k in enumerate(keys)
    ]
    lines = ["  ".join(k.ljust(w) for k, w in zip(keys, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


# ---------------------------------------------------------------- protocol helpers
def _group(run: RunData) -> str:
    sched = run.traj.meta.schedule or run.schedule.name or "all"
    return re.split(r"[_\d]", sched, maxsplit=1)[0] or sched


def _runs(runs: Sequence[RunLike] | Mapping[str, RunLike]) -> tuple[list[str], list[RunData]]:
    items = list(runs.items()) if isinstance(runs, Mapping) else [(None, r) for r in runs]
    if not items:
        raise InvalidArgumentError(
            "runs is empty; pass Trajectory, RunData or (Trajectory, Schedule)."
        )
    names, out = [], []
    for i, (name, r) in enumerate(items):
        if isinstance(r, tuple):
            if len(r) != 2:
                raise InvalidArgumentError(f"runs[{i}] must be a (Trajectory, Schedule) pair.")
            rd = RunData.from_trajectory(r[0], r[1])
        elif isinstance(r, RunData):
            rd = r
        elif isinstance(r, Trajectory):
            rd = RunData.from_trajectory(r)
        else:
            raise InvalidArgumentError(
                f"runs[{i}] is a {type(r).__name__}; pass a Trajectory, RunData or (Trajectory, Schedule)."
            )
        out.append(rd)
        names.append(str(name) if name is not None else (rd.traj.meta.name or f"run{i}"))
    if len(set(names)) != len(names):
        raise InvalidArgumentError(f"run names must be unique, got {names}; set RunMeta.name.")
    return names, out


@dataclass(frozen=True)
class _Spec:
    label: str
    model: CurveModel | None
    options: Mapping[str, Any]
    fitter: Fitter | None


def _auto_spec(label: str, options: Mapping[str, Any]) -> _Spec:
    """``auto`` as a spec: a fitter taking the options auto knows (it fits one run)."""
    opts = {k: v for k, v in options.items() if k in AUTO_OPTIONS}

    def fitter(runs: list[RunData]) -> FitResult:
        if len(runs) != 1:
            raise InvalidArgumentError(
                "auto fits one run at a time; use it with protocol='prefix' (the cross "
                "protocol fits one parameter set to several runs: name a model)."
            )
        return fit(runs[0], "auto", **opts)

    return _Spec(label, None, {}, fitter)


def _specs(models: Sequence[Any], fit_options: Mapping[str, Any]) -> list[_Spec]:
    out = []
    for m in models:
        if isinstance(m, str) and m == "auto":
            out.append(_auto_spec("auto", fit_options))
        elif isinstance(m, tuple) and len(m) == 3 and isinstance(m[1], str) and m[1] == "auto":
            out.append(_auto_spec(str(m[0]), {**fit_options, **dict(m[2])}))
        elif (
            isinstance(m, tuple)
            and len(m) == 2
            and callable(m[1])
            and not isinstance(m[1], CurveModel)
        ):
            out.append(_Spec(str(m[0]), None, {}, m[1]))
        elif isinstance(m, tuple) and len(m) == 3:
            model = resolve_model(m[1])
            out.append(_Spec(str(m[0]), model, {**fit_options, **dict(m[2])}, None))
        elif isinstance(m, str | CurveModel):
            model = resolve_model(m)
            out.append(
                _Spec(
                    model.name if isinstance(m, CurveModel) else m, model, dict(fit_options), None
                )
            )
        else:
            raise InvalidArgumentError(
                f"model {m!r} is not a name, a CurveModel, (label, model, options) or (label, fitter)."
            )
    labels = [s.label for s in out]
    if len(set(labels)) != len(labels):
        raise InvalidArgumentError(f"model labels must be unique, got {labels}.")
    return out


def _score_row(
    protocol: str,
    name: str,
    rd: RunData,
    spec: _Spec,
    k: float,
    n_train: int,
    test: RunData,
    fr: FitResult | None,
    pred_run: Any,
    seconds: float,
    message: str,
) -> EvalRow:
    traj = test.traj
    nan = float("nan")
    vals = dict.fromkeys(METRICS, nan)
    window = 1
    ok = fr is not None and fr.success
    if fr is not None:
        try:
            pr = predict(fr, traj.step, run=pred_run, schedule=None)
            if np.all(np.isfinite(pr.loss)):
                vals = metrics.score(pr.loss, traj.loss, pr.lower, pr.upper)
                window = int(vals.pop("smooth_window"))
            else:
                message = message or "the prediction is not finite at some held-out steps"
                ok = False
        except LossrateError as exc:
            message, ok = f"predict failed: {exc}", False
        if not message:
            message = "" if fr.success else fr.message
    return EvalRow(
        protocol=protocol,
        run=name,
        group=_group(rd),
        model=spec.label,
        k=k,
        n_train=n_train,
        n_test=traj.n,
        seconds=seconds,
        fit_ok=ok,
        message=message,
        smooth_window=window,
        **{m: float(vals[m]) for m in METRICS},
    )


def _do_fit(spec: _Spec, runs: list[RunData], names: list[str]) -> FitResult:
    if spec.fitter is not None:
        return spec.fitter(runs)
    assert spec.model is not None
    if len(runs) == 1:
        return fit(runs[0], spec.model, **spec.options)
    return fit_many(dict(zip(names, runs)), spec.model, **spec.options)


# ---------------------------------------------------------------- public
def evaluate(
    runs: Sequence[RunLike] | Mapping[str, RunLike],
    models: Sequence[Any],
    *,
    protocol: str = "prefix",
    fractions: Sequence[float] = (0.1, 0.25, 0.5, 0.75),
    train: Sequence[str] | None = None,
    test: Sequence[str] | None = None,
    fit_options: Mapping[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
    jobs: int = 1,
    address: str | None = None,
) -> EvalTable:
    """Fit and predict out of sample (module docstring); one row per (run, model, k).

    Args:
        runs: Trajectory (with logged lr), RunData, or (Trajectory, Schedule) pairs, or a
            mapping name -> one of these. Names default to ``meta.name``.
        models: names, CurveModel instances, (label, model, options) or (label, fitter).
        protocol: "prefix" or "cross".
        fractions: prefix fractions k in (0, 1) (prefix protocol).
        train, test: run names to fit on and to predict (cross protocol; test defaults to
            every run not in train).
        fit_options: keyword arguments of :func:`lossrate.fit` for every engine-fitted model
            (default ``{"bootstrap": 0}``: Gaussian intervals, fast).
        progress: called with a short line after each fit (e.g. ``print``).
        jobs: worker processes for the prefix protocol's (run, k, model) fits
            (``concurrent.futures``; 1: none, 0: every core). The rows are those of the serial
            run, in the same order (only ``seconds`` differs); auto then fits with one process
            per fit. Models and options must pickle (names, CurveModel instances, plain
            option values; a ``(label, fitter)`` fitter must be a module-level function).
        address: run those fits as Ray tasks instead (needs ``pip install 'lossrate[ray]'``):
            on the cluster at this address (``"auto"``: one started with ``ray start`` on
            this machine), or ``"local"`` for a new local Ray with ``jobs`` CPUs (0: every
            core). The rows are the serial ones, as with ``jobs``.

    Raises:
        InvalidArgumentError: unknown protocol, bad fractions, train/test overlap or unknown
            names, a model that cannot be resolved.
    """
    check_choice("protocol", protocol, ("prefix", "cross"))
    names, rds = _runs(runs)
    opts = {"bootstrap": 0, **dict(fit_options or {})}
    specs = _specs(models, opts)
    rows: list[EvalRow] = []
    say = progress or (lambda _: None)
    if protocol == "prefix":
        ks = [float(k) for k in fractions]
        if not ks or any(not 0 < k < 1 for k in ks):
            raise InvalidArgumentError(f"fractions must lie in (0, 1), got {list(fractions)}.")
        skipped: list[str] = []
        if jobs != 1 or address is not None:
            return _prefix_parallel(names, rds, ks, list(models), opts, say, jobs, address)
        for name, rd in zip(names, rds):
            for k in ks:
                pre = rd.traj.prefix(k)
                held = rd.traj.step > pre.step[-1]
                if not held.any():
                    skipped.append(
                        f"{name} at k={k:g}: no logged step after the first {k:.0%} "
                        f"(the log has {rd.traj.n} row(s)); nothing is left to predict"
                    )
                    continue
                for spec in specs:
                    rows.append(_prefix_row(spec, name, rd, k))
                    say(_line(rows[-1]))
        return EvalTable(tuple(rows), tuple(skipped))
    if not train:
        raise InvalidArgumentError("protocol='cross' needs train=[run names to fit on].")
    unknown = [n for n in [*train, *(test or ())] if n not in names]
    if unknown:
        raise InvalidArgumentError(
            f"train/test name unknown run(s) {unknown}; the runs are {names}."
        )
    test_names = list(test) if test else [n for n in names if n not in train]
    overlap = sorted(set(train) & set(test_names))
    if overlap:
        raise InvalidArgumentError(
            f"runs {overlap} are in both train and test; validation must be out of sample."
        )
    if not test_names:
        raise InvalidArgumentError("protocol='cross' has no run left to predict; pass test=[...].")
    train_rds = [rds[names.index(n)] for n in train]
    n_train = sum(r.traj.n for r in train_rds)
    for spec in specs:
        fr, msg, t0 = None, "", time.perf_counter()
        try:
            fr = _do_fit(spec, train_rds, list(train))
        except LossrateError as exc:
            msg = f"fit failed: {exc}"
        dt = time.perf_counter() - t0
        for n in test_names:
            rd = rds[names.index(n)]
            rows.append(
                _score_row("cross", n, rd, spec, float("nan"), n_train, rd, fr, rd, dt, msg)
            )
            say(_line(rows[-1]))
    return EvalTable(tuple(rows))


def _prefix_cell(
    models: list[Any], opts: dict[str, Any], i: int, name: str, rd: RunData, k: float
) -> EvalRow:
    """One prefix-protocol row: model ``i`` fitted on the first ``k`` of ``rd`` (a worker's
    task; the specs are rebuilt here since auto's fitter is a closure)."""
    return _prefix_row(_specs(models, opts)[i], name, rd, k)


def _prefix_row(spec: _Spec, name: str, rd: RunData, k: float) -> EvalRow:
    """``spec`` fitted on the first ``k`` of ``rd`` and scored on the rest."""
    pre = rd.traj.prefix(k)
    held = rd.traj.step > pre.step[-1]
    train_rd = RunData(pre, rd.schedule)
    test_rd = RunData(rd.traj.select(held), rd.schedule)
    fr, msg, t0 = None, "", time.perf_counter()
    try:
        fr = _do_fit(spec, [train_rd], [name])
    except LossrateError as exc:
        msg = f"fit failed: {exc}"
    dt = time.perf_counter() - t0
    pred_run = None if _carries_runs(fr) else train_rd
    return _score_row("prefix", name, rd, spec, k, pre.n, test_rd, fr, pred_run, dt, msg)


def _prefix_parallel(
    names: list[str],
    rds: list[RunData],
    ks: list[float],
    models: list[Any],
    opts: dict[str, Any],
    say: Callable[[str], None],
    jobs: int,
    address: str | None = None,
) -> EvalTable:
    """The prefix protocol with its fits on a process pool, or as Ray tasks with ``address``;
    rows in the serial order."""
    import os
    from concurrent.futures import ProcessPoolExecutor

    n_specs = len(_specs(models, opts))
    # auto's own pool would nest inside this one: one process per fit (the same answer)
    models = [
        ("auto", "auto", {"jobs": 1})
        if isinstance(m, str) and m == "auto"
        else (m[0], "auto", {**dict(m[2]), "jobs": 1})
        if isinstance(m, tuple) and len(m) == 3 and isinstance(m[1], str) and m[1] == "auto"
        else m
        for m in models
    ]
    tasks, skipped = [], []
    for name, rd in zip(names, rds):
        for k in ks:
            pre = rd.traj.prefix(k)
            if not (rd.traj.step > pre.step[-1]).any():
                skipped.append(
                    f"{name} at k={k:g}: no logged step after the first {k:.0%} "
                    f"(the log has {rd.traj.n} row(s)); nothing is left to predict"
                )
                continue
            tasks += [(i, name, rd, k) for i in range(n_specs)]
    workers = max(1, min(jobs or os.cpu_count() or 1, len(tasks)))
    rows: list[EvalRow] = []
    if address is not None:
        from ._ray import ray_session

        where = None if address == "local" else address
        with ray_session(where, jobs or None, lambda _s: None, f"{len(tasks)} fits") as ray:
            cell = ray.remote(num_cpus=1)(_prefix_cell)
            shared = ray.put(models), ray.put(opts)
            for ref in [cell.remote(*shared, *t) for t in tasks]:
                rows.append(ray.get(ref))
                say(_line(rows[-1]))
        return EvalTable(tuple(rows), tuple(skipped))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(_prefix_cell, models, opts, *t) for t in tasks]
        for fut in futures:
            rows.append(fut.result())
            say(_line(rows[-1]))
    return EvalTable(tuple(rows), tuple(skipped))


def _carries_runs(fr: FitResult | None) -> bool:
    return fr is not None and (getattr(fr, "pmap", None) is not None or isinstance(fr, AutoFit))


def _line(r: EvalRow) -> str:
    k = "" if not np.isfinite(r.k) else f" k={r.k:g}"
    return (
        f"{r.protocol} {r.run}{k} {r.model}: final err {100 * r.final_rel_err:.2f}% "
        f"MAE {r.mae:.4g} ({r.seconds:.1f}s){'' if r.fit_ok else ' [' + r.message[:60] + ']'}"
    )
