"""Gradient groups: the per-group gradients that make the gradient norm unbiased.

One optimizer step's gradient G = sum_k w_k G_k combines K >= 2 group gradients G_k (means
over b_k samples each). The groups come from what the training already computes, or from
an opt-in split (theory §4.2; the estimators are in :mod:`lossrate.measured`):

* **gradient accumulation** — :class:`GradientGroups`: call ``groups.mark(batch_size)`` after
  each micro-batch's ``backward()``. ``.grad`` must end as the gradient of the step's mean
  loss (divide each micro-batch loss by the number of micro-batches, or weight it by its
  share of the samples), so the increment of ``.grad`` at mark k is w_k G_k, with
  w_k = b_k / sum b. No extra backward pass and no copy of the gradient: a hook on each
  parameter keeps a reference to the gradient autograd adds to ``.grad`` (the increment
  itself), so a mark is one fused norm over the increments and ``.grad`` and no wait for the
  device, plus a buffer of squared increments only for a per-entry P (Adam, RMSprop,
  Adagrad; a second one when the micro-batch sizes differ). ``update_dot``
  (``second_order=True``) adds a copy of the parameters and about three passes per step.
* **two-half-batch mode** (opt-in) — the same class on a step split into parts
  (``groups.split(n)`` gives the slices and loss weights): two backward passes on halves
  instead of one on the batch; :mod:`benchmarks.recorder_overhead` reports what it costs.
* **DDP** — :class:`DDPGradients` (:mod:`lossrate.torch.ddp_groups`): a communication hook
  takes the norms of each rank's local gradient (the average of its b_r samples) before the
  all-reduce, and a copy of it only for a per-entry P; DDP averages the ranks with
  w_r = 1 / W. ``groups.mark(batch_size)`` once per step with the local batch size; the
  per-rank sums are all-reduced (five numbers) when :func:`gradient_metrics` reads them.

**Finite population.** Groups drawn *without* replacement from N training samples (an
epoch's permutation, DistributedSampler) are slightly anti-correlated: E<G_j, G_k> =
||grad L||^2 - tr(Sigma_N) / (N - 1). With ``population=N`` the estimate adds back
trace_sigma / N, which makes it unbiased (trace_sigma then estimates N/(N-1) tr(Sigma_N), the
usual unbiased covariance). Leave it None for draws with replacement or when N >> B.

Pass the object to ``gradient_metrics(model, optimizer, groups=groups)``, which reads and
then resets it (the next step starts afresh; call ``groups.reset()`` if a step is skipped).
The groups must add up to ``.grad``, which is checked (by version counters, free: between
two marks ``.grad`` may change only by backward's accumulation, one backward per mark). A
*uniform* rescale of ``.grad`` after the last mark — ``GradScaler.unscale_``, clipping by the
global norm (Hugging Face's Trainer clips before its callbacks see the step) — is carried over
to the estimates (every parameter's norm must have changed by the same factor), so every
column is in the units of ``.grad`` when read; any other change (clipping by value,
per-parameter edits) is refused. The check needs the norms of ``.grad`` at the last mark,
one more pass per mark; after a step whose ``.grad`` was read unchanged they are no longer
taken, so a rescale after such a step (one that happens only now and then) records that
step's debiased columns as NaN (not measured) and turns the norms back on; a rescale on
every step (Hugging Face's clipping, GradScaler) keeps them on.

**Cadence** (``every=N``, opt-in; both classes). lossrate bins and smooths these columns, so
they need not be measured at every step: with ``every=N`` only the optimizer steps whose
index is a multiple of N are (the first, then one in N; the property ``measuring`` says
whether the current one is). Steps are counted by reads, one ``gradient_metrics(...,
groups=groups)`` call (or one ``reset()``) per optimizer step. An unmeasured step costs
(almost) nothing: ``mark()`` only counts the group (no norm, no buffer), the parameter hooks
return at once (no reference kept), DDPGradients' comm hook only all-reduces (as DDP's
default hook does), and ``gradient_metrics(..., groups=groups)`` returns None without taking
even the two plain norms: with a cadence the call itself is the work skipped, and the
recorder gets ``grad=None`` (gradient columns NaN, no gradient_noise.csv row). A measured
step costs what it costs with ``every=1`` and is checked and measured the same way, its
``update_dot`` included: the read of the step just before it copies the parameters, and no
other unmeasured step touches them. The standard errors and the smoothed noise scale of
gradient_noise.csv (:mod:`lossrate.measured`) run over the measured rows, so their window
spans N times as many steps.
"""

from __future__ import annotations

import functools
import itertools
import math
import weakref
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from .._errors import InvalidArgumentError
from ._cadence import _Cadence, _check_every, _UpdateDot

__all__ = ["DDPGradients", "GradientGroups"]

_HALF = (torch.float16, torch.bfloat16)

#: (groups K, sum w_k^2, sum ||w_k G_k||^2, sum w_k^2 G_k^T P G_k, sum b_k,
#:  sum b_k ||G_k||^2, sum b_k G_k^T P G_k)
Sums = tuple[int, float, float, float, float, float, float]


def _param_list(model_or_params: Any) -> list[torch.Tensor]:
    if isinstance(model_or_params, nn.Module):
        return [p for p in model_or_params.parameters() if p.requires_grad]
    params = list(model_or_params)
    if params and isinstance(params[0], dict):
        params = [p for group in params for p in group["params"]]
    if not params or not all(isinstance(p, torch.Tensor) for p in params):
        raise InvalidArgumentError(
            "model_or_params must be an nn.Module or a non-empty iterable of parameters."
        )
    return params


def _check_size(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(
            f"batch_size must be the number of samples of the group (an integer >= 1), got "
            f"{batch_size!r}."
        )
    return batch_size


def _check_population(population: Any) -> int | None:
    if population is None:
        return None
    if isinstance(population, bool) or not isinstance(population, int) or population < 2:
        raise InvalidArgumentError(
            f"population must be the number of training samples (an integer >= 2) or None, "
            f"got {population!r}."
        )
    return population


def _pdot(buf: torch.Tensor, P: torch.Tensor | float) -> float:
    if isinstance(P, torch.Tensor):
        return float(torch.dot(buf.reshape(-1), P.reshape(-1).to(buf.dtype)))
    return float(P) * float(buf.sum())


def _sq_norms(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The squared norm of each tensor, as one float64 vector (one fused reduction; no sync)."""
    norms = torch._foreach_norm(tensors)
    device = norms[0].device
    if any(n.device != device for n in norms):  # a model split over devices
        norms = [n.to(device) for n in norms]
    return torch.stack(norms).double().square()


def _norm_rows(norms: list[list[torch.Tensor]]) -> list[list[float]]:
    """The marks' per-parameter norms as floats (one stack, one wait for the device)."""
    flat = [n for row in norms for n in row]
    device = flat[0].device
    if any(n.device != device for n in flat):
        flat = [n.to(device) for n in flat]
    vals = torch.stack(flat).tolist()
    width = len(norms[0])
    return [vals[i : i + width] for i in range(0, len(vals), width)]


def _keep_increment(ref: Any, i: int, grad: torch.Tensor) -> None:
    """Parameter hook of a :class:`GradientGroups`: keep the gradient this backward adds
    to ``.grad`` (a reference; autograd does not modify it) once the step's first mark is
    taken."""
    groups = ref()
    if groups is not None and groups._tracking:
        if groups._incoming[i] is not None:
            groups._twice = True
        groups._incoming[i] = grad


class GradientGroups(_Cadence):
    """Micro-batch (or half-batch) gradients of one optimizer step (see the module).

    ``mark()`` costs one fused norm over the increments (kept by parameter hooks, no copy)
    and ``.grad`` (``torch._foreach_norm``) and never waits for the device; the
    per-entry buffer of squared increments, needed only for a per-entry preconditioner
    (Adam, RMSprop, Adagrad), is kept while the optimizer read by ``gradient_metrics`` has one
    (SGD's P = c I needs per-parameter norms only). The sums are read once per step.

    Args:
        model_or_params: the trained module or its parameters.
        population: the number of training samples N when batches are drawn without
            replacement (see the module), else None.
        second_order: also measure ``update_dot`` (the previous update against this step's
            gradient, for lossrate.replay's second-order term): one copy of the parameters
            and about three passes over them per step; False leaves it NaN.
        every: measure every ``every``-th optimizer step only, the first included (see the
            module's *Cadence*); 1 measures every step.
    """

    def __init__(
        self,
        model_or_params: nn.Module | Iterable[torch.Tensor],
        *,
        population: int | None = None,
        second_order: bool = True,
        every: int = 1,
    ) -> None:
        self.every = _check_every(every)
        self._step = 0
        self.params = _param_list(model_or_params)
        self.population = _check_population(population)
        self._update_dot = _UpdateDot()
        self.update_dot = math.nan  # of the last step read (see _UpdateDot)
        self._entries = True  # keep the per-entry buffer (until a read shows P is scalar)
        # take ||.grad|| at every mark, for the rescale check (until a read finds .grad
        # unchanged after the marks; on again after a read that finds it changed)
        self._track_grad = True
        self._active: list[torch.Tensor] = []  # parameters with a gradient, this step
        self._act_idx: list[int] = []  # their indices in self.params
        self._inactive: list[int] = []  # the indices of the others
        self._half = False  # a half-precision gradient among them
        self._sq: list[torch.Tensor] = []  # sum_k (w_k G_k)^2, per entry
        self.second_order = bool(second_order)
        # the increment w_k G_k of each parameter, as autograd hands it to .grad (a hook per
        # parameter keeps a reference; nothing is copied); tracked after a step's first mark
        self._index = {id(p): i for i, p in enumerate(self.params)}
        self._incoming: list[torch.Tensor | None] = [None] * len(self.params)
        self._twice = False  # a parameter got two increments between marks
        self._tracking = False
        ref = weakref.ref(self)
        self._handles = [
            p.register_hook(functools.partial(_keep_increment, ref, i))
            for i, p in enumerate(self.params)
        ]
        self._clear()

    def __del__(self) -> None:
        for handle in getattr(self, "_handles", ()):
            handle.remove()

    def reset(self) -> None:
        """Forget the marks of the current step and go on to the next (a step that is not read
        counts towards the cadence as one that is)."""
        self._step += 1
        self._clear()

    def _clear(self) -> None:
        self._tracking = False
        self._incoming = [None] * len(self.params)
        self._twice = False
        self._grad_norms: list[torch.Tensor] = []  # ||.grad|| per parameter at the last mark
        self._seen: list[torch.Tensor] = []  # .grad of the active parameters
        self._versions: list[int] = []  # their version counters at the last mark
        self._sq_b: list[torch.Tensor] | None = None  # sum_k (w_k G_k)^2 / b_k, per entry
        self._sizes: list[int] = []
        self._norms: list[list[torch.Tensor]] = []  # per mark: ||w_k G_k|| per parameter
        self._step_entries = self._entries
        self._step_track = self._track_grad

    @property
    def groups(self) -> int:
        """Marks since the last reset."""
        return len(self._sizes)

    @staticmethod
    def split(n: int, parts: int = 2) -> list[tuple[slice, float]]:
        """The two-half-batch mode: (slice, loss weight) of ``parts`` near-equal parts of a
        batch of ``n`` samples. Use ``crit(model(x[s]), y[s]) * w`` for each, ``backward()``
        and ``groups.mark(len of the slice)``; ``.grad`` then ends as the batch's mean
        gradient."""
        if isinstance(parts, bool) or not isinstance(parts, int) or parts < 2:
            raise InvalidArgumentError(f"parts must be an integer >= 2, got {parts!r}.")
        if isinstance(n, bool) or not isinstance(n, int) or n < parts:
            raise InvalidArgumentError(
                f"a batch of n={n!r} samples cannot be split into parts={parts} groups of at "
                "least one sample; use a larger batch or fewer parts."
            )
        edges = [round(i * n / parts) for i in range(parts + 1)]
        return [(slice(a, b), (b - a) / n) for a, b in itertools.pairwise(edges)]

    def _grads(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        active = [p for p in self.params if p.grad is not None]
        grads = [p.grad for p in active]
        if not grads:
            raise InvalidArgumentError(
                "no parameter has a gradient at groups.mark(); call it after backward()."
            )
        if any(g.is_sparse for g in grads):
            raise InvalidArgumentError("sparse gradients are not supported by GradientGroups.")
        if any(g.dtype in _HALF for g in grads):
            grads = [g.float() if g.dtype in _HALF else g for g in grads]
        return active, grads

    @torch.no_grad()
    def mark(self, batch_size: int) -> None:
        """Record the group whose ``backward()`` just ran, of ``batch_size`` samples.

        The step's first mark takes ``.grad`` as the first group's increment; later marks
        take the increments autograd added to ``.grad`` since the previous mark (kept by the
        hooks, no copy), so a mark is one fused norm over the increments and ``.grad``
        (plus, for a per-entry preconditioner, one fused multiply-add). On a step the cadence
        does not measure it only counts the group."""
        b = _check_size(batch_size)
        if not self.measuring:
            self._sizes.append(b)
            return
        if not self._sizes:
            self._first_mark(b)
            return
        incoming = self._incoming
        if self._twice:
            raise InvalidArgumentError(
                "two backward() passes ran since the last groups.mark; call "
                "groups.mark(batch_size) after every micro-batch's backward()."
            )
        params = self.params
        if any(params[i].grad is not None for i in self._inactive):
            raise InvalidArgumentError(
                "the parameters holding a gradient changed within a step (a parameter first "
                "got its gradient after the step's first groups.mark); mark only after every "
                "trained parameter has taken part in a backward(), or use a separate "
                "GradientGroups for it."
            )
        incs = [incoming[i] for i in self._act_idx]
        seen = self._seen
        for p, g0, v0, inc in zip(self._active, seen, self._versions, incs):
            # .grad must have changed by this backward's accumulation only (in place: one
            # version step), so that the increments add up to it
            if p.grad is not g0 or g0._version != v0 + (inc is not None):
                raise InvalidArgumentError(
                    ".grad changed between two groups.mark calls other than by backward() "
                    "(clipping or scaling per micro-batch, zero_grad, create_graph=True); "
                    "change it only after the last mark of the step."
                )
        present = [x for x in incs if x is not None]
        half = self._half
        if half:
            present = [x.float() if x.dtype in _HALF else x for x in present]
        if self._step_track:  # one fused pass over the increments and .grad
            grads = [g.float() if g.dtype in _HALF else g for g in seen] if half else seen
            both = torch._foreach_norm(present + grads)
            norms, self._grad_norms = both[: len(present)], both[len(present) :]
        else:
            norms = torch._foreach_norm(present)
        if len(present) != len(incs):  # parameters this micro-batch did not reach
            dtype = norms[0].dtype if norms else seen[0].dtype
            zero = torch.zeros((), dtype=torch.float32 if dtype in _HALF else dtype)
            it = iter(norms)
            norms = [zero.to(g.device) if x is None else next(it) for x, g in zip(incs, seen)]
        self._norms.append(norms)
        if self._step_entries and present:
            pairs = [(s, x) for s, x in zip(self._sq, incs) if x is not None]
            sq, xs = [s for s, _ in pairs], [x for _, x in pairs]
            if half:
                xs = [x.float() if x.dtype in _HALF else x for x in xs]
            if b != self._sizes[0] and self._sq_b is None:
                self._sq_b = torch._foreach_div(self._sq, float(self._sizes[0]))
            if self._sq_b is not None:
                sq_b = [s for s, x in zip(self._sq_b, incs) if x is not None]
                torch._foreach_addcmul_(sq_b, xs, xs, value=1.0 / b)
            torch._foreach_addcmul_(sq, xs, xs)
        self._sizes.append(b)
        self._versions = [g._version for g in seen]
        self._incoming = [None] * len(params)

    def _first_mark(self, b: int) -> None:
        """The step's first group: its increment is ``.grad`` itself."""
        active, grads = self._grads()
        entries = self._step_entries
        if len(active) != len(self._active) or any(
            p is not q for p, q in zip(active, self._active)
        ):
            self._active = active
            self._sq = [torch.empty_like(g) for g in grads] if entries else []
            index = self._index
            self._act_idx = [index[id(p)] for p in active]
            taken = set(self._act_idx)
            self._inactive = [i for i in range(len(self.params)) if i not in taken]
        if entries and len(self._sq) != len(grads):
            self._sq = [torch.empty_like(g) for g in grads]
        if entries:  # one pass per parameter (a fused copy and multiply take two)
            for s, g in zip(self._sq, grads):
                torch.mul(g, g, out=s)
        norms = torch._foreach_norm(grads)  # no wait for the device
        self._norms.append(norms)
        self._grad_norms = norms
        self._sizes.append(b)
        self._seen = [p.grad for p in active]
        self._versions = [g._version for g in self._seen]
        self._half = any(g.dtype in _HALF for g in self._seen)
        self._incoming = [None] * len(self.params)
        self._twice = False
        self._tracking = True

    def _sums(self, grad_sq: float, P: dict[torch.Tensor, torch.Tensor | float]) -> Sums:
        """The step's sums (see ``Sums``); resets the object."""
        try:
            K = len(self._sizes)
            if K < 2:
                raise InvalidArgumentError(
                    f"GradientGroups holds {K} marked group(s) for this step; an unbiased norm "
                    "needs at least 2: call groups.mark(batch_size) after every micro-batch's "
                    "backward(), or use the two-half-batch mode (groups.split)."
                )
            # .grad as the last mark left it: the same tensors, not modified in place since
            # (version counters; no pass over the gradient)
            scale2 = 1.0
            if any(
                p.grad is not g or g._version != v
                for p, g, v in zip(self._active, self._seen, self._versions)
            ):
                if self._step_track:
                    scale2 = self._rescaled()
                else:  # .grad's norms were not taken at this step's marks: not measured
                    scale2 = math.nan
                self._track_grad = True
            else:
                self._track_grad = False
            self._read_update_dot()
            sizes = self._sizes
            B = float(sum(sizes))
            w = [b / B for b in sizes]
            sum_w2 = sum(x * x for x in w)
            with torch.no_grad():  # per mark and parameter: ||w_k G_k||
                rows = _norm_rows(self._norms)
            d = [scale2 * math.fsum(r[i] ** 2 for r in rows) for i in range(len(rows[0]))]
            db = [
                scale2 * math.fsum(r[i] ** 2 / b for r, b in zip(rows, sizes))
                for i in range(len(rows[0]))
            ]
            sum_d = math.fsum(d)
            # b_k ||G_k||^2 = b_k d_k / w_k^2 = B^2 d_k / b_k
            sum_bd = B * B * math.fsum(db)
            sum_dP = sum_bdP = math.nan
            if P:
                sum_dP, sum_bdP = self._p_sums(P, d, db, scale2)
                sum_bdP *= B * B
                # later steps keep the per-entry buffer only for a per-entry P
                self._entries = any(isinstance(Pp, torch.Tensor) for Pp in P.values())
            return K, sum_w2, sum_d, sum_dP, B, sum_bd, sum_bdP
        finally:
            self.reset()

    @torch.no_grad()
    def _rescaled(self) -> float:
        """c^2 when ``.grad`` is now c times what the last mark saw, else an error (NaN for a
        non-finite ``.grad``, as GradScaler's skipped steps have). Checked parameter by
        parameter: each one's squared norm must have changed by the same factor c^2 (clipping
        by value or per-parameter edits change them by different factors)."""
        active, grads = self._grads()
        changed = InvalidArgumentError(
            ".grad changed after the last groups.mark other than by a uniform rescale "
            "(clipping by norm, GradScaler.unscale_): call gradient_metrics(..., groups=...) "
            "before that change, or mark after it."
        )
        if len(active) != len(self._active) or any(
            p is not q for p, q in zip(active, self._active)
        ):
            raise changed
        now = _sq_norms(grads).tolist()
        if not all(math.isfinite(x) for x in now):
            return math.nan
        before = [x * x for x in _norm_rows([list(self._grad_norms)])[0]]
        total_before, total_now = math.fsum(before), math.fsum(now)
        if total_before == 0.0:
            if total_now == 0.0:
                return 1.0
            raise changed
        c2 = total_now / total_before
        tol = 1e-5 if grads[0].dtype == torch.float32 else 1e-9
        for a, b in zip(before, now):
            if abs(b - c2 * a) > tol * c2 * max(a, 1e-30 * total_before):
                raise changed
        return c2

    @torch.no_grad()
    def _p_sums(
        self,
        P: dict[torch.Tensor, torch.Tensor | float],
        d: list[float],
        db: list[float],
        scale2: float = 1.0,
    ) -> tuple[float, float]:
        """(sum_k w_k^2 G_k^T P G_k, sum_k w_k^2 G_k^T P G_k / b_k)."""
        sum_dP = sum_bdP = 0.0
        dots: list[torch.Tensor] = []
        dots_b: list[torch.Tensor] = []
        b0 = float(self._sizes[0])
        for i, p in enumerate(self._active):
            Pp = P.get(p)
            if Pp is None:
                continue
            if not isinstance(Pp, torch.Tensor):
                sum_dP += float(Pp) * d[i]
                sum_bdP += float(Pp) * db[i]
                continue
            if not self._step_entries:  # P turned per-entry: this step has no buffer
                return math.nan, math.nan
            s, Pf = self._sq[i].reshape(-1), Pp.reshape(-1)
            dots.append(torch.dot(s, Pf.to(s.dtype)).double())
            if self._sq_b is not None:
                sb = self._sq_b[i].reshape(-1)
                dots_b.append(torch.dot(sb, Pf.to(sb.dtype)).double())
        if dots:
            device = dots[0].device
            t = float(torch.stack([x.to(device) for x in dots]).sum()) * scale2
            sum_dP += t
            if self._sq_b is not None:
                sum_bdP += float(torch.stack([x.to(device) for x in dots_b]).sum()) * scale2
            else:
                sum_bdP += t / b0
        return sum_dP, sum_bdP


from .ddp_groups import DDPGradients  # noqa: E402  (its module imports this one)
