"""The gradient noise scale in the CLI (issue 15 item 2): ``lossrate floor``/``fit``/``report``
of a run folder (or a log) with the recorder's ``gradient_noise.csv`` beside it print one
line with B_noise, its interval and the run's batch relative to it, and put it in ``--json``
and in the report page; nothing is said when the file is absent. The numbers are checked
against :func:`lossrate.measured.noise_scale` computed directly on a synthetic file with
known columns."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lossrate import RunMeta, Trajectory
from lossrate.cli import EXIT_OK, main
from lossrate.measured import NOISE_COLUMNS, NOISE_FORMAT, noise_scale, read_gradient_noise

N = 300
FAST = ["--model", "power_steps", "--bootstrap", "0", "-q"]


def write_noise(path: Path, n: int = N, batch: int = 64, seed: int = 0) -> None:
    """Rows with ||grad L||^2 ~ 0.5 (1 + k/50)^-1 and tr(Sigma_g) ~ 40 (1 + k/50)^-1 plus
    noise: B_noise ~ 80 over the last quarter, so batch 64 is ~0.8 x B_noise."""
    rng = np.random.default_rng(seed)
    k = np.arange(n, dtype=float)
    decay = 1.0 / (1.0 + k / 50.0)
    cols = {name: np.full(n, np.nan) for name in NOISE_COLUMNS}
    cols["step"] = k
    cols["groups"] = np.full(n, 2.0)
    cols["batch_size"] = np.full(n, float(batch))
    cols["grad_sq"] = 0.5 * decay * (1 + 0.3 * rng.standard_normal(n))
    cols["grad_sq_raw"] = cols["grad_sq"] + 40 * decay / batch
    cols["trace_sigma"] = 40.0 * decay * (1 + 0.2 * rng.standard_normal(n))
    rows = np.column_stack([cols[c] for c in NOISE_COLUMNS])
    with path.open("w") as f:
        f.write(f"# {NOISE_FORMAT}\n{','.join(NOISE_COLUMNS)}\n")
        for r in rows:
            f.write(",".join(repr(float(x)) for x in r) + "\n")


def write_run(folder: Path, *, noise: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    k = np.arange(N)
    rng = np.random.default_rng(1)
    loss = 2.3 * (1 + k / 40) ** -0.4 * np.exp(0.02 * rng.standard_normal(N))
    traj = Trajectory.from_arrays(
        loss,
        step=k,
        lr=np.full(N, 0.05),
        meta=RunMeta(loss="ce", classes=10, name="noisy"),
    )
    traj.write(folder / "trajectory.csv")
    if noise:
        write_noise(folder / "gradient_noise.csv")
    return folder


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    return write_run(tmp_path / "run", noise=True)


def expected_line(folder: Path) -> tuple[str, object]:
    ns = noise_scale(read_gradient_noise(folder))
    hi = "inf" if np.isinf(ns.upper) else f"{ns.upper:.3g}"
    line = (
        f"gradient noise scale B_noise ≈ {ns.estimate:.3g} [95 % {ns.lower:.3g}, {hi}] over "
        f"steps {ns.steps[0]}–{ns.steps[1]}; the run's batch B = {ns.batch_size:g} is "
        f"{ns.ratio:.2g} × B_noise"
    )
    return line, ns


def test_floor_prints_the_noise_scale_line(run_dir: Path, capsys) -> None:
    line, ns = expected_line(run_dir)
    assert 40 < ns.estimate < 160 and ns.lower < ns.estimate < ns.upper  # the synthetic truth
    assert ns.batch_size == 64 and ns.ratio == pytest.approx(64 / ns.estimate)
    assert main(["floor", str(run_dir), *FAST]) == EXIT_OK
    out = capsys.readouterr().out
    assert line in out.splitlines()

    assert main(["floor", str(run_dir), *FAST, "--json"]) == EXIT_OK
    data = json.loads(capsys.readouterr().out)["gradient_noise"]
    assert data["estimate"] == pytest.approx(ns.estimate, rel=1e-12)
    assert [data["lower"], data["upper"]] == pytest.approx([ns.lower, ns.upper], rel=1e-12)
    assert data["batch_size"] == 64 and data["ratio"] == pytest.approx(ns.ratio, rel=1e-12)
    assert data["steps"] == list(ns.steps) and data["text"] == line


def test_a_log_beside_the_file_is_enough(run_dir: Path, capsys) -> None:
    line, _ = expected_line(run_dir)
    assert main(["floor", str(run_dir / "trajectory.csv"), *FAST]) == EXIT_OK
    assert line in capsys.readouterr().out


def test_fit_and_report_put_it_in_the_page_and_fit_json(run_dir: Path, tmp_path, capsys) -> None:
    line, ns = expected_line(run_dir)
    out = tmp_path / "rep"
    assert main(["fit", str(run_dir), "--out", str(out), *FAST, "--json"]) == EXIT_OK
    data = json.loads(capsys.readouterr().out)
    assert data["gradient_noise"]["estimate"] == pytest.approx(ns.estimate, rel=1e-12)
    page = (out / "report.html").read_text()
    assert line.replace("'", "&#x27;") in page
    assert json.loads((out / "fit.json").read_text())["notes"] == [line]
    # the report folder is a run folder too: its gradient_noise.csv beside trajectory.csv
    src = (run_dir / "gradient_noise.csv").read_bytes()
    assert (out / "gradient_noise.csv").read_bytes() == src
    assert main(["floor", str(out / "trajectory.csv"), *FAST]) == EXIT_OK
    assert line in capsys.readouterr().out

    # lossrate report on the run folder itself (its gradient_noise.csv is kept in place)
    assert main(["report", str(run_dir), *FAST]) == EXIT_OK
    assert line in capsys.readouterr().out
    assert line.replace("'", "&#x27;") in (run_dir / "report.html").read_text()
    assert (run_dir / "gradient_noise.csv").is_file()


def test_nothing_is_said_without_the_file(tmp_path: Path, capsys) -> None:
    folder = write_run(tmp_path / "plain", noise=False)
    assert main(["floor", str(folder), *FAST]) == EXIT_OK
    assert "noise scale" not in capsys.readouterr().out
    assert main(["floor", str(folder), *FAST, "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["gradient_noise"] is None


def test_an_unusable_file_is_named_and_the_fit_still_runs(run_dir: Path, capsys) -> None:
    (run_dir / "gradient_noise.csv").write_text("not,a,noise,file\n")
    assert main(["floor", str(run_dir), *FAST]) == EXIT_OK
    out = capsys.readouterr().out
    assert "gradient noise scale not computed: " in out and "gradient_noise.csv" in out
