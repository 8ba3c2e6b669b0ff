"""K^2, the trace of the normalised (preconditioned) empirical NTK, on a small subsample.

Theory §1.2: rho <= lambda_max(Theta_P / n) <= tr(Theta_P) / n = K^2 with

    K^2 = (1/m) sum_i ||J_i P^{1/2}||_F^2 = (1/m) sum_i sum_{c, j} (d z_ic / d theta_j)^2 P_j,

J_i = d z_i / d theta the Jacobian of sample i's outputs (all output components of the
sample, flattened). K^2 is the repo's "pseudo-root-velocity" squared and gives the
certified speed limit phi_hi = eta K^2. It costs one Jacobian (C backward passes, batched
with ``torch.func``) per sample, so it is off by default and meant for a few samples every
so many steps.

The Jacobians are taken with the model in eval mode (dropout off, batch norm on its running
statistics, no buffer is updated) and the mode is restored afterwards.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.func import functional_call, jacrev

from .._errors import InvalidArgumentError
from .gradients import preconditioned_grads

__all__ = ["kernel_trace"]


def kernel_trace(
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    max_samples: int = 8,
) -> float:
    """K^2 = (1/m) sum_i ||J_i P^{1/2}||_F^2 over the first m = min(n, max_samples) inputs.

    Args:
        model: maps a batch ``inputs[:m]`` (first dimension = samples) to outputs z.
        inputs: one batch of model inputs (a tensor).
        optimizer: when given, P is its preconditioner as in
            :func:`lossrate.torch.gradient_metrics` (call after ``backward()``, before
            ``step()``) and only its parameters with a gradient count; otherwise P = I over
            every parameter with ``requires_grad``.
        max_samples: m, the number of samples (>= 1).
    """
    if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1:
        raise InvalidArgumentError(f"max_samples must be an integer >= 1, got {max_samples!r}.")
    if not isinstance(inputs, torch.Tensor) or inputs.dim() == 0 or inputs.shape[0] == 0:
        raise InvalidArgumentError(
            "inputs must be a non-empty batch tensor (samples in the first dimension)."
        )
    named = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if optimizer is None:
        weights: dict[str, Any] = dict.fromkeys(named, 1.0)
    else:
        P_of = {id(p): P for p, _, P in preconditioned_grads(optimizer)}
        weights = {name: P_of[id(p)] for name, p in named.items() if id(p) in P_of}
    if not weights:
        raise InvalidArgumentError(
            "no parameter to differentiate: none requires grad"
            + ("" if optimizer is None else " or has a gradient in the optimizer")
            + "."
        )
    params = {name: named[name].detach() for name in weights}
    frozen = {name: p.detach() for name, p in model.named_parameters() if name not in params}
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}

    def outputs(theta: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        z = functional_call(model, ({**theta, **frozen}, buffers), (x.unsqueeze(0),))
        return z.reshape(-1)

    was_training = model.training
    model.eval()
    try:
        total = torch.zeros((), dtype=torch.float64, device=inputs.device)
        m = min(max_samples, inputs.shape[0])
        for i in range(m):
            jac = jacrev(outputs)(params, inputs[i])  # name -> (outputs, *param.shape)
            for name, J in jac.items():
                J2 = J.double().square()
                P = weights[name]
                total += (J2 * P).sum() if isinstance(P, torch.Tensor) else J2.sum() * P
    finally:
        model.train(was_training)
    return float(total) / m
