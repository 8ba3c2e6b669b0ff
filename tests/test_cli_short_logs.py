"""``lossrate predict`` on a log too short for auto's backtests: the text says why the weights
are what they are, and a step where a law in Σ lr is infinite (Σ lr = 0) is not printed as a
prediction of inf."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lossrate.cli import EXIT_OK, main


def _short_log(path: Path) -> Path:
    """12 logged points from step 0 (Σ lr = 0 there), lr constant then decaying."""
    s = np.arange(0, 2400, 200)
    lr = np.where(s < 2000, 0.1, 0.1 * (1 - (s - 2000) / 400))
    loss = 2.0 * (1 + s / 300) ** -0.4 + 0.3 + 0.01 * np.random.default_rng(0).normal(size=s.size)
    rows = [
        "step,loss,lr",
        *(f"{a},{b:.17g},{c:.17g}" for a, b, c in zip(s, loss, lr, strict=True)),
    ]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_predict_on_a_log_without_backtests_says_so_and_hides_infinite_rows(
    capsys, tmp_path
) -> None:
    log = _short_log(tmp_path / "short.csv")
    assert main(["predict", str(log), "--steps", "6000", "-q"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "no backtest (the prefix is too short to hold a backtest: the median" in out
    assert "failed" not in out  # no backtest is not a failed model
    rows = [ln.split() for ln in out.splitlines() if ln[:10].strip().isdigit()]
    assert len(rows) == 11 and all(np.isfinite(float(r[2])) for r in rows)
    assert "1 step(s) with no finite prediction are left out of the table" in out
    # the JSON keeps every step, the non-finite one included
    assert main(["predict", str(log), "--steps", "6000", "-q", "--json"]) == EXIT_OK
    doc = json.loads(capsys.readouterr().out)
    assert doc["fit"]["auto"]["rule"] == "median" and doc["fit"]["auto"]["backtests"] == 0
    assert doc["step"][0] == 0 and len(doc["step"]) == 6001


def test_floor_the_fitted_laws_disagree_on_is_reported_as_not_identified(
    capsys, tmp_path, monkeypatch
) -> None:
    log = _short_log(tmp_path / "short.csv")
    assert main(["floor", str(log), "-q", "--json"]) == EXIT_OK
    doc = json.loads(capsys.readouterr().out)
    head = doc["headline"]
    lo, hi = head["floor_range"]
    assert hi > 10 * lo and head["floor_unidentified"] is True
    assert lo <= head["floor"] <= hi
    assert main(["floor", str(log), "-q"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "loss floor: not identified by this log: the fitted laws put it between" in out
    # nor is it drawn as a line with one number on the report's loss figure
    import lossrate.report as report

    drawn = []
    real = report.loss_figure

    def spy(*args, **kwargs):
        drawn.append(kwargs.get("floor"))
        return real(*args, **kwargs)

    monkeypatch.setattr(report, "loss_figure", spy)
    out_dir = tmp_path / "report"
    assert main(["report", str(log), "--out", str(out_dir), "--until", "1", "-q"]) == EXIT_OK
    assert drawn == [None] and (out_dir / "report.html").is_file()


def test_a_floor_the_laws_agree_on_is_printed_as_a_number() -> None:
    from lossrate.report.summary import Headline

    common = dict(
        final_step=100,
        observed_final=0.5,
        observed_rows=5,
        predicted_final=0.5,
        predicted_lower=0.4,
        predicted_upper=0.6,
        level=0.9,
    )
    agree = Headline(**common, floor=0.31, floor_range=(0.3, 0.32))
    assert not agree.floor_unidentified and "loss floor: 0.31\n" in agree.report() + "\n"
    apart = Headline(**common, floor=0.01, floor_range=(1e-9, 0.3))
    assert apart.floor_unidentified and "not identified" in apart.report()
    single = Headline(**common, floor=0.31)  # a single model: no range, a plain number
    assert not single.floor_unidentified and "loss floor: 0.31" in single.report()
