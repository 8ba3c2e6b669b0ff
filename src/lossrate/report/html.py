"""One self-contained HTML page per fitted run.

The page has no external assets and no JavaScript: the figures are PNG data URIs
(base64) and the CSS is inline, so the file can be mailed, archived or opened
offline. Sections: headline numbers, fitted parameters with intervals, notes and
warnings, figures, run metadata.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._results import FitResult, Prediction
from ..trajectory import Trajectory, atomic_write
from .summary import Headline, format_energy

__all__ = ["ReportFigure", "render_html", "write_html"]


@dataclass(frozen=True)
class ReportFigure:
    """A rendered figure: file stem, PNG bytes and a caption."""

    name: str
    png: bytes
    caption: str


_CSS = """
:root{--fg:#1d232b;--muted:#5b6674;--line:#e2e6ea;--card:#f7f9fb;--accent:#1f5fa8;--warn:#a94400;--bad:#b3261e;--ok:#2c7a3f}
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 -apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:var(--fg);background:#fff}
main{max-width:1120px;margin:0 auto;padding:28px 24px 40px}
h1{font-size:1.6em;margin:0 0 4px}
h2{font-size:1.15em;margin:34px 0 10px;padding-bottom:4px;border-bottom:1px solid var(--line)}
.sub{color:var(--muted);margin:0}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(200px,1fr));gap:12px;margin-top:22px}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:12px 14px}
.card .k{font-size:.78em;text-transform:uppercase;letter-spacing:.04em;color:var(--muted)}
.card .v{font-size:1.45em;font-weight:600;font-variant-numeric:tabular-nums;margin-top:2px}
.card .d{font-size:.85em;color:var(--muted)}
.badge{display:inline-block;font-size:.72em;font-weight:600;padding:1px 7px;border-radius:9px;vertical-align:middle;margin-left:6px}
.badge.est{background:#fff1e0;color:var(--warn);border:1px solid #f3c48e}
.badge.meas{background:#e7f5ea;color:var(--ok);border:1px solid #a8d5b3}
.badge.fail{background:#fde8e6;color:var(--bad);border:1px solid #f1aaa4}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{text-align:left;padding:5px 10px;border-bottom:1px solid var(--line);vertical-align:top}
th{font-size:.8em;text-transform:uppercase;letter-spacing:.03em;color:var(--muted);font-weight:600}
td.n{text-align:right;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.92em}
td.doc{color:var(--muted);font-size:.9em}
ul.notes{padding-left:20px;margin:6px 0}
ul.notes li{margin:3px 0}
li.warn{color:var(--warn)}
.metrics{color:var(--muted);font-size:.88em;margin-top:8px;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
figure{margin:18px 0 26px}
figure img{width:100%;height:auto;border:1px solid var(--line);border-radius:6px}
figcaption{color:var(--muted);font-size:.9em;margin-top:6px}
footer{margin-top:40px;color:var(--muted);font-size:.82em;border-top:1px solid var(--line);padding-top:10px}
""".strip()


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _num(x: float | None, digits: int = 4) -> str:
    if x is None:
        return "—"
    x = float(x)
    if math.isnan(x):
        return "—"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    return f"{x:.{digits}g}"


def _card(key: str, value: str, detail: str = "", badge: str = "") -> str:
    return (
        f'<div class="card"><div class="k">{_e(key)}</div><div class="v">{value}{badge}</div>'
        f'<div class="d">{detail}</div></div>'
    )


def _cards(h: Headline) -> str:
    pct = f"{100 * h.level:.0f} %"
    err = 100 * h.relative_error
    cut = (
        f"fitted up to step {h.cut_step:,}" if h.cut_step is not None else "fitted on the whole run"
    )
    cards = [
        _card(
            f"predicted final loss (step {h.final_step:,})",
            _e(_num(h.predicted_final)),
            _e(f"{pct} interval [{_num(h.predicted_lower)}, {_num(h.predicted_upper)}]; {cut}"),
        ),
        _card(
            "observed final loss",
            _e(_num(h.observed_final)),
            _e(f"smoothed over the last {h.observed_rows} logged steps (Savitzky–Golay, ln L)"),
        ),
        _card(
            "prediction error",
            _e(f"{err:+.2f} %"),
            _e(f"(predicted − observed) / observed; log ratio {h.log_error:+.4f}"),
        ),
        _card(
            "loss floor",
            _e(("≤ " if h.floor_model is not None else "") + _num(h.floor)),
            _e(
                f"the model's own floor {_num(h.floor_model)} lies above losses the log reached: "
                "it does not fit the later run"
            )
            if h.floor_model is not None
            else _e(
                "not identified by this log: the fitted laws put it between "
                f"{_num(h.floor_range[0])} and {_num(h.floor_range[1])}"
            )
            if h.floor_unidentified and h.floor_range is not None
            else "what the fitted law approaches with unlimited steps"
            if h.floor is not None
            else "the model names none",
        ),
    ]
    if h.target is not None:
        cards += _target_cards(h)
    return '<section class="cards">' + "".join(cards) + "</section>"


def _target_cards(h: Headline) -> list[str]:
    """Steps and energy to the target loss (with why, when they were not computed)."""
    what = f"target loss {_num(h.target)}"
    if h.time_to_target is None:
        return [_card(f"steps to {what}", "—", "not computed (see the notes)")]
    if math.isinf(h.time_to_target):
        return [_card(f"steps to {what}", "never", "the target is at or below the floor")]
    steps = "—" if h.steps_to_target is None else f"{h.steps_to_target:,.0f}"
    sub = f"intrinsic time Σ lr = {_num(h.time_to_target)}"
    if h.predicted_steps_to_target is not None:  # read from the held-out log: the check
        p = h.predicted_steps_to_target
        sub += "; read from the log; predicted from the fitted steps: " + (
            f"{p:,.0f}" if math.isfinite(p) else "not reached"
        )
    cards = [_card(f"steps to {what}", _e(steps), _e(sub))]
    if h.energy_to_target_j is None:
        cards.append(_card(f"energy to {what}", "—", "not computed (see the notes)"))
    else:
        badge = (
            '<span class="badge est">estimate</span>'
            if h.energy_is_estimate
            else '<span class="badge meas">measured</span>'
        )
        cards.append(
            _card(
                f"energy to {what}",
                _e(format_energy(h.energy_to_target_j)),
                _e(f"energy source: {h.energy_source or 'unknown'}"),
                badge,
            )
        )
    return cards


def _param_table(fit: FitResult) -> str:
    pct = f"{100 * fit.level:.0f} %"
    docs = _param_docs(fit)
    rows = []
    for name, value in fit.params.items():
        lo, hi = fit.ci.get(name, (math.nan, math.nan))
        rows.append(
            f"<tr><td>{_e(name)}</td><td class='n'>{_e(_num(value, 6))}</td>"
            f"<td class='n'>{_e(_num(fit.stderr.get(name), 3))}</td>"
            f"<td class='n'>[{_e(_num(lo))}, {_e(_num(hi))}]</td><td class='doc'>{_e(docs.get(name, ''))}</td></tr>"
        )
    for name, value in fit.fixed.items():
        rows.append(
            f"<tr><td>{_e(name)}</td><td class='n'>{_e(_num(value, 6))}</td><td class='n'>fixed</td>"
            f"<td class='n'>—</td><td class='doc'>{_e(docs.get(name, 'held fixed (identifiability)'))}</td></tr>"
        )
    status = "" if fit.success else '<span class="badge fail">fit failed</span>'
    metrics = "  ".join(f"{k}={_num(v)}" for k, v in fit.metrics.items())
    return (
        f"<p><b>{_e(fit.model.describe())}</b>{status} — {_e(fit.message)}</p>"
        f"<table><thead><tr><th>parameter</th><th>estimate</th><th>std. error</th><th>{pct} interval</th>"
        f"<th>meaning</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        + (f'<div class="metrics">{_e(metrics)}</div>' if metrics else "")
    )


def _auto_section(fit: Any) -> str:
    """How ``auto`` weighed its models: weights, backtest scores, the rule and the interval."""
    c = fit.combination
    rows = []
    for m, score in sorted(c.scores.items(), key=lambda kv: kv[1]):
        w = c.weights.get(m, 0.0)
        member = fit.members.get(m)
        ok = "" if member is None or member.success else " (fit did not converge)"
        rows.append(
            f"<tr><td>{_e(m)}{_e(ok)}</td><td class='n'>{_e(f'{w:.2f}')}</td>"
            f"<td class='n'>{_e('failed' if not math.isfinite(score) else f'{100 * score:.2f} %')}</td></tr>"
        )
    rows += [
        f"<tr><td>{_e(m)}</td><td class='n'>—</td><td class='doc'>{_e(why)}</td></tr>"
        for m, why in fit.failed.items()
    ]
    cal = fit.calibration.describe(fit.level) if fit.calibration is not None else ""
    return (
        f"<p>{_e(c.why)}.</p>"
        "<table><thead><tr><th>model</th><th>weight</th><th>backtest median |ln(pred/obs)| at "
        f"the horizon</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        f"<p class='sub'>Backtests: {len(fit.backtests)} rolling origins inside the fitted "
        f"steps, each fitted on the steps before it and scored against the smoothed loss up "
        f"to {fit.ratio:.2g}× its span (the extrapolation ratio of this prediction). The "
        "prediction is the weighted mean of the members' ln L. Interval: split-conformal on "
        "the backtests — the error of the out-of-sample combined prediction, divided by the "
        "log of its horizon ratio, is pooled over the backtests; its 90 % quantile (times "
        "1 + 1/n for n backtests) scales ln(horizon ratio) into the half-width of the model "
        "curve, widened further where the models disagree about lrs the run never used and "
        "where a decay's gain was never seen; past the cut, while the lr does not rise, its "
        "upper edge stays at the loss the log reached (no law of the family lets the loss "
        f"rise); observation noise is added on top. {_e(cal)}.</p>"
    )


def _param_docs(fit: FitResult) -> dict[str, str]:
    """Parameter descriptions (``Param.doc``) of the model, for the run it was fitted on."""
    runs = getattr(fit, "runs", ())
    if not runs:
        return {}
    return {p.name: p.doc for p in fit.model.params(runs[0])}


def _notes(
    fit: FitResult,
    prediction: Prediction | None,
    extra: Sequence[str],
    traj: Trajectory,
    notes: Sequence[str] = (),
) -> str:
    items = [f"<li>{_e(n)}</li>" for n in [*notes, *fit.notes]]
    thinned = traj.meta.extra.get("thinned")
    if thinned:  # a long log binned by the reader (lossrate.readers._bins)
        items.insert(0, f"<li>fitted on a binned log: {_e(thinned)}</li>")
    if not fit.success:
        items.insert(0, f"<li class='warn'>the fit did not converge: {_e(fit.message)}</li>")
    if prediction is not None:
        items += [f"<li class='warn'>{_e(w)}</li>" for w in prediction.warnings]
    items += [f"<li class='warn'>{_e(w)}</li>" for w in extra]
    if not items:
        return "<p class='sub'>None.</p>"
    return "<ul class='notes'>" + "".join(items) + "</ul>"


def _figures(figures: Sequence[ReportFigure]) -> str:
    out = []
    for f in figures:
        data = base64.b64encode(f.png).decode("ascii")
        out.append(
            f'<figure id="fig-{_e(f.name)}"><img alt="{_e(f.caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_e(f.caption)}</figcaption></figure>"
        )
    return "".join(out) or "<p class='sub'>No figures.</p>"


def _meta_table(traj: Trajectory, settings: Mapping[str, Any]) -> str:
    rows: list[tuple[str, Any]] = []
    for key, value in traj.meta.to_dict().items():
        if key == "extra":
            rows += [(f"extra.{k}", v) for k, v in value.items()]
        elif value not in (None, ""):
            rows.append((key, value))
    source_rows = traj.meta.extra.get("source_rows")
    binned = f" (binned from {source_rows:,} rows)" if isinstance(source_rows, int) else ""
    rows += [
        (
            "logged steps",
            f"{traj.n:,} rows, steps {int(traj.step[0]):,} … {int(traj.step[-1]):,}{binned}",
        ),
        ("intrinsic time", f"0 … {_num(float(traj.t[-1]))}"),
        ("columns", ", ".join(traj.columns())),
    ]
    rows += [(f"setting.{k}", v) for k, v in settings.items()]
    body = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in rows)
    return f"<table><tbody>{body}</tbody></table>"


def render_html(
    traj: Trajectory,
    fit: FitResult,
    headline: Headline,
    figures: Sequence[ReportFigure],
    *,
    prediction: Prediction | None = None,
    title: str | None = None,
    warnings: Sequence[str] = (),
    settings: Mapping[str, Any] | None = None,
    notes: Sequence[str] = (),
) -> str:
    """The report page as one HTML string (self-contained: no external URL is referenced).

    Args:
        traj: the run.
        fit: the fit shown in the parameter table.
        headline: the numbers of the top cards.
        figures: rendered figures, embedded in this order.
        prediction: its warnings are listed with the fit's notes.
        title: page title (default: from the run metadata).
        warnings: further warnings to list (e.g. a figure that could not be drawn).
        settings: how the report was made (command-line options), shown with the metadata.
        notes: further notes to list (facts such as the gradient noise scale, not warnings).
    """
    from .. import __version__

    m = traj.meta
    title = (
        title
        or " · ".join(p for p in (m.name, m.dataset, m.model, m.optimizer) if p)
        or "lossrate report"
    )
    sub = f"loss {m.loss or '?'}" + (f", {m.classes} classes" if m.classes else "")
    sub += f" · schedule {m.schedule}" if m.schedule else ""
    sub += f" · model {fit.model.describe()}"
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{_e(title)} — lossrate report</title><style>{_CSS}</style></head><body><main>"
        f"<header><h1>{_e(title)}</h1><p class='sub'>{_e(sub)}</p></header>"
        f"{_cards(headline)}"
        + (
            f"<h2>How auto weighed the models</h2>{_auto_section(fit)}"
            "<h2>Fitted parameters of the weighted models</h2>"
            + "".join(_param_table(fit.members[m]) for m in fit.combination.weights)
            if getattr(fit, "combination", None) is not None
            else f"<h2>Fitted parameters</h2>{_param_table(fit)}"
        )
        + f"<h2>Notes and warnings</h2>{_notes(fit, prediction, warnings, traj, notes)}"
        f"<h2>Figures</h2>{_figures(figures)}"
        f"<h2>Run</h2>{_meta_table(traj, settings or {})}"
        f"<footer>Made by lossrate {_e(__version__)} on {_e(stamp)}. The loss state-rate ODE "
        "dL/dt = −φ(t)·g(L, σ<sub>L</sub>), t = Σ learning rate.</footer>"
        "</main></body></html>\n"
    )


def write_html(path: str | Path, page: str) -> Path:
    """Write ``page`` to ``path`` atomically (temporary file + rename)."""
    p = Path(path)
    atomic_write(p, lambda f: f.write(page))
    return p
