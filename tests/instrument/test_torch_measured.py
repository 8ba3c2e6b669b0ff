"""measured_rates: rho, the closure ratio and phi_hat from a recorded run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lossrate import DataError, RunMeta, Trajectory
from lossrate.closures import MSE, CrossEntropy
from lossrate.measured import measured_rates
from lossrate.torch import InstrumentedLoss, Recorder, gradient_metrics

pytestmark = pytest.mark.torch


def test_formulas_and_nan_where_undefined():
    traj = Trajectory.from_arrays(
        [2.0, 1.0, 0.0],
        lr=[0.1, 0.1, 0.1],
        residual_sq=[4.0, 0.0, 1.0],
        pgrad_sq=[8.0, 3.0, 2.0],
    )
    m = measured_rates(traj, MSE(a=0.5))  # g = 2 L
    np.testing.assert_allclose(m.rho, [2.0, np.nan, 2.0])
    np.testing.assert_allclose(m.closure_ratio, [1.0, 0.0, np.nan])
    np.testing.assert_allclose(m.phi_hat, [2.0, 1.5, np.nan])
    np.testing.assert_array_equal(m.t, traj.t)


def test_missing_columns_name_the_fix():
    traj = Trajectory.from_arrays([2.0, 1.0], residual_sq=[1.0, 1.0])
    with pytest.raises(DataError, match="gradient_metrics"):
        measured_rates(traj, CrossEntropy(classes=3))


def test_gradient_descent_on_mse_obeys_the_exact_identity(tmp_path):
    """Full-batch GD with a small lr: -(L_{k+1} - L_k)/lr = phi_hat g(L) + O(lr), and for MSE
    the closure ratio R/g is exactly 1 (nn.MSELoss over C outputs: a = 1/C)."""
    torch.manual_seed(0)
    model = nn.Linear(4, 3).double()
    x = torch.randn(64, 4, dtype=torch.float64)
    y = x @ torch.randn(4, 3, dtype=torch.float64) + 0.1 * torch.randn(64, 3, dtype=torch.float64)
    crit = InstrumentedLoss("mse")
    lr = 1e-3
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    with Recorder(tmp_path, meta=RunMeta(loss="mse", mse_scale=1 / 3)) as rec:
        for k in range(50):
            loss = crit(model(x), y)
            opt.zero_grad()
            loss.backward()
            gs = gradient_metrics(model, opt)
            opt.step()
            rec.log(step=k, lr=lr, batch=crit.last, grad=gs)
    traj = Trajectory.read(tmp_path / "trajectory.csv")
    m = measured_rates(traj, MSE(a=1 / 3))
    np.testing.assert_allclose(m.closure_ratio, 1.0, rtol=1e-12)
    drop_rate = -np.diff(traj.loss) / lr
    np.testing.assert_allclose(drop_rate, (m.phi_hat * MSE(a=1 / 3).g(traj.loss))[:-1], rtol=5e-3)
