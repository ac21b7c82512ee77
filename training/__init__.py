"""Fine-tuning with PixelPrune (``pixelprune.training``): data collator, losses, Trainer mixin.

* :class:`PixelPruneDataCollator`: conversation samples -> pruned training batches (padded or
  padding-free), labels on assistant turns only;
* :class:`PixelPruneTrainerMixin` / :class:`PixelPruneTrainer`: answer-token cross-entropy and
  self-distillation (unpruned teacher, pruned student) for ``transformers.Trainer`` or TRL's
  ``SFTTrainer``;
* :mod:`.losses`: the loss functions on their own.

Needs transformers (and TRL / PEFT only if you use them): ``pip install "pixelprune[train]"``.
"""

from __future__ import annotations

from .collator import IGNORE_INDEX, PixelPruneDataCollator, pack_samples, pad_samples
from .losses import answer_cross_entropy, answer_logits, distillation_kl
from .trainer import PixelPruneTrainer, PixelPruneTrainerMixin

__all__ = [
    "IGNORE_INDEX",
    "PixelPruneDataCollator",
    "PixelPruneTrainer",
    "PixelPruneTrainerMixin",
    "answer_cross_entropy",
    "pack_samples",
    "pad_samples",
    "answer_logits",
    "distillation_kl",
]
