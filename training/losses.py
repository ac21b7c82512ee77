"""Losses on answer tokens: cross-entropy and self-distillation (KL to the unpruned model).

Both project only the positions that predict a label through the LM head (``logits_to_keep`` with
the positions, a named argument of every stock ``*ForConditionalGeneration.forward``): the full
``(batch, length, vocab)`` logits of a training step are mostly wasted on prompt and image
positions, and with a 150k-250k vocabulary the head is a large share of the step once pruning has
made the sequence short. The values equal the stock ``loss`` (same targets, same reduction).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .collator import IGNORE_INDEX

__all__ = ["answer_logits", "answer_cross_entropy", "distillation_kl"]


def answer_logits(model: torch.nn.Module, inputs: dict, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, object]:
    """Run ``model`` on ``inputs`` (without labels) and return the logits of the positions that
    predict a label: ``(logits (N, vocab), targets (N,), model output)``.

    Position ``i`` predicts ``labels[:, i + 1]`` (the stock causal-LM shift). In a padded batch the
    union of every row's answer positions is projected and the other rows' entries dropped.
    """
    shifted = labels[:, 1:]
    mask = shifted != IGNORE_INDEX
    positions = mask.any(0).nonzero().flatten()
    output = model(**inputs, logits_to_keep=positions)
    keep = mask[:, positions].to(output.logits.device)
    return output.logits[keep], shifted[:, positions].to(keep.device)[keep], output


def _normaliser(count: int | torch.Tensor, num_items_in_batch: int | torch.Tensor | None) -> torch.Tensor:
    n = num_items_in_batch if num_items_in_batch is not None else count
    return torch.as_tensor(n).clamp(min=1)


def answer_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, num_items_in_batch: int | torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy of answer logits (float32, as the stock loss), summed and divided by
    ``num_items_in_batch`` (the label count of the whole accumulated batch, from ``Trainer``) or,
    without it, by the number of targets."""
    loss = F.cross_entropy(logits.float(), targets, reduction="sum")
    return loss / _normaliser(targets.numel(), num_items_in_batch).to(loss.device)


def distillation_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    num_items_in_batch: int | torch.Tensor | None = None,
) -> torch.Tensor:
    """KL(teacher || student) per answer token, summed over tokens and normalised like
    :func:`answer_cross_entropy`; ``temperature`` softens both distributions and the result is scaled
    by ``temperature**2`` (Hinton et al.) so its gradients keep their size.

    The two logit tensors hold the same answer tokens in the same order (``(N, vocab)`` each); the
    teacher's are detached.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"Student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} must "
            "cover the same answer tokens."
        )
    if not temperature > 0:
        raise ValueError(f"temperature={temperature!r}; expected > 0.")
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)
    kl = F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="sum") * temperature**2
    return kl / _normaliser(student_logits.shape[0], num_items_in_batch).to(kl.device)
