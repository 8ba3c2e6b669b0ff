"""Optimizer-aware gradient metrics: ||grad L||^2 and grad L^T P grad L.

The ODE's exact identity (theory §1.2) is, for the preconditioned flow
theta' = -eta P grad L,

    dL/dt = -eta grad L^T P grad L = -eta rho R,

so the rate an optimizer realises is measured by ``pgrad_sq = grad^T P grad`` with the P
that optimizer *applies*. P is read from the optimizer's own state and hyper-parameters,
as that state will be after this step's update (call :func:`gradient_metrics` after
``backward()`` and before ``optimizer.step()``; the state is not modified):

===========  ==================================================================================
optimizer    P (diagonal; g_eff = grad + weight_decay * theta for L2-style weight decay)
===========  ==================================================================================
SGD          I without momentum; (1 - dampening) / (1 - momentum) I with momentum (also Nesterov)
Adam(W)      1 / (sqrt(v / (1 - beta2^k)) + eps),  v = beta2 v_prev + (1 - beta2) g_eff^2,
             k = step count after this step; with amsgrad v -> max(v_max_prev, v)
RMSprop      1 / (sqrt(s) + eps),  s = alpha s_prev + (1 - alpha) g_eff^2  (centered: s - m^2,
             m = alpha m_prev + (1 - alpha) g_eff); times 1 / (1 - momentum) with momentum
Adagrad      1 / ((1 + (k - 1) lr_decay) (sqrt(S) + eps)),  S = S_prev + g_eff^2
===========  ==================================================================================

**Momentum convention (flow limit).** Theory §1.1 writes the optimizer as the first-order
flow theta' = -eta P grad L "in the flow limit, ignoring momentum". For heavy-ball momentum
mu the buffer b = mu b + g converges to g / (1 - mu) when g varies slowly over the
1 / (1 - mu) steps the buffer remembers, so the flow the optimizer follows is
theta' = -eta / (1 - mu) grad L: P = I / (1 - mu). The instantaneous alternative,
<g, b> (what this step moves along g), is noisy, can be negative (P would not be positive
definite) and is not a property of the flow; the flow-limit P is exact once the buffer has
filled under a constant gradient and is the convention here. Adam's first moment is an
average (its bias-corrected m equals g for a constant gradient), so it adds no factor.

**Exact identities** (the tests check them): with Delta theta the real step and lr the
learning rate, ``pgrad_sq == -<grad, Delta theta> / lr`` exactly for SGD without momentum,
Adam/AdamW with beta1 = 0 or at their first step (any beta1), RMSprop and Adagrad without
momentum, all without weight decay; for SGD with momentum or Adam with beta1 > 0 it holds
in the limit of a constant gradient.

**Parameter groups.** With several groups of different learning rates the reference rate
is group 0's ``lr`` (the one a recorder logs), and each group's P is scaled by
lr_group / lr_0, so eta_0 * pgrad_sq is the rate of decrease the whole step applies.

Call after gradient clipping and after ``GradScaler.unscale_`` if those are used (P is
then the one applied to the clipped gradient); under DDP the gradients are already
averaged, so the metrics are global. Optimizers not in the table raise an error unless a
rule is added with :func:`register_preconditioner`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, overload

import torch
from torch import nn

from .._errors import InvalidArgumentError

__all__ = ["GradStats", "gradient_metrics", "preconditioned_grads", "register_preconditioner"]

#: A preconditioner rule: (param group, optimizer state of the parameter, parameter, gradient)
#: -> the diagonal of P for that parameter, a tensor like the gradient or a float.
Preconditioner = Callable[
    [dict[str, Any], dict[str, Any], torch.Tensor, torch.Tensor], "torch.Tensor | float"
]


@dataclass(frozen=True)
class GradStats:
    """Gradient metrics of one step.

    Attributes:
        grad_sq: ||grad L||^2 over the parameters that have a gradient.
        pgrad_sq: grad L^T P grad L with the optimizer's P (see the module docstring); NaN
            when no optimizer was given.

    With gradient groups (``gradient_metrics(..., groups=...)``, :mod:`lossrate.torch.groups`)
    also, unbiased for the full-data gradient (:mod:`lossrate.measured`; NaN otherwise):

    Attributes:
        grad_sq_debiased: ||grad L||^2 without the mini-batch's tr(Sigma_g) / B.
        pgrad_sq_debiased: grad L^T P grad L likewise.
        trace_sigma: tr(Sigma_g), the per-sample gradient covariance's trace.
        ptrace_sigma: tr(P Sigma_g).
        groups: the number of gradient groups K (0 without groups).
        batch_size: the step's samples over all groups (NaN without groups).
        update_dot: <theta_k - theta_{k-1}, grad L_B(theta_k)>, the previous optimizer
            step's update against this step's gradient (NaN at the first step): with the
            debiased pgrad_sq it measures the step's second-order loss change (lossrate.replay).
    """

    grad_sq: float
    pgrad_sq: float
    grad_sq_debiased: float = math.nan
    pgrad_sq_debiased: float = math.nan
    trace_sigma: float = math.nan
    ptrace_sigma: float = math.nan
    groups: int = 0
    batch_size: float = math.nan
    update_dot: float = math.nan


_RULES: dict[type[torch.optim.Optimizer], Preconditioner] = {}


def register_preconditioner(
    optimizer_type: type[torch.optim.Optimizer], rule: Preconditioner
) -> None:
    """Teach :func:`gradient_metrics` the diagonal preconditioner of an optimizer class.

    ``rule(group, state, param, grad)`` returns diag(P) for ``param`` (a tensor shaped like
    ``grad``, or a float for a multiple of I), computed *without* modifying ``state``, as it
    will be after this step's update. Subclasses use the rule of their nearest registered base.
    """
    if not (isinstance(optimizer_type, type) and issubclass(optimizer_type, torch.optim.Optimizer)):
        raise InvalidArgumentError(
            f"optimizer_type must be a torch.optim.Optimizer subclass, got {optimizer_type!r}."
        )
    _RULES[optimizer_type] = rule


def _rule_for(optimizer: torch.optim.Optimizer) -> Preconditioner:
    for cls in type(optimizer).__mro__:
        if cls in _RULES:
            return _RULES[cls]
    known = ", ".join(sorted(c.__name__ for c in _RULES))
    raise InvalidArgumentError(
        f"optimizer {type(optimizer).__name__} has no preconditioner rule (known: {known}); "
        "pass optimizer=None to record grad_sq only, or add a rule with "
        "lossrate.torch.register_preconditioner."
    )


def _unwrap(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimizer inside a framework wrapper (accelerate's AcceleratedOptimizer,
    Lightning's LightningOptimizer), whose own class has no preconditioner rule."""
    for attr in ("optimizer", "_optimizer"):
        inner = getattr(optimizer, attr, None)
        if isinstance(inner, torch.optim.Optimizer) and inner is not optimizer:
            return _unwrap(inner)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise InvalidArgumentError(
            f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}."
        )
    return optimizer


def _params(model_or_params: Any) -> list[torch.Tensor]:
    if isinstance(model_or_params, nn.Module):
        cls = type(model_or_params)
        if (
            cls.parameters is not nn.Module.parameters
            or cls.named_parameters is not nn.Module.named_parameters
        ):
            return list(model_or_params.parameters())
        # module.parameters() without its set of tensors (Tensor.__hash__ is Python code):
        # the same parameters in the same order, shared ones once, deduplicated by id
        seen: set[int] = set()
        out = []
        for module in model_or_params.modules():
            for p in module._parameters.values():
                if p is not None and id(p) not in seen:
                    seen.add(id(p))
                    out.append(p)
        return out
    if isinstance(model_or_params, torch.Tensor):
        return [model_or_params]
    try:
        params = list(model_or_params)
    except TypeError:
        raise InvalidArgumentError(
            "model_or_params must be an nn.Module or an iterable of parameters, got "
            f"{type(model_or_params).__name__}."
        ) from None
    if params and isinstance(params[0], dict):  # param groups
        params = [p for group in params for p in group["params"]]
    return params


def preconditioned_grads(
    optimizer: torch.optim.Optimizer,
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | float]]:
    """(param, grad, diag P) for every parameter of ``optimizer`` that has a gradient, with P
    scaled by lr_group / lr_0 (see the module docstring)."""
    with torch.no_grad():
        return list(_preconditioned(_unwrap(optimizer)))


def _preconditioned(
    optimizer: torch.optim.Optimizer,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | float]]:
    rule = _rule_for(optimizer)
    lr0 = float(optimizer.param_groups[0]["lr"])
    for group in optimizer.param_groups:
        if group.get("maximize", False):
            raise InvalidArgumentError(
                "optimizers with maximize=True are not supported: they raise the loss."
            )
        lr = float(group["lr"])
        scale = lr / lr0 if lr0 > 0 and lr != lr0 else 1.0
        for p in group["params"]:
            g = p.grad
            if g is None:
                continue
            if g.is_sparse:
                raise InvalidArgumentError(
                    "sparse gradients are not supported by gradient_metrics; densify them or "
                    "pass optimizer=None."
                )
            state = _NO_STATE if rule is _sgd else optimizer.state.get(p, _NO_STATE)
            P = rule(group, state, p, g)
            yield p, g, P * scale if scale != 1.0 else P


@overload
def gradient_metrics(
    model_or_params: nn.Module | Iterable[torch.Tensor],
    optimizer: torch.optim.Optimizer | None = None,
    *,
    groups: None = None,
) -> GradStats: ...


@overload
def gradient_metrics(
    model_or_params: nn.Module | Iterable[torch.Tensor],
    optimizer: torch.optim.Optimizer | None = None,
    *,
    groups: Any,
) -> GradStats | None: ...


def gradient_metrics(
    model_or_params: nn.Module | Iterable[torch.Tensor],
    optimizer: torch.optim.Optimizer | None = None,
    *,
    groups: Any = None,
) -> GradStats | None:
    """||grad L||^2 and grad L^T P grad L of the gradients now stored in ``.grad``.

    Call after ``loss.backward()`` and before ``optimizer.step()`` (and before
    ``zero_grad``). ``grad_sq`` is taken over ``model_or_params`` (a module, parameters or
    param groups); ``pgrad_sq`` over the optimizer's parameters, with the P of the module
    docstring (NaN without an optimizer). The optimizer's state is read, never changed.

    ``groups``: a :class:`~lossrate.torch.GradientGroups` (micro-batches, or the two-half
    mode) or :class:`~lossrate.torch.DDPGradients` holding this step's group gradients; the
    result then also has the debiased norms and tr(Sigma_g) (see :class:`GradStats`), and
    ``groups`` is reset for the next step. Without it nothing beyond the two norms is done.
    With a cadence (``groups`` built with ``every=N`` > 1) a step the groups do not measure
    returns None and computes nothing, not even the two norms (the call is the skipped work;
    pass the None on as the recorder's ``grad``); it only advances the groups to the next
    step (and, before a measured step, copies the parameters for its ``update_dot``).

    Raises:
        InvalidArgumentError: no parameter has a gradient; an optimizer without a rule;
            ``groups`` of the wrong type, with fewer than 2 groups, or not adding up to
            ``.grad``.
    """
    if groups is not None:
        if not callable(getattr(groups, "_sums", None)):
            raise InvalidArgumentError(
                "groups must be a lossrate.torch.GradientGroups or DDPGradients, got "
                f"{type(groups).__name__}."
            )
        if not groups.measuring:  # a step the cadence skips: no norms at all
            groups._skip()
            return None
    grads = [p.grad for p in _params(model_or_params) if p.grad is not None]
    if not grads:
        raise InvalidArgumentError(
            "no parameter has a gradient; call gradient_metrics after loss.backward() and "
            "before optimizer.zero_grad()."
        )
    with torch.no_grad():
        sq = dict(zip(map(id, grads), _sq_norms(grads)))  # per gradient, one fused pass
        grad_sq = math.fsum(sq.values())
        if optimizer is None:
            return _with_groups(GradStats(grad_sq, math.nan), groups, {})
        multiples: dict[float, list[torch.Tensor]] = {}  # P = c I: the gradients, by c
        parts: list[torch.Tensor] = []  # g^T P g of parameters with a diagonal P
        Ps: dict[torch.Tensor, torch.Tensor | float] = {}
        for p, g, P in _preconditioned(_unwrap(optimizer)):
            if groups is not None:
                Ps[p] = P
            if isinstance(P, torch.Tensor):
                g32 = g.float() if g.dtype in _HALF else g
                parts.append(torch.dot((g32 * g32).reshape(-1), P.reshape(-1).to(g32.dtype)))
            else:
                multiples.setdefault(float(P), []).append(g)
        pgrad = 0.0
        for c, gs in multiples.items():
            missing = [g for g in gs if id(g) not in sq]  # not among model_or_params
            if missing:
                sq.update(zip(map(id, missing), _sq_norms(missing)))
            pgrad += c * math.fsum(sq[id(g)] for g in gs)
        if parts:
            device = parts[0].device
            pgrad += float(torch.stack([t.to(device, torch.float64) for t in parts]).sum())
        return _with_groups(GradStats(grad_sq, pgrad), groups, Ps)


def _with_groups(
    stats: GradStats, groups: Any, P: dict[torch.Tensor, torch.Tensor | float]
) -> GradStats:
    """``stats`` with the debiased estimates from ``groups`` (:mod:`lossrate.measured`)."""
    if groups is None:
        return stats
    from ..measured import group_estimates

    K, sum_w2, sum_d, sum_dP, B, sum_bd, sum_bdP = groups._sums(stats.grad_sq, P)
    u, s = group_estimates(
        total_sq=stats.grad_sq,
        sum_w2=sum_w2,
        sum_group_sq=sum_d,
        groups=K,
        sum_b=B,
        sum_b_group_sq=sum_bd,
    )
    up = sp = math.nan
    if P and math.isfinite(stats.pgrad_sq):
        up, sp = group_estimates(
            total_sq=stats.pgrad_sq,
            sum_w2=sum_w2,
            sum_group_sq=sum_dP,
            groups=K,
            sum_b=B,
            sum_b_group_sq=sum_bdP,
        )
    N = getattr(groups, "population", None)
    if N:  # disjoint groups drawn without replacement: E<G_j, G_k> = |grad|^2 - tr S_N/(N-1)
        u, up = u + s / N, up + sp / N
    return GradStats(stats.grad_sq, stats.pgrad_sq, u, up, s, sp, K, B, groups.update_dot)


_HALF = (torch.float16, torch.bfloat16)
_NO_STATE: dict[str, Any] = {}  # read-only: the rules never modify the state


def _sq_norms(grads: list[torch.Tensor]) -> list[float]:
    """The squared norm of each gradient (float32 or wider): one fused reduction
    (``torch._foreach_norm``), one wait for the device, squared in float64 on the host.
    (``torch.nn.utils.get_total_norm`` groups the tensors by device and dtype in Python
    first, which cost a third of this function on an MNIST-sized step.)"""
    if any(g.dtype in _HALF for g in grads):
        grads = [g.float() if g.dtype in _HALF else g for g in grads]
    norms = torch._foreach_norm(grads)
    device = norms[0].device
    if any(n.device != device for n in norms):  # a model split over devices
        norms = [n.to(device) for n in norms]
    return [x * x for x in torch.stack(norms).tolist()]


# ------------------------------------------------------------------------- the rules
def _effective_grad(
    group: dict[str, Any], p: torch.Tensor, g: torch.Tensor, *, decoupled: bool = False
) -> torch.Tensor:
    wd = float(group.get("weight_decay", 0.0) or 0.0)
    if g.dtype in _HALF:
        g = g.float()
    return g.add(p, alpha=wd) if wd and not decoupled else g


def _step_after(state: dict[str, Any]) -> float:
    return float(state["step"]) + 1.0 if "step" in state else 1.0


def _sgd(group: dict[str, Any], state: dict[str, Any], p: torch.Tensor, g: torch.Tensor) -> float:
    mu = float(group.get("momentum", 0.0) or 0.0)
    return (1.0 - float(group.get("dampening", 0.0) or 0.0)) / (1.0 - mu) if mu else 1.0


def _adam(
    group: dict[str, Any], state: dict[str, Any], p: torch.Tensor, g: torch.Tensor
) -> torch.Tensor:
    beta2 = float(group["betas"][1])
    g = _effective_grad(group, p, g, decoupled=bool(group.get("decoupled_weight_decay", False)))
    v = state.get("exp_avg_sq")
    bc2 = 1.0 - beta2 ** _step_after(state)
    vmax = state.get("max_exp_avg_sq") if group.get("amsgrad", False) else None
    if v is None or beta2 == 0.0:
        w, scale = (g * g), (1.0 - beta2) / bc2  # v = (1 - beta2) g^2
    elif vmax is None:  # v = beta2 (v_prev + (1 - beta2)/beta2 g^2): one pass, one buffer
        w, scale = torch.addcmul(v, g, g, value=(1.0 - beta2) / beta2), beta2 / bc2
    else:
        w, scale = torch.maximum(vmax, torch.addcmul(v * beta2, g, g, value=1.0 - beta2)), 1 / bc2
    return w.sqrt_().mul_(math.sqrt(scale)).add_(float(group["eps"])).reciprocal_()


def _rmsprop(
    group: dict[str, Any], state: dict[str, Any], p: torch.Tensor, g: torch.Tensor
) -> torch.Tensor:
    alpha = float(group["alpha"])
    g = _effective_grad(group, p, g)
    s = state.get("square_avg")
    s = (g * g) * (1.0 - alpha) if s is None else torch.addcmul(s * alpha, g, g, value=1.0 - alpha)
    if group.get("centered", False):
        m = state.get("grad_avg")
        m = g * (1.0 - alpha) if m is None else torch.lerp(m, g, 1.0 - alpha)
        s = torch.addcmul(s, m, m, value=-1.0)
    P = s.sqrt_().add_(float(group["eps"])).reciprocal_()
    mu = float(group.get("momentum", 0.0) or 0.0)
    return P.mul_(1.0 / (1.0 - mu)) if mu else P


def _adagrad(
    group: dict[str, Any], state: dict[str, Any], p: torch.Tensor, g: torch.Tensor
) -> torch.Tensor:
    g = _effective_grad(group, p, g)
    S = state.get("sum")
    S = torch.full_like(g, float(group.get("initial_accumulator_value", 0.0))) if S is None else S
    clr = 1.0 / (1.0 + (_step_after(state) - 1.0) * float(group.get("lr_decay", 0.0)))
    return torch.addcmul(S, g, g).sqrt_().add_(float(group["eps"])).reciprocal_().mul_(clr)


register_preconditioner(torch.optim.SGD, _sgd)
register_preconditioner(torch.optim.Adam, _adam)  # AdamW subclasses Adam (decoupled decay)
register_preconditioner(torch.optim.RMSprop, _rmsprop)
register_preconditioner(torch.optim.Adagrad, _adagrad)
