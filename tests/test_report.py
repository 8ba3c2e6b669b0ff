"""Report: figures, the self-contained HTML page and the report folder, on a synthetic run.

The run is an exact gradient-flow curve for softmax CE (g = alpha (1 - e^-L)^2) under a
power-law rate, with multiplicative batch noise and the batch statistics the recorder logs.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from lossrate import InvalidArgumentError, RunMeta, Schedule, Trajectory, bounds
from lossrate._model import CurveModel, Param
from lossrate._results import Prediction
from lossrate.closures import get_closure
from lossrate.fit import predict
from lossrate.metrics import smoothed
from lossrate.rates.power_law import PowerLaw
from lossrate.report import FIGURE_NAMES, Headline, write_report
from lossrate.report import figures as F
from lossrate.report.analysis import analyze, fit_prefix
from lossrate.report.summary import format_energy, observed_final

PNG = b"\x89PNG\r\n\x1a\n"
CLOSURE = get_closure("ce", classes=10, alpha=1.5)
RATE = PowerLaw(2.0, 3.0, 0.6)


def synthetic_run(n: int = 400, *, stats: bool = True, seed: int = 0) -> Trajectory:
    """Exact CE gradient flow L = G^-1(G(L0) - Phi(t)) at constant lr, with 5 % log-noise."""
    rng = np.random.default_rng(seed)
    sched = Schedule.constant(0.05, n)
    t = sched.S(np.arange(n))
    clean = CLOSURE.G_inv(CLOSURE.G(2.3) - RATE.Phi(t))
    cols = {}
    if stats:
        cols = dict(
            loss_std=1.2 * clean,
            residual_sq=1.7 * (1 - np.exp(-clean)) ** 2,
            pgrad_sq=RATE.phi(t) * CLOSURE.g(clean) * np.exp(rng.normal(0, 0.2, n)),
            batch_size=np.full(n, 64.0),
        )
    meta = RunMeta(
        loss="ce",
        classes=10,
        optimizer="sgd",
        schedule="constant",
        dataset="synthetic",
        model="exact-flow",
        name="synth",
        energy_source="estimate",
    )
    return Trajectory.from_arrays(
        clean * np.exp(rng.normal(0, 0.05, n)),
        lr=sched.lr,
        meta=meta,
        wall_s=np.full(n, 0.01),
        **cols,
    )


@pytest.fixture(scope="module")
def run() -> tuple[Trajectory, object, Prediction]:
    traj = synthetic_run()
    f = fit_prefix(traj, until=0.3, bootstrap=0)
    return traj, f, predict(f, traj.step)


def _page_without_images(html: str) -> str:
    return re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "data:image/png;base64,", html)


def test_write_report_writes_every_file_with_valid_pngs(run, tmp_path) -> None:
    traj, f, pred = run
    files = write_report(tmp_path / "rep", traj, f, pred, closure=CLOSURE)
    assert files.html.is_file() and files.fit_json.is_file() and files.trajectory is not None
    names = sorted(p.stem for p in files.figures)
    assert names == sorted(["loss", "phi", "closure_ratio", "residuals"])
    for p in files.figures:
        assert p.read_bytes()[:8] == PNG
        assert p.stat().st_size > 20_000  # a real plot, not an empty canvas
    back = Trajectory.read(files.trajectory)
    np.testing.assert_array_equal(back.loss, traj.loss)


def test_html_is_self_contained_and_holds_the_numbers(run, tmp_path) -> None:
    traj, f, pred = run
    h = Headline.from_prediction(
        traj,
        pred,
        cut_step=int(traj.prefix(0.3).step[-1]),
        floor=0.0123,
        target=0.05,
        time_to_target=42.0,
        steps_to_target=840.0,
        energy_to_target_j=7200.0,
        energy_source="estimate",
    )
    files = write_report(tmp_path / "rep", traj, f, pred, headline=h, closure=CLOSURE)
    html = files.html.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert "<script" not in html.lower() and "<link" not in html.lower()
    assert html.count("data:image/png;base64,") == len(files.figures)
    text = _page_without_images(html)
    for number in (
        f"{h.predicted_final:.4g}",
        f"{h.observed_final:.4g}",
        "0.0123",
        "840",
        "7.2 kJ",
        f"{100 * h.relative_error:+.2f} %",
    ):
        assert number in text, number
    assert "estimate" in text  # the energy is labelled as an estimate
    for name in f.params:  # parameter table with intervals
        assert f"<td>{name}</td>" in text
    for note in f.notes:
        assert note.replace("'", "&#x27;") in text or note in text


def test_fit_json_has_fit_headline_and_settings(run, tmp_path) -> None:
    traj, f, pred = run
    files = write_report(tmp_path / "rep", traj, f, pred, closure=CLOSURE, settings={"until": 0.3})
    doc = json.loads(files.fit_json.read_text())
    assert doc["settings"] == {"until": 0.3}
    assert doc["fit"]["params"].keys() == f.params.keys()
    assert doc["headline"]["final_step"] == int(traj.step[-1])
    assert doc["headline"]["observed_final"] == pytest.approx(observed_final(traj))
    assert len(doc["prediction"]["loss"]) == pred.loss.size


def test_without_batch_statistics_the_ratio_figure_is_skipped_and_said(tmp_path) -> None:
    traj = synthetic_run(stats=False)
    f = fit_prefix(traj, until=0.3, bootstrap=0)
    pred = predict(f, traj.step)
    folder = tmp_path / "rep"
    (folder / "figures").mkdir(parents=True)
    (folder / "figures" / "closure_ratio.png").write_bytes(PNG)  # stale, from an earlier report
    files = write_report(folder, traj, f, pred, closure=CLOSURE)
    assert not (folder / "figures" / "closure_ratio.png").exists()
    assert any("residual_sq" in w for w in files.warnings)
    assert "residual_sq" in files.html.read_text()


def test_peers_add_a_comparison_figure(run, tmp_path) -> None:
    traj, f, pred = run
    other = Prediction(
        step=pred.step,
        t=pred.t,
        loss=pred.loss * 1.1,
        lower=pred.lower,
        upper=pred.upper,
        level=pred.level,
    )
    files = write_report(tmp_path / "rep", traj, f, pred, closure=CLOSURE, peers={"scaled": other})
    assert "peers" in {p.stem for p in files.figures}
    doc = json.loads(files.fit_json.read_text())
    assert doc["peers"]["scaled"]["final_loss"] == pytest.approx(1.1 * pred.loss[-1])


def test_a_failure_while_rendering_keeps_the_previous_report(run, tmp_path, monkeypatch) -> None:
    traj, f, pred = run
    folder = tmp_path / "rep"
    write_report(folder, traj, f, pred, closure=CLOSURE)
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("lossrate.report.residuals_figure", broken)
    with pytest.raises(RuntimeError):
        write_report(folder, traj, f, pred, closure=CLOSURE)
    after = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert after == before


def test_implied_rate_recovers_the_true_rate_of_an_exact_flow() -> None:
    t = np.linspace(0.0, 40.0, 2001)
    L = CLOSURE.G_inv(CLOSURE.G(2.3) - RATE.Phi(t))
    pred = Prediction(step=np.arange(t.size), t=t, loss=L, lower=L, upper=L, level=0.9)
    tm, phi = F.implied_rate(pred, CLOSURE)
    np.testing.assert_allclose(phi, RATE.phi(tm), rtol=1e-4)


def test_closure_ratio_figure_needs_its_columns() -> None:
    with pytest.raises(InvalidArgumentError, match="residual_sq"):
        F.closure_ratio_figure(synthetic_run(stats=False), CLOSURE)


@pytest.mark.parametrize("name", ["loss", "phi", "closure_ratio", "residuals", "peers"])
def test_each_figure_draws_one_titled_figure(run, name: str) -> None:
    traj, _f, pred = run
    cut = 120
    draw = {
        "loss": lambda: F.loss_figure(traj, pred, cut_step=cut, floor=0.01, target=0.05),
        "phi": lambda: F.phi_figure(
            traj, CLOSURE, pred, measured=traj.pgrad_sq / CLOSURE.g(traj.loss), cut_step=cut
        ),
        "closure_ratio": lambda: F.closure_ratio_figure(traj, CLOSURE, cut_step=cut),
        "residuals": lambda: F.residuals_figure(traj, pred, cut_step=cut, noise_sd=0.05),
        "peers": lambda: F.peers_figure(traj, {"a": pred, "b": pred}, cut_step=cut),
    }
    fig = draw[name]()
    assert name in FIGURE_NAMES
    assert fig.axes[0].get_title()
    assert F.figure_png(fig)[:8] == PNG


def test_headline_numbers() -> None:
    traj = synthetic_run(n=200, stats=False)
    # the last point of the loss smoothed over 5 % of the 200 rows (an odd window of 9)
    assert observed_final(traj) == pytest.approx(float(smoothed(traj.loss, 9)[-1]))
    loss = np.full(traj.n, 2 * observed_final(traj))
    pred = Prediction(
        step=traj.step, t=traj.t, loss=loss, lower=loss / 2, upper=loss * 2, level=0.8
    )
    h = Headline.from_prediction(traj, pred, target=0.1, time_to_target=np.inf)
    assert h.relative_error == pytest.approx(1.0)
    assert "never reached" in h.report()
    assert format_energy(7200.0) == "7.2 kJ (0.002 kWh)"
    assert format_energy(12.0) == "12 J"


class ExactFlow(CurveModel):
    """The generating model of :func:`synthetic_run`, with its ODE components."""

    name = "exact_flow"

    def params(self, run):
        return [
            Param("rho0", 1e-3, 1e3, "log"),
            Param("S0", 1e-3, 1e4, "log"),
            Param("beta", 0.0, 3.0),
            Param("L0", 0.5, 5.0),
        ]

    def guesses(self, run):
        return [{"rho0": 1.0, "S0": 1.0, "beta": 0.5, "L0": float(run.traj.loss[0])}]

    def components(self, theta, run):
        return CLOSURE, PowerLaw(theta["rho0"], theta["S0"], theta["beta"]), theta["L0"]

    def curve(self, theta, run, steps):
        rate = PowerLaw(theta["rho0"], theta["S0"], theta["beta"])
        return CLOSURE.G_inv(CLOSURE.G(theta["L0"]) - rate.Phi(run.schedule.S(steps)))


def test_analyze_gives_floor_time_steps_and_energy_from_the_bounds() -> None:
    traj = synthetic_run()
    a = analyze(
        traj,
        closure=CLOSURE,
        model=ExactFlow(),
        until=0.5,
        target=0.03,
        joules_per_step=2.0,
        bootstrap=0,
    )
    h = a.headline
    _clo, rate, L0 = ExactFlow().components(a.fit.params, None)
    assert h.floor == pytest.approx(float(bounds.floor(CLOSURE, rate, L0)))
    T = float(bounds.time_to_target(CLOSURE, rate, L0, 0.03))
    # the first whole step at which the fitted curve reaches the target: within one lr of T
    assert T <= h.time_to_target <= T + 0.05 + 1e-9
    assert h.target_source == "model"
    assert h.time_to_target == pytest.approx(
        float(bounds.time_to_target(CLOSURE, RATE, 2.3, 0.03)), rel=0.1
    )
    assert h.steps_to_target == pytest.approx(np.ceil(T / 0.05), abs=1)  # constant lr 0.05
    assert h.energy_to_target_j == pytest.approx(2.0 * h.steps_to_target)
    assert h.energy_is_estimate and "given" in h.energy_source
    assert h.cut_step == 199 and a.notes == ()
    assert "loss floor" in a.text() and "target loss 0.03" in a.text()


def test_a_target_beyond_the_run_continues_at_the_last_learning_rate() -> None:
    traj = synthetic_run()
    a = analyze(traj, model=ExactFlow(), until=1.0, target=0.002, bootstrap=0)
    T = a.headline.time_to_target
    assert T > traj.t[-1]
    assert a.headline.steps_to_target == pytest.approx(np.ceil(T / 0.05), abs=1)
    assert a.headline.energy_to_target_j is None
    assert any("energy_j" in n for n in a.notes)


def test_without_a_floor_it_is_said_and_the_target_comes_from_the_curve() -> None:
    traj = synthetic_run(n=120, stats=False)

    class NoComponents(ExactFlow):
        components = None

    a = analyze(traj, model=NoComponents(), until=0.5, target=0.05, bootstrap=0)
    assert a.headline.floor is None
    assert any("no asymptote" in n for n in a.notes)
    # the target lies beyond the log: the first step where the fitted curve reaches it
    steps = a.headline.steps_to_target
    curve = NoComponents().curve(
        a.fit.theta(),
        a.fit.runs[0].with_schedule(Schedule.constant(0.05, int(steps) + 10)),
        np.array([steps - 1, steps]),
    )
    assert curve[0] > 0.05 >= curve[1]
    assert a.headline.time_to_target == pytest.approx(0.05 * steps)
