"""``lossrate demo``: the real pipeline on a short run, and its folder safety."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("mlxtend")

from lossrate import InvalidArgumentError, Trajectory
from lossrate.cli import EXIT_OK, main
from lossrate.demo import default_target, run_demo

STEPS = 60


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    assert (
        main(["demo", "--out", str(out), "--steps", str(STEPS), "--device", "cpu", "-q"]) == EXIT_OK
    )
    return out


@pytest.mark.slow
def test_demo_folder_holds_everything_listed(demo_dir) -> None:
    for name in ("trajectory.csv", "fit.json", "report.html", "config.toml"):
        assert (demo_dir / name).is_file(), name
    for fig in ("loss", "phi", "closure_ratio", "residuals"):
        png = demo_dir / "figures" / f"{fig}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", fig
    traj = Trajectory.read(demo_dir / "trajectory.csv")
    assert traj.n == STEPS
    assert traj.has("residual_sq") and traj.has("loss_std") and traj.has("pgrad_sq")
    doc = json.loads((demo_dir / "fit.json").read_text())
    h = doc["headline"]
    assert h["final_step"] == STEPS - 1 and h["cut_step"] == int(0.4 * (STEPS - 1))
    assert h["predicted_final"] > 0 and h["observed_final"] > 0
    assert doc["fit"]["auto"]["weights"] and doc["settings"]["config"] == "mnist_mlp_demo"
    assert sum(doc["fit"]["auto"]["weights"].values()) == pytest.approx(1.0)
    html = (demo_dir / "report.html").read_text()
    assert "http://" not in html and "https://" not in html
    assert f"{h['predicted_final']:.4g}" in html
    assert not list(demo_dir.parent.glob(".run.*")), "no partial or old folders are left behind"


@pytest.mark.slow
def test_a_failed_demo_keeps_the_previous_folder(demo_dir, monkeypatch) -> None:
    before = {p: p.read_bytes() for p in demo_dir.rglob("*") if p.is_file()}

    def boom(*args, **kwargs):
        raise RuntimeError("fit exploded")

    monkeypatch.setattr("lossrate.demo.analyze", boom)
    with pytest.raises(RuntimeError):
        run_demo(demo_dir, steps=20, device="cpu", progress=False)
    assert {p: p.read_bytes() for p in demo_dir.rglob("*") if p.is_file()} == before
    assert not list(demo_dir.parent.glob(".run.*"))


def test_demo_refuses_a_folder_that_is_not_a_run(tmp_path) -> None:
    (tmp_path / "thesis.tex").write_text("precious")
    with pytest.raises(InvalidArgumentError, match="not a lossrate run"):
        run_demo(tmp_path, steps=20, progress=False)
    assert (tmp_path / "thesis.tex").read_text() == "precious"


@pytest.mark.parametrize(("final", "target"), [(0.27, 0.14), (0.0317, 0.016), (1.9, 0.95)])
def test_default_target_halves_the_final_loss_to_two_digits(final: float, target: float) -> None:
    assert default_target(final) == pytest.approx(target)
