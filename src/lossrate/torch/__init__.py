"""PyTorch instrumentation: loss wrappers, optimizer-aware gradient metrics and a recorder.

A training step records one row of the loss state-rate ODE's statistics::

    crit = InstrumentedLoss("ce")                 # per-sample losses -> L, sigma_L, R, alpha_eff
    rec = Recorder(run_dir, meta=RunMeta(loss="ce", classes=10))
    for k, (x, y) in enumerate(loader):
        loss = crit(model(x), y)
        optimizer.zero_grad(); loss.backward()
        gs = gradient_metrics(model, optimizer)  # ||grad||^2 and grad^T P grad
        optimizer.step()
        rec.log(step=k, lr=optimizer.param_groups[0]["lr"], batch=crit.last, grad=gs)
    rec.close()

Unbiased gradient norms and tr(Sigma_g) (and ``gradient_noise.csv``) come from gradient
groups: :class:`GradientGroups` (micro-batches, or the opt-in two-half-batch mode) or
:class:`DDPGradients` (per-rank gradients), passed as ``gradient_metrics(..., groups=)``.

Lightning and Hugging Face callbacks that do the same live in :mod:`lossrate.torch.callbacks`.
"""

from .gradients import GradStats as GradStats
from .gradients import gradient_metrics as gradient_metrics
from .gradients import register_preconditioner as register_preconditioner
from .groups import DDPGradients as DDPGradients
from .groups import GradientGroups as GradientGroups
from .kernel import kernel_trace as kernel_trace
from .losses import BatchStats as BatchStats
from .losses import InstrumentedLoss as InstrumentedLoss
from .recorder import NonFiniteLossError as NonFiniteLossError
from .recorder import Recorder as Recorder
