"""Callbacks that record the trajectory from PyTorch Lightning and Hugging Face Trainer.

Both write the same ``run_dir/trajectory.csv`` as a hand-written loop with
:class:`~lossrate.torch.Recorder`: one row per optimizer step with the batch statistics of an
:class:`~lossrate.torch.InstrumentedLoss`, the gradient metrics read just before the
optimizer steps (after clipping) and the learning rate of parameter group 0. With gradient
accumulation the micro-batches of a step are combined (:meth:`BatchStats.combine`).

* ``LightningCallback(run_dir, meta)`` — the LightningModule computes its training loss with
  an ``InstrumentedLoss`` (found among its submodules, or passed as ``criterion``).
* ``HFCallback(run_dir, meta, loss="ce")`` — pass ``compute_loss_func=callback.compute_loss``
  to ``Trainer`` as well as ``callbacks=[callback]``: the Trainer's own loss is computed inside
  the model, where no per-sample loss is visible. ``compute_loss`` takes ``outputs.logits``
  and the labels, flattens (batch, ..., classes) logits to rows for "ce" (ignoring label
  -100, Hugging Face's padding) and normalises by ``num_items_in_batch`` as the Trainer
  expects. It does not shift labels: for causal language models write your own
  ``compute_loss_func`` around an ``InstrumentedLoss`` and pass it as ``criterion``.

**Debiased gradient columns** (``debias=``, opt-in; :mod:`lossrate.torch.groups`): the
callbacks also write ``run_dir/gradient_noise.csv`` (the unbiased ||grad L||^2 and
grad^T P grad, tr(Sigma_g), their standard errors and the noise scale), from what the
training already computes, with no extra backward pass:

* ``debias="accumulation"`` — the micro-batches of gradient accumulation are the groups
  (``accumulate_grad_batches`` / ``gradient_accumulation_steps`` >= 2). Lightning marks each
  micro-batch in ``on_after_backward``; Hugging Face marks it at the end of its backward
  pass (a hook on the loss ``compute_loss`` returns queues the mark behind autograd), so
  the Trainer's clipping before ``on_pre_optimizer_step`` is a uniform rescale the groups
  carry over. Lightning weights the micro-batches equally: a step whose micro-batches differ
  in size (an epoch's last, partial batch) gets no debiased row.
* ``debias="ddp"`` (Lightning) — the ranks' gradients before the all-reduce
  (:class:`~lossrate.torch.DDPGradients` on ``trainer.model``, the DDP wrapper), one group
  per rank. Hugging Face's Trainer does not show its DDP wrapper to callbacks; use
  ``"accumulation"`` there.

``population`` (the training set's size, for batches drawn without replacement) and
``second_order`` are passed to the groups, and ``debias_every=N`` as their cadence ``every``
(:mod:`lossrate.torch.groups`, *Cadence*): only every N-th optimizer step (the first
included) is measured and has gradient columns, in ``trajectory.csv`` too (grad_sq and
pgrad_sq are NaN on the others, whose ``gradient_metrics`` call is skipped work) and a
gradient_noise.csv row; the loss statistics are still recorded at every step. The readers,
fits and ``lossrate replay`` bin or smooth over the measured rows (replay's measured
second-order curve needs two consecutive measured steps, so it is left out with N > 1).

With ``resume=True`` the file continues at the step the trainer resumes from (its checkpoint's
``global_step``); rows of later steps, logged after that checkpoint was saved, are dropped.

The classes are created on first access, so importing this module needs neither package;
a missing one raises an ImportError that names the extra to install. Test loss is not
recorded by the callbacks (NaN).
"""

from __future__ import annotations

import os
from typing import Any

import torch

from .._errors import InvalidArgumentError
from ..trajectory import RunMeta
from ._cadence import _check_every
from .gradients import GradStats, gradient_metrics
from .groups import DDPGradients, GradientGroups
from .losses import BatchStats, InstrumentedLoss
from .recorder import Recorder

_DEBIAS = (None, "accumulation", "ddp")

__all__ = ["HFCallback", "LightningCallback"]  # noqa: F822 (created on first access)


class _StepLog:
    """What the callbacks share: collect micro-batch statistics, then log one step."""

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        meta: RunMeta | None,
        *,
        criterion: InstrumentedLoss | None,
        gradients: bool,
        flush_every: int,
        resume: bool,
        energy: Any,
        debias: str | None = None,
        population: int | None = None,
        second_order: bool = True,
        debias_every: int = 1,
    ) -> None:
        if criterion is not None and not isinstance(criterion, InstrumentedLoss):
            raise InvalidArgumentError(
                f"criterion must be an InstrumentedLoss, got {type(criterion).__name__}."
            )
        if debias not in _DEBIAS:
            raise InvalidArgumentError(
                f"debias must be None, 'accumulation' or 'ddp', got {debias!r}."
            )
        if debias is not None and not gradients:
            raise InvalidArgumentError("debias needs gradients=True (it debiases those columns).")
        _check_every(debias_every, "debias_every")
        if debias is None and debias_every != 1:
            raise InvalidArgumentError(
                f"debias_every={debias_every} is the cadence of the debiased measurement and "
                "needs debias='accumulation' or 'ddp'; set debias, or leave debias_every at 1."
            )
        self.debias = debias
        self.debias_every = debias_every
        self.population = population
        self.second_order = second_order
        self.groups: GradientGroups | DDPGradients | None = None
        self._sizes: list[int] = []  # this step's micro-batch sizes (marked or to mark)
        self.equal_weights = True  # the framework weights micro-batches 1/K (not b_k / B)
        self.run_dir = run_dir
        self.meta = meta
        self.criterion = criterion
        self.gradients = gradients
        self.flush_every = flush_every
        self.resume = resume
        self.energy = energy
        self.recorder: Recorder | None = None
        self._seen_calls = 0
        self._batches: list[BatchStats] = []
        self._pre: tuple[int, float, GradStats | None] | None = None

    def open(self, rank: int, step: int) -> None:
        """Start recording at optimizer step ``step`` (on resume: the checkpoint's step, whose
        later rows are dropped)."""
        if self.recorder is None:
            self.recorder = Recorder(
                self.run_dir,
                self.meta,
                flush_every=self.flush_every,
                resume=self.resume,
                resume_step=step if self.resume else None,
                energy=self.energy,
                rank=rank,
            )

    def collect(self) -> None:
        """Keep the criterion's statistics if it was called since the last collect."""
        crit = self.criterion
        if crit is not None and crit.calls != self._seen_calls and crit.last is not None:
            self._seen_calls = crit.calls
            self._batches.append(crit.last)

    def start_groups(self, model: Any, accumulation: int) -> None:
        """Build the gradient groups of ``debias`` (``model``: the DDP wrapper for "ddp")."""
        if self.debias == "accumulation":
            if accumulation < 2:
                raise InvalidArgumentError(
                    "debias='accumulation' needs gradient accumulation over >= 2 micro-batches "
                    f"per optimizer step (it has {accumulation}): set accumulate_grad_batches "
                    "(Lightning) or gradient_accumulation_steps (Hugging Face), or use "
                    "debias='ddp' under DDP."
                )
            self.groups = GradientGroups(
                model,
                population=self.population,
                second_order=self.second_order,
                every=self.debias_every,
            )
        elif self.debias == "ddp":
            self.groups = DDPGradients(
                model,
                population=self.population,
                second_order=self.second_order,
                every=self.debias_every,
            )

    def mark(self, batch_size: int) -> None:
        """A micro-batch's backward has run (``debias="accumulation"``: mark it now;
        ``"ddp"``: its samples count towards this rank's group, marked at the step)."""
        if self.groups is None or batch_size < 1:
            return
        self._sizes.append(int(batch_size))
        if self.debias == "accumulation":
            self.groups.mark(int(batch_size))

    def before_step(self, step: int, model: Any, optimizer: Any) -> None:
        groups = self.groups
        if groups is not None:
            sizes, self._sizes = self._sizes, []
            if not groups.measuring:  # the cadence skips this step: gradient_metrics -> None
                pass
            elif self.debias == "ddp" and sizes:
                groups.mark(sum(sizes))
            elif self.equal_weights and len(set(sizes)) > 1:
                groups.reset()  # the frameworks weight micro-batches equally: not b_k / B
                groups = None
            elif not sizes:
                groups.reset()  # nothing marked: the step still counts towards the cadence
                groups = None
        grad = gradient_metrics(model, optimizer, groups=groups) if self.gradients else None
        self._pre = (step, float(optimizer.param_groups[0]["lr"]), grad)

    def end_step(self) -> None:
        if self._pre is None or self.recorder is None:
            return
        step, lr, grad = self._pre
        self._pre = None
        if not self._batches:
            raise InvalidArgumentError(
                f"no loss statistics for step {step}: the training loss must be computed with "
                "the InstrumentedLoss the callback watches (crit(outputs, targets))."
            )
        batch = BatchStats.combine(self._batches)
        self._batches = []
        self.recorder.log(step=step, lr=lr, batch=batch, grad=grad)

    def close(self) -> None:
        if self.recorder is not None:
            self.recorder.close()


# --------------------------------------------------------------------------- Lightning
def _lightning_class() -> type:
    try:
        import pytorch_lightning as pl
    except ImportError:
        try:
            import lightning.pytorch as pl  # type: ignore[no-redef]
        except ImportError:
            raise ImportError(
                "LightningCallback needs PyTorch Lightning: pip install 'lossrate[lightning]'."
            ) from None

    class LightningCallback(pl.Callback):  # type: ignore[misc, name-defined]
        """Record ``run_dir/trajectory.csv`` from a Lightning ``Trainer`` (see the module).

        Args:
            run_dir, meta, flush_every, resume, energy: as for :class:`Recorder`.
            criterion: the LightningModule's InstrumentedLoss (default: its only one).
            gradients: also record grad_sq and pgrad_sq (default True).
            debias: None, "accumulation" or "ddp": also record the debiased columns to
                gradient_noise.csv (see the module).
            population, second_order: as for :class:`~lossrate.torch.GradientGroups`.
            debias_every: with ``debias``, measure every N-th optimizer step only (the
                groups' ``every``; see the module).
        """

        def __init__(
            self,
            run_dir: str | os.PathLike[str],
            meta: RunMeta | None = None,
            *,
            criterion: InstrumentedLoss | None = None,
            gradients: bool = True,
            flush_every: int = 50,
            resume: bool = False,
            energy: Any = None,
            debias: str | None = None,
            population: int | None = None,
            second_order: bool = True,
            debias_every: int = 1,
        ) -> None:
            super().__init__()
            self.log_ = _StepLog(
                run_dir,
                meta,
                criterion=criterion,
                gradients=gradients,
                flush_every=flush_every,
                resume=resume,
                energy=energy,
                debias=debias,
                population=population,
                second_order=second_order,
                debias_every=debias_every,
            )

        @property
        def recorder(self) -> Recorder | None:
            return self.log_.recorder

        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            if self.log_.criterion is None:
                found = [m for m in pl_module.modules() if isinstance(m, InstrumentedLoss)]
                if len(found) != 1:
                    raise InvalidArgumentError(
                        f"the LightningModule has {len(found)} InstrumentedLoss submodules; "
                        "pass the training one as LightningCallback(..., criterion=...)."
                    )
                self.log_.criterion = found[0]
            self.log_.open(trainer.global_rank, trainer.global_step)
            if self.log_.debias == "ddp":
                self.log_.start_groups(trainer.model, trainer.accumulate_grad_batches)
            else:
                self.log_.start_groups(pl_module, trainer.accumulate_grad_batches)

        def on_after_backward(self, trainer: Any, pl_module: Any) -> None:
            crit = self.log_.criterion
            if self.log_.groups is not None and crit is not None and crit.last is not None:
                n = crit.last.batch_size  # over all ranks under torch.distributed
                self.log_.mark(n // max(int(trainer.world_size), 1))

        def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
            self.log_.before_step(trainer.global_step, pl_module, optimizer)

        def on_train_batch_end(
            self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
        ) -> None:
            self.log_.collect()
            self.log_.end_step()

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            self.log_.close()

        def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
            self.log_.close()

    return LightningCallback


# ------------------------------------------------------------------------ Hugging Face
def _hf_class() -> type:
    try:
        from transformers import TrainerCallback
    except ImportError:
        raise ImportError("HFCallback needs transformers: pip install 'lossrate[hf]'.") from None

    class HFCallback(TrainerCallback):  # type: ignore[misc, valid-type]
        """Record ``run_dir/trajectory.csv`` from a Hugging Face ``Trainer`` (see the module).

        Args:
            run_dir, meta, flush_every, resume, energy: as for :class:`Recorder`.
            loss, label_smoothing: the loss ``compute_loss`` computes (as for
                :class:`InstrumentedLoss`; CE ignores label -100).
            criterion: an InstrumentedLoss your own ``compute_loss_func`` uses instead (call
                :meth:`mark_backward` on the loss it returns for ``debias``).
            gradients: also record grad_sq and pgrad_sq (default True).
            debias: None or "accumulation": also record the debiased columns to
                gradient_noise.csv (see the module).
            population, second_order: as for :class:`~lossrate.torch.GradientGroups`.
            debias_every: with ``debias``, measure every N-th optimizer step only (the
                groups' ``every``; see the module).
        """

        def __init__(
            self,
            run_dir: str | os.PathLike[str],
            meta: RunMeta | None = None,
            *,
            loss: str = "ce",
            label_smoothing: float = 0.0,
            criterion: InstrumentedLoss | None = None,
            gradients: bool = True,
            flush_every: int = 50,
            resume: bool = False,
            energy: Any = None,
            debias: str | None = None,
            population: int | None = None,
            second_order: bool = True,
            debias_every: int = 1,
        ) -> None:
            if debias == "ddp":
                raise InvalidArgumentError(
                    "HFCallback cannot reach the Trainer's DDP wrapper; use debias="
                    "'accumulation' (gradient_accumulation_steps >= 2)."
                )
            if criterion is None:
                criterion = InstrumentedLoss(
                    loss, label_smoothing, ignore_index=-100 if loss == "ce" else None
                )
            self.log_ = _StepLog(
                run_dir,
                meta,
                criterion=criterion,
                gradients=gradients,
                flush_every=flush_every,
                resume=resume,
                energy=energy,
                debias=debias,
                population=population,
                second_order=second_order,
                debias_every=debias_every,
            )

        @property
        def criterion(self) -> InstrumentedLoss:
            assert self.log_.criterion is not None
            return self.log_.criterion

        @property
        def recorder(self) -> Recorder | None:
            return self.log_.recorder

        def compute_loss(
            self, outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None
        ) -> torch.Tensor:
            """``Trainer(compute_loss_func=...)``: the instrumented loss of ``outputs.logits``."""
            logits = _logits(outputs)
            crit = self.criterion
            if crit.kind == "ce" and logits.dim() > 2:
                logits, labels = logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)
            loss = crit(logits, labels)
            if torch.is_grad_enabled():
                self.log_.collect()
            if crit.kind == "ce" and crit.ignore_index is not None:
                n_local = (labels != crit.ignore_index).sum()
            else:
                n_local = labels.shape[0]
            if num_items_in_batch is not None:
                loss = loss * (n_local / num_items_in_batch)
            self.log_.equal_weights = num_items_in_batch is None  # the Trainer divides by K
            return self.mark_backward(loss, int(n_local))

        def mark_backward(self, loss: torch.Tensor, batch_size: int) -> torch.Tensor:
            """With ``debias``: mark the micro-batch of ``batch_size`` samples when the backward
            pass of ``loss`` has finished (queued behind autograd); returns ``loss``."""
            groups = self.log_.groups
            if groups is None or not (torch.is_grad_enabled() and loss.requires_grad):
                return loss
            if not groups.measuring:  # a step the cadence skips: nothing to mark
                return loss
            from torch.autograd import Variable

            def queue(grad: torch.Tensor) -> None:
                Variable._execution_engine.queue_callback(lambda: self.log_.mark(batch_size))

            loss.register_hook(queue)
            return loss

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.log_.open(int(args.process_index), state.global_step)
            self.log_.start_groups(kwargs["model"], int(args.gradient_accumulation_steps))

        def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.log_.before_step(state.global_step, kwargs["model"], kwargs["optimizer"])

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.log_.collect()
            self.log_.end_step()

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.log_.close()

    return HFCallback


def _logits(outputs: Any) -> torch.Tensor:
    if isinstance(outputs, torch.Tensor):
        return outputs
    if isinstance(outputs, dict) and "logits" in outputs:
        return outputs["logits"]
    logits = getattr(outputs, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(outputs, (tuple, list)) and outputs and isinstance(outputs[0], torch.Tensor):
        return outputs[0]
    raise InvalidArgumentError(
        f"cannot find logits in the model outputs ({type(outputs).__name__}); return a tensor, "
        "a dict or ModelOutput with 'logits', or a tuple whose first item is the logits."
    )


_FACTORIES = {"LightningCallback": _lightning_class, "HFCallback": _hf_class}
_CLASSES: dict[str, type] = {}


def __getattr__(name: str) -> Any:
    if name in _FACTORIES:
        if name not in _CLASSES:
            cls = _FACTORIES[name]()
            # picklable by name (Lightning's ddp_spawn pickles the callbacks to its processes)
            cls.__qualname__, cls.__module__ = name, __name__
            _CLASSES[name] = cls
        return _CLASSES[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
