"""Long logs: the CSV reader parses data rows in blocks and bins a log longer than
``max_points`` by step (:mod:`lossrate.readers._bins`). Checked against closed forms
(the Hurwitz zeta for the bin means of a power law, the sum of a linear lr for the
intrinsic time) and against numpy on the raw per-sample losses (the pooled std)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from scipy.special import zeta

from lossrate import DataError, InvalidArgumentError
from lossrate.readers import csv as csv_reader
from lossrate.readers import read_csv
from lossrate.readers._bins import bin_index
from lossrate.readers._files import CSV_MAX_BYTES, DEFAULT_MAX_BYTES, csv_max_bytes


def write_csv(path: Path, header: str, columns: list[np.ndarray], fmt: list[str]) -> Path:
    with path.open("w") as f:
        f.write(header + "\n")
        np.savetxt(f, np.column_stack(columns), fmt=fmt, delimiter=",")
    return path


def bins_of(step: np.ndarray, max_points: int) -> list[np.ndarray]:
    """The raw rows of each bin, from the documented rule (contiguous runs of bin_index)."""
    idx = bin_index(step.astype(float), max_points)
    assert np.all(np.diff(idx) >= 0) and idx[0] == 0  # bins are runs of consecutive rows
    return np.split(np.arange(step.size), np.flatnonzero(np.diff(idx)) + 1)


def test_binned_power_law_is_the_exact_bin_average(tmp_path: Path) -> None:
    """L(k) = (k + k0)^-1.5 binned: each point is the exact mean of L over its bin's steps,
    (zeta(1.5, a + k0) - zeta(1.5, b + 1 + k0)) / (b - a + 1), at the bin's mean step, and
    t = sum of a linear lr is exact there."""
    n, k0, p, c = 60_000, 100.0, 1.5, 1e-3
    k = np.arange(n)
    path = write_csv(
        tmp_path / "power.csv",
        "step,loss,lr",
        [k, (k + k0) ** -p, c * (1 + k / n)],
        ["%d", "%.17g", "%.17g"],
    )
    traj = read_csv(path, max_points=2000)
    assert traj.meta.extra["source_rows"] == n
    assert f"of {n:,} logged steps kept" in traj.meta.extra["thinned"]
    groups = bins_of(k, 2000)
    assert traj.n == len(groups) <= 2000
    assert len(groups[0]) == 1 and len(groups[-1]) > 1  # fine early, coarse late
    a = np.array([g[0] for g in groups], dtype=float)
    b = np.array([g[-1] for g in groups], dtype=float)
    exact = (zeta(p, a + k0) - zeta(p, b + 1 + k0)) / (b - a + 1)
    np.testing.assert_array_equal(traj.step, np.floor((a + b) / 2 + 0.5))
    np.testing.assert_allclose(traj.loss, exact, rtol=1e-9)  # zeta differences cancel to ~1e-11
    s = traj.step.astype(float)  # sum_{j<s} c (1 + j/n) = c (s + s (s - 1) / (2 n))
    np.testing.assert_allclose(traj.t, c * (s + s * (s - 1) / (2 * n)), rtol=1e-11)
    np.testing.assert_allclose(traj.lr, c * (1 + s / n), rtol=1e-12)


def test_pooled_loss_std_is_the_std_of_all_samples(tmp_path: Path) -> None:
    """Rows with their own batch sizes, some without a loss_std: each binned loss is
    the mean of all the bin's samples, each binned loss_std the population std of the
    samples of the rows that logged one, both as numpy computes them from the samples."""
    rng = np.random.default_rng(3)
    n = 4000
    sizes = rng.integers(2, 12, n)
    samples = [rng.gamma(2.0, 1.0 + 3.0 / (1 + i / 100), size=s) for i, s in enumerate(sizes)]
    loss = np.array([x.mean() for x in samples])
    std = np.array([x.std() for x in samples])
    logged = rng.random(n) > 0.1
    path = tmp_path / "stats.csv"
    with path.open("w") as f:
        f.write("step,loss,loss_std,batch_size\n")
        for i in range(n):
            cell = repr(float(std[i])) if logged[i] else ""
            f.write(f"{i},{float(loss[i])!r},{cell},{sizes[i]}\n")
    traj = read_csv(path, max_points=300)
    groups = bins_of(np.arange(n), 300)
    assert traj.n == len(groups) and traj.loss_std is not None
    for j, g in enumerate(groups):
        everything = np.concatenate([samples[i] for i in g])
        with_std = [samples[i] for i in g if logged[i]]
        assert traj.loss[j] == pytest.approx(everything.mean(), rel=1e-12)
        if with_std:
            assert traj.loss_std[j] == pytest.approx(np.concatenate(with_std).std(), rel=1e-10)
        else:
            assert np.isnan(traj.loss_std[j])


def test_short_logs_are_not_binned(tmp_path: Path) -> None:
    k = np.arange(500)
    path = write_csv(tmp_path / "short.csv", "step,loss", [k, 1 / (k + 1.0)], ["%d", "%.17g"])
    traj = read_csv(path, max_points=500)
    np.testing.assert_array_equal(traj.loss, 1 / (k + 1.0))
    assert "thinned" not in traj.meta.extra
    assert read_csv(path, max_points=100).n < 500
    with pytest.raises(InvalidArgumentError, match="max_points must be"):
        read_csv(path, max_points=5)


def test_a_200k_row_log_reads_quickly_and_keeps_max_points(tmp_path: Path) -> None:
    n = 200_000
    k = np.arange(n)
    rng = np.random.default_rng(0)
    loss = 2.0 * (1 + k / 100) ** -0.3 * np.exp(0.05 * rng.standard_normal(n))
    path = write_csv(
        tmp_path / "long.csv",
        "step,loss,lr,loss_std",
        [k, loss, np.full(n, 3e-4), 0.8 * loss],
        ["%d", "%.6f", "%.6e", "%.6f"],
    )
    start = time.process_time()
    traj = read_csv(path)
    assert time.process_time() - start < 5.0  # the csv module and Python floats took ~4x longer
    assert 1000 < traj.n <= 20_000 and traj.meta.extra["source_rows"] == n
    full = read_csv(path, max_points=None)
    assert full.n == n and full.loss[12345] == float(f"{loss[12345]:.6f}")
    # the bin means agree with the full log's smoothed curve
    late = np.interp(traj.step, full.step, full.loss)
    assert np.median(np.abs(np.log(traj.loss / late))) < 0.05


@pytest.mark.parametrize("chunk", [7, 64, 1 << 20])
def test_block_boundaries_change_nothing(tmp_path: Path, monkeypatch, chunk: int) -> None:
    """Dense blocks, blocks with empty cells, CRLF line ends and a quoted cell: the same
    rows and the same error line numbers whatever the block size."""
    lines = ["# comment", "step,loss,lr"]
    lines += [f"{i},{1 / (i + 1)!r},0.1" for i in range(300)]
    lines += [f"{i},{1 / (i + 1)!r}," for i in range(300, 320)]  # lr not logged
    lines += [f"{i},{1 / (i + 1)!r},0.1" for i in range(320, 400)]
    text = "\r\n".join(lines) + "\r\n"
    path = tmp_path / "mixed.csv"
    path.write_bytes(text.encode())
    quoted = tmp_path / "quoted.csv"
    quoted.write_bytes(text.replace("\r\n350,", '\r\n"350",').encode())
    bad = tmp_path / "bad.csv"
    bad.write_bytes(text.replace("\r\n350,", "\r\n350,x").encode())
    monkeypatch.setattr(csv_reader, "CHUNK_BYTES", chunk)
    traj = read_csv(path, interpolate_lr=True)
    np.testing.assert_array_equal(traj.step, np.arange(400))
    np.testing.assert_array_equal(traj.loss, 1 / (np.arange(400) + 1))
    assert "lr interpolated at 20 step(s)" in traj.meta.extra["source_notes"]
    np.testing.assert_array_equal(read_csv(quoted, interpolate_lr=True).loss, traj.loss)
    with pytest.raises(DataError, match=r"line 353, column 'loss' holds 'x0\.002849"):
        read_csv(bad)


def test_csv_size_limit_is_its_own_unless_given() -> None:
    assert csv_max_bytes(DEFAULT_MAX_BYTES) == CSV_MAX_BYTES
    assert csv_max_bytes(64 * 2**20) == 64 * 2**20  # the same number, given on purpose
    assert csv_max_bytes(None) is None


def test_the_report_says_the_log_was_binned(tmp_path: Path) -> None:
    from lossrate.fit import predict
    from lossrate.report import Headline
    from lossrate.report.analysis import fit_prefix
    from lossrate.report.html import render_html

    k = np.arange(3000)
    rng = np.random.default_rng(1)
    loss = (1 + k / 50) ** -0.4 * np.exp(0.02 * rng.standard_normal(k.size))
    path = write_csv(
        tmp_path / "run.csv", "step,loss,lr", [k, loss, np.full(k.size, 0.1)], ["%d", "%.8f", "%g"]
    )
    traj = read_csv(path, max_points=200)
    f = fit_prefix(traj, model="power_steps", until=0.5, bootstrap=0)
    pred = predict(f, traj.step)
    page = render_html(traj, f, Headline.from_prediction(traj, pred), [], prediction=pred)
    assert f"fitted on a binned log: {traj.n:,} of 3,000 logged steps kept" in page
    assert "(binned from 3,000 rows)" in page


@pytest.fixture(scope="module")
def long_log(tmp_path_factory) -> Path:
    """A 30,000-row CSV (more than the default max_points of 20,000)."""
    k = np.arange(30_000)
    rng = np.random.default_rng(2)
    loss = 2.0 * (1 + k / 300) ** -0.3 * np.exp(0.02 * rng.standard_normal(k.size))
    folder = tmp_path_factory.mktemp("long")
    return write_csv(
        folder / "run.csv", "step,loss,lr", [k, loss, np.full(k.size, 0.05)], ["%d", "%.8f", "%g"]
    )


def test_read_log_passes_max_points(long_log: Path) -> None:
    from lossrate.readers import read_log

    binned = read_log(long_log)
    assert binned.n <= 20_000 and binned.meta.extra["source_rows"] == 30_000
    assert read_log(long_log, max_points=None).n == 30_000
    assert read_log(long_log, max_points=1000).n <= 1000
    with pytest.raises(InvalidArgumentError, match="max_points"):
        read_log(long_log, max_points=5)


def test_cli_notes_a_binned_log_and_max_points_all_keeps_every_row(long_log, capsys) -> None:
    import json

    from lossrate.cli import EXIT_OK, EXIT_USAGE, main

    fast = ["--model", "power_steps", "--bootstrap", "0", "-q"]
    assert main(["floor", str(long_log), *fast]) == EXIT_OK
    out = capsys.readouterr().out
    assert "note: fitted on a binned log: " in out and "of 30,000 logged steps kept" in out

    assert main(["predict", str(long_log), *fast, "--json"]) == EXIT_OK
    data = json.loads(capsys.readouterr().out)
    assert "of 30,000 logged steps kept" in data["binned"]
    assert len(data["step"]) <= 20_000

    assert main(["predict", str(long_log), *fast, "--max-points", "all", "--json"]) == EXIT_OK
    data = json.loads(capsys.readouterr().out)
    assert data["binned"] is None and len(data["step"]) == 30_000

    assert main(["predict", str(long_log), *fast, "--max-points", "all"]) == EXIT_OK
    assert "binned" not in capsys.readouterr().out

    assert main(["floor", str(long_log), *fast, "--max-points", "5000", "--json"]) == EXIT_OK
    assert "max_points=5,000" in json.loads(capsys.readouterr().out)["binned"]

    assert main(["floor", str(long_log), "--max-points", "50"]) == EXIT_USAGE
    assert "--max-points" in capsys.readouterr().err
