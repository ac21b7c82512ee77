"""A ``compute_loss`` for ``transformers.Trainer`` and TRL's ``SFTTrainer``: answer-token loss and
PixelPrune self-distillation.

The seed trains with plain cross-entropy or with self-distillation: the same weights without
pruning are the teacher, the pruned model the student, and a KL term on the answer tokens pulls the
pruned model's predictions towards the unpruned ones. :class:`PixelPruneTrainerMixin` adds exactly
that to any Trainer subclass (only ``compute_loss`` is overridden)::

    from transformers import Trainer
    from pixelprune.training import PixelPruneDataCollator, PixelPruneTrainerMixin

    class DistillTrainer(PixelPruneTrainerMixin, Trainer):   # or (PixelPruneTrainerMixin, SFTTrainer)
        pass

    trainer = DistillTrainer(model=model, args=args, train_dataset=ds,
                             data_collator=PixelPruneDataCollator(processor, teacher_inputs=True),
                             distillation_weight=0.5, distillation_temperature=1.0)

``loss = (1 - w) * CE + w * KL`` with ``w = distillation_weight`` (0: plain cross-entropy; the
collator then needs no ``teacher_inputs``). The teacher is the model being trained, run without
gradients on the unpruned batch (``teacher_inputs``), unless ``teacher_model`` names another module
(e.g. a frozen copy of the starting weights). With PEFT, ``teacher_model="base"`` runs the same
model with its adapters disabled: the untouched base weights.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import torch
from transformers import Trainer

from .losses import answer_cross_entropy, answer_logits, distillation_kl

logger = logging.getLogger(__name__)

__all__ = ["PixelPruneTrainerMixin", "PixelPruneTrainer"]


class PixelPruneTrainerMixin:
    """``compute_loss`` with answer-only LM-head projection and optional self-distillation.

    Extra constructor keyword arguments (the rest go to the Trainer):
        distillation_weight: ``w`` in ``(1 - w) * CE + w * KL`` (0 to 1; default 0, plain CE).
        distillation_temperature: softmax temperature of the KL term (> 0, default 1).
        teacher_model: ``None`` (the trained model itself), ``"base"`` (a PEFT model with its
            adapters disabled) or a module that takes the teacher batch.
    """

    def __init__(
        self,
        *args: Any,
        distillation_weight: float = 0.0,
        distillation_temperature: float = 1.0,
        teacher_model: torch.nn.Module | str | None = None,
        **kwargs: Any,
    ) -> None:
        if not 0.0 <= float(distillation_weight) <= 1.0:
            raise ValueError(f"distillation_weight={distillation_weight!r}; expected a number in [0, 1].")
        if not float(distillation_temperature) > 0:
            raise ValueError(f"distillation_temperature={distillation_temperature!r}; expected > 0.")
        if isinstance(teacher_model, str) and teacher_model != "base":
            raise ValueError(f"teacher_model={teacher_model!r}; expected None, 'base' or a module.")
        self.distillation_weight = float(distillation_weight)
        self.distillation_temperature = float(distillation_temperature)
        self.teacher_model = teacher_model
        super().__init__(*args, **kwargs)
        # Our loss is normalised by `num_items_in_batch` (the label count of the accumulated batch):
        # have Trainer count it and not divide the loss by the accumulation steps again.
        self.model_accepts_loss_kwargs = True

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        inputs = dict(inputs)
        teacher_inputs = inputs.pop("teacher_inputs", None)
        labels = inputs.pop("labels")
        inputs["use_cache"] = False
        logits, targets, outputs = answer_logits(model, inputs, labels)
        loss = answer_cross_entropy(logits, targets, num_items_in_batch)
        if self.distillation_weight > 0:
            if teacher_inputs is None:
                raise ValueError(
                    "distillation_weight > 0 needs the unpruned batch: build the collator with "
                    "PixelPruneDataCollator(..., teacher_inputs=True)."
                )
            teacher_logits = self._teacher_logits(model, dict(teacher_inputs))
            if teacher_logits.shape != logits.shape:
                raise ValueError(
                    f"The teacher batch has {teacher_logits.shape[0]} answer tokens, the student batch "
                    f"{logits.shape[0]}; both must come from the same PixelPruneDataCollator call."
                )
            kl = distillation_kl(
                logits, teacher_logits, temperature=self.distillation_temperature,
                num_items_in_batch=num_items_in_batch,
            )
            loss = (1 - self.distillation_weight) * loss + self.distillation_weight * kl
        if getattr(self.args, "average_tokens_across_devices", False) and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # DDP averages gradients over ranks
        return (loss, outputs) if return_outputs else loss

    @torch.no_grad()
    def _teacher_logits(self, model, teacher_inputs: dict) -> torch.Tensor:
        labels = teacher_inputs.pop("labels")
        teacher_inputs["use_cache"] = False
        teacher = model if self.teacher_model in (None, "base") else self.teacher_model
        context = contextlib.nullcontext()
        if self.teacher_model == "base":
            unwrapped = self.accelerator.unwrap_model(model)
            if not hasattr(unwrapped, "disable_adapter"):
                raise ValueError("teacher_model='base' needs a PEFT model (it disables the adapters).")
            context = unwrapped.disable_adapter()
        with context:
            logits, _, _ = answer_logits(teacher, teacher_inputs, labels)
        return logits


class PixelPruneTrainer(PixelPruneTrainerMixin, Trainer):
    """``transformers.Trainer`` with :class:`PixelPruneTrainerMixin`'s loss."""
