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
from .gradients import GradStats, gradient_metrics
from .losses import BatchStats, InstrumentedLoss
from .recorder import Recorder

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
    ) -> None:
        if criterion is not None and not isinstance(criterion, InstrumentedLoss):
            raise InvalidArgumentError(
                f"criterion must be an InstrumentedLoss, got {type(criterion).__name__}."
            )
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

    def before_step(self, step: int, model: Any, optimizer: Any) -> None:
        grad = gradient_metrics(model, optimizer) if self.gradients else None
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
            criterion: an InstrumentedLoss your own ``compute_loss_func`` uses instead.
            gradients: also record grad_sq and pgrad_sq (default True).
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
        ) -> None:
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
            if num_items_in_batch is None:
                return loss
            if crit.kind == "ce" and crit.ignore_index is not None:
                n_local = (labels != crit.ignore_index).sum()
            else:
                n_local = labels.shape[0]
            return loss * (n_local / num_items_in_batch)

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.log_.open(int(args.process_index), state.global_step)

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
            _CLASSES[name] = _FACTORIES[name]()
        return _CLASSES[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
