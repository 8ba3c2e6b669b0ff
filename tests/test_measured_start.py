"""The ODE fit's measured start reads the debiased gradient norm (issue 15 item 4).

A run recorded with gradient groups has ``gradient_noise.csv`` beside ``trajectory.csv``;
``read_log`` attaches its debiased pgrad_sq as the trajectory's ``pgrad_sq_debiased`` column,
and the ``ode`` models start their rho family from phi_hat = pgrad_sq_debiased / g(L)
(binned, since single steps are noisy and may be negative) instead of the mini-batch
pgrad_sq, which is too large by tr(P Sigma_g) / B. Checked on a synthetic run whose true
rate phi(S) = rho0 (1 + S/S0)^-beta is known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import lossrate
from lossrate import RunMeta, Trajectory
from lossrate._model import RunData
from lossrate.closures import get_closure
from lossrate.fitting.ode_models import _measured_rho
from lossrate.measured import NOISE_COLUMNS, NOISE_FORMAT
from lossrate.readers import read_log

N, LR, BATCH = 600, 0.05, 32
RHO0, S0, BETA = 0.8, 4.0, 0.6
G = get_closure("ce", classes=10, alpha=1.5).g


def _run(folder: Path, *, noise: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A CE run whose per-step pgrad_sq is the true phi g(L) times the batch noise: written
    raw (plus tr Sigma / B, 20x the true value) to trajectory.csv, debiased (unbiased, 60 %
    relative scatter per step) to gradient_noise.csv. Returns (true, debiased)."""
    rng = np.random.default_rng(3)
    k = np.arange(N, dtype=float)
    S = LR * k
    loss = 2.3 * (1 + k / 60) ** -0.5 * np.exp(0.02 * rng.standard_normal(N))
    true = RHO0 * (1 + S / S0) ** -BETA * G(loss)
    raw = true * 21.0 * np.exp(0.1 * rng.standard_normal(N))
    deb = true * (1 + 0.6 * rng.standard_normal(N))
    folder.mkdir(parents=True, exist_ok=True)
    Trajectory.from_arrays(
        loss, step=k, lr=np.full(N, LR), pgrad_sq=raw, meta=RunMeta(loss="ce", classes=10)
    ).write(folder / "trajectory.csv")
    if noise:
        cols = {c: np.full(N, np.nan) for c in NOISE_COLUMNS}
        cols.update(step=k, groups=np.full(N, 2.0), batch_size=np.full(N, BATCH * 2.0))
        cols.update(pgrad_sq=deb, pgrad_sq_raw=raw, grad_sq=deb, grad_sq_raw=raw)
        with (folder / "gradient_noise.csv").open("w") as f:
            f.write(f"# {NOISE_FORMAT}\n{','.join(NOISE_COLUMNS)}\n")
            for row in np.column_stack([cols[c] for c in NOISE_COLUMNS]):
                f.write(",".join(repr(float(x)) for x in row) + "\n")
    return true, deb


def test_read_log_attaches_the_debiased_column(tmp_path: Path) -> None:
    _, deb = _run(tmp_path / "run")
    traj = read_log(tmp_path / "run" / "trajectory.csv")
    assert traj.pgrad_sq_debiased is not None
    np.testing.assert_array_equal(traj.pgrad_sq_debiased, deb)
    assert (deb < 0).any()  # negative single steps are kept, not rejected by validation
    plain = read_log(_run_without_noise(tmp_path))
    assert plain.pgrad_sq_debiased is None


def _run_without_noise(tmp_path: Path) -> Path:
    _run(tmp_path / "bare", noise=False)
    return tmp_path / "bare" / "trajectory.csv"


def test_measured_start_uses_the_debiased_rate(tmp_path: Path) -> None:
    _run(tmp_path / "run")
    traj = read_log(tmp_path / "run" / "trajectory.csv")
    run = RunData.from_trajectory(traj)
    rho0, s0, beta = _measured_rho(run, G)
    # the debiased start recovers the true rate family (60 % per-step scatter, 600 steps)
    S = LR * np.arange(N)
    fitted = rho0 * (1 + S / s0) ** -beta
    truth = RHO0 * (1 + S / S0) ** -BETA
    assert np.max(np.abs(np.log(fitted / truth))) < 0.2
    # the raw mini-batch column alone is ~21x too large
    raw = _measured_rho(RunData.from_trajectory(traj.replace(pgrad_sq_debiased=None)), G)
    assert raw is not None and raw[0] / RHO0 > 10


def test_fit_notes_say_which_rate_started_the_fit(tmp_path: Path) -> None:
    _run(tmp_path / "run")
    fit = lossrate.fit(read_log(tmp_path / "run" / "trajectory.csv"), model="ode", bootstrap=0)
    assert any("debiased pgrad_sq" in n for n in fit.notes)
    bare = lossrate.fit(read_log(_run_without_noise(tmp_path)), model="ode", bootstrap=0)
    assert any("raw mini-batch pgrad_sq" in n for n in bare.notes)


def test_a_broken_noise_file_warns_and_keeps_the_curve(tmp_path: Path) -> None:
    _run(tmp_path / "run")
    (tmp_path / "run" / "gradient_noise.csv").write_text("not,a,noise,file\n")
    with pytest.warns(UserWarning, match="gradient-noise file"):
        traj = read_log(tmp_path / "run" / "trajectory.csv")
    assert traj.pgrad_sq_debiased is None and traj.n == N
