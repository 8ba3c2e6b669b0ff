"""lossrate.replay: integrating a run's own measured rate, checked against closed forms.

Synthetic runs obey dL/dt = -phi0 g(L) (+ D) exactly, with the measured columns a recorder
would write (debiased pgrad_sq = phi0 g(L) plus noise; raw = that + tr(P Sigma)/B)."""

from __future__ import annotations

import numpy as np
import pytest

from lossrate import DataError, InvalidArgumentError, RunMeta, Trajectory, replay
from lossrate.closures import MSE
from lossrate.measured import NOISE_COLUMNS, GradientNoise
from lossrate.replay import LABEL

N, LR, PHI0, L0, B = 400, 0.05, 0.1, 2.0, 32
G = MSE(a=0.5)  # g = 2 L


def _run(
    drift: float = 0.0, noise_sd: float = 0.0, seed: int = 0
) -> tuple[Trajectory, GradientNoise]:
    t = LR * np.arange(N)
    k = 2 * PHI0  # dL/dt = -k L + D
    L = drift / k + (L0 - drift / k) * np.exp(-k * t)
    rng = np.random.default_rng(seed)
    pgrad = PHI0 * 2 * L * (1 + noise_sd * rng.standard_normal(N))
    trace = np.full(N, drift * B)  # tr(P Sigma)/B = D
    traj = Trajectory.from_arrays(
        L,
        lr=np.full(N, LR),
        residual_sq=2 * L,
        pgrad_sq=np.abs(pgrad) + trace / B,
        loss_std=np.zeros(N),
        meta=RunMeta(loss="mse"),
    )
    cols = {c: np.full(N, np.nan) for c in NOISE_COLUMNS}
    cols.update(
        step=np.arange(N, dtype=float),
        groups=np.full(N, 2.0),
        batch_size=np.full(N, float(B)),
        pgrad_sq_raw=pgrad + trace / B,
        pgrad_sq=pgrad,
        ptrace_sigma=trace,
    )
    return traj, GradientNoise(**cols)


def test_replay_of_an_exact_run_reproduces_it_and_the_raw_rate_does_not():
    traj, noise = _run(noise_sd=0.2)
    rp = replay(traj, noise, closure=G, sgd_noise=False)
    worst, last = rp.error("loss")
    assert worst < 0.04 and last < 0.04, (worst, last)
    assert rp.debiased and rp.loss_noise is None and rp.label == LABEL
    np.testing.assert_allclose(rp.closure_ratio, 1.0)
    assert LABEL in rp.describe()


def test_sgd_noise_term_matches_the_closed_form_equilibrium():
    D = 0.05  # L_eq = D / (2 phi0) = 0.25
    traj, noise = _run(drift=D)
    rp = replay(traj, noise, closure=G)
    k = 2 * PHI0
    exact = D / k + (L0 - D / k) * np.exp(-k * rp.t)
    np.testing.assert_allclose(rp.loss_noise, exact, rtol=3e-3)
    # without the term the replay of the same rate runs below the observed curve
    assert rp.loss[-1] < 0.9 * exact[-1]
    assert rp.error("loss_raw")[0] > 0.5  # the biased raw rate overshoots badly


def test_replay_errors_name_the_recorder_option(tmp_path):
    traj, noise = _run()
    with pytest.raises(DataError, match=r"GradientGroups.*debiased=False"):
        replay(traj, closure=G)
    bare = Trajectory.from_arrays(traj.loss, lr=traj.lr, meta=RunMeta(loss="mse"))
    with pytest.raises(DataError, match=r"gradient_metrics\(model, optimizer\)"):
        replay(bare, closure=G, debiased=False)
    with pytest.raises(InvalidArgumentError, match="window"):
        replay(traj, noise, closure=G, window=0)
    with pytest.raises(InvalidArgumentError, match="which"):
        replay(traj, noise, closure=G).error("nope")
    with pytest.raises(DataError, match="does not exist"):
        replay(tmp_path / "missing")


def test_replay_reads_a_run_folder(tmp_path):
    traj, _ = _run()
    traj.write(tmp_path / "trajectory.csv")
    rp = replay(tmp_path, closure=G, debiased=False)
    assert not rp.debiased and rp.loss_raw is None
    assert rp.error("loss")[0] < 0.03  # without drift, raw = debiased here


def _write_noise(path, noise: GradientNoise) -> None:
    from lossrate.measured import NOISE_FORMAT

    rows = np.column_stack([getattr(noise, c) for c in NOISE_COLUMNS])
    lines = [f"# {NOISE_FORMAT}", ",".join(NOISE_COLUMNS)]
    lines += [",".join(repr(float(v)) for v in r) for r in rows]
    path.write_text("\n".join(lines) + "\n")


def test_cli_replay_labels_its_output_and_names_the_flag_when_columns_are_missing(tmp_path, capsys):
    import json

    from lossrate.cli import main

    traj, noise = _run(drift=0.05)
    traj.write(tmp_path / "trajectory.csv")
    assert main(["replay", str(tmp_path)]) == 3
    err = capsys.readouterr().err
    assert "--raw" in err and "GradientGroups" in err
    assert main(["replay", str(tmp_path), "--raw"]) == 0
    assert LABEL in capsys.readouterr().out
    _write_noise(tmp_path / "gradient_noise.csv", noise)
    assert main(["replay", str(tmp_path), "--json", "--plot", str(tmp_path / "r.png")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["label"] == LABEL and out["debiased"]
    assert out["loss_noise"]["max_rel_error"] < 0.02
    assert (tmp_path / "r.png").stat().st_size > 0
