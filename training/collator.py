"""A data collator that turns conversation samples into PixelPrune training batches.

Each sample is a conversation in the chat format of transformers and TRL::

    {"messages": [
        {"role": "user", "content": [{"type": "image", "image": <PIL image | path | URL>},
                                     {"type": "text", "text": "What is the total?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "42.50"}]}],
     "images": [...]}   # optional (TRL's layout): fills the `{"type": "image"}` parts in order

Video parts, ``{"type": "video", "video": <list of frames | path | URL>}`` (or a ``"videos"`` list
filling ``{"type": "video"}`` parts), go to the processor's video processor (it needs torchvision);
with ``video`` pruning on (``processor_kwargs={"pixelprune_video": True}`` or the processor's
settings) each temporal slice expands to its kept count and ``video_keep_mask`` comes along.

The collator renders it with the processor's chat template and runs the PixelPrune processor (so
each image expands to its *kept* number of ``<|image_pad|>`` tokens and ``image_keep_mask`` comes
along), then builds ``labels``: the tokens of every assistant turn (its text and the closing
``<|im_end|>``) are supervised; the prompt, image/video placeholders and padding are ``-100``.

Two layouts:

* padded (default): ``(B, L)`` right-padded rows with ``attention_mask``, as the stock collators;
* padding-free (``padding_free=True``): every sample of the batch concatenated into ONE row, as
  transformers' ``DataCollatorWithFlattening`` does. No ``attention_mask``; instead
  ``position_ids`` of shape ``(4, 1, L)``: row 0 restarts at 0 for every sample (transformers
  reads a restart as a sequence boundary and builds a block-diagonal causal mask, or flash-attention
  varlen segments), rows 1-3 carry each sample's own M-RoPE (t, h, w) positions, with kept image
  and video tokens at their unpruned positions (:func:`pixelprune.modeling.rope_index.pruned_rope_positions`,
  the rule the model itself uses). The first label of every sample is ``-100`` so no token is
  predicted across a boundary. ``use_cache=False`` comes with the batch: a model that builds a KV
  cache during a training forward (``use_cache`` defaults to the config's ``True``) skips the
  packed-sequence detection and would let samples attend to each other.

Images (videos) of all samples are concatenated in sample order (``pixel_values``, ``image_grid_thw``,
``image_keep_mask``; ``pixel_values_videos``, ``video_grid_thw``, ``video_keep_mask``), exactly as
the processor would return them for the whole batch, so the vision tower encodes each image (video
slice) in its own attention segment either way.

Truncation (``max_length``) is the processor's: text after the images may be cut (the answer's
labels are cut with it; a sample whose answer is cut away entirely contributes no labels), and a
cut through image placeholders raises the stock ``ValueError`` ("Mismatch in `image` token count").
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..modeling.rope_index import pruned_rope_positions

logger = logging.getLogger(__name__)

__all__ = ["IGNORE_INDEX", "PixelPruneDataCollator", "pack_samples", "pad_samples", "sample_position_ids"]

IGNORE_INDEX = -100

# Per-item keys: tensors whose first dimension runs over images / patches / videos, concatenated in
# sample order. Everything else the processor returns is per token, shape (1, L).
_ITEM_KEYS = (
    "pixel_values", "image_grid_thw", "image_keep_mask", "pixel_values_videos", "video_grid_thw", "video_keep_mask",
)
_TOKEN_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids")


@dataclass
class PixelPruneDataCollator:
    """Collate conversation samples into PixelPrune training batches (see the module docstring).

    Args:
        processor: a PixelPrune processor (``PixelPruneQwen3VLProcessor`` / ``PixelPruneQwen3_5Processor``);
            its settings decide the pruning. A stock processor also works (no pruning, no keep mask).
        max_length: truncate each sample to this many tokens (after pruning), as the processor does.
        padding_free: concatenate the batch into one row with per-sample positions (see above).
        pad_to_multiple_of: round the padded length up (padded layout only).
        assistant_header: the text that opens a supervised turn (ChatML, as every Qwen chat template).
        assistant_end: the token that closes it (supervised, so the model learns to stop).
        teacher_inputs: also return ``"teacher_inputs"``: the same samples processed WITHOUT pruning
            (for :class:`~pixelprune.training.distillation.PixelPruneDistillationMixin`), their
            labels cut to the same answer tokens as the student's.
        return_flash_attn_kwargs: padding-free only: also return ``cu_seq_lens_q/k`` and
            ``max_length_q/k`` (flash-attention varlen reads them; SDPA and eager do not need them).
        processor_kwargs: extra keyword arguments of every processor call (e.g. ``pixelprune_threshold``).
    """

    processor: Any
    max_length: int | None = None
    padding_free: bool = False
    pad_to_multiple_of: int | None = None
    assistant_header: str = "<|im_start|>assistant\n"
    assistant_end: str = "<|im_end|>"
    teacher_inputs: bool = False
    return_flash_attn_kwargs: bool = False
    processor_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_length is not None and (not isinstance(self.max_length, int) or self.max_length < 1):
            raise ValueError(f"max_length={self.max_length!r}; expected a positive int or None.")
        if self.pad_to_multiple_of is not None and (
            not isinstance(self.pad_to_multiple_of, int) or self.pad_to_multiple_of < 1
        ):
            raise ValueError(f"pad_to_multiple_of={self.pad_to_multiple_of!r}; expected a positive int or None.")
        if self.return_flash_attn_kwargs and not self.padding_free:
            raise ValueError("return_flash_attn_kwargs=True needs padding_free=True (it describes packed rows).")
        tokenizer = self.processor.tokenizer
        self._header_ids = tokenizer.encode(self.assistant_header, add_special_tokens=False)
        end_ids = tokenizer.encode(self.assistant_end, add_special_tokens=False)
        if len(end_ids) != 1:
            raise ValueError(f"assistant_end={self.assistant_end!r} must be one token; it tokenizes to {end_ids}.")
        self._end_id = end_ids[0]
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        # Tokens that never carry a label: placeholders and the vision start/end markers.
        self._vision_ids = torch.tensor(
            [
                i
                for name in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
                if (i := getattr(self.processor, name, None)) is not None
            ]
            + [
                tokenizer.convert_tokens_to_ids(t)
                for t in ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
                if t in tokenizer.get_vocab()
            ]
        ).unique()
        self._merge_size = int(self.processor.image_processor.merge_size)

    # ------------------------------------------------------------------------------------------
    # public API

    def __call__(self, samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if not samples:
            raise ValueError("PixelPruneDataCollator received an empty batch.")
        student = [self.encode(sample) for sample in samples]
        batch = self._collate(student)
        if self.teacher_inputs:
            teacher = [self.encode(sample, prune=False, max_length=None) for sample in samples]
            for s, t in zip(student, teacher):
                _match_answer_tokens(s["labels"], t["labels"])
            batch["teacher_inputs"] = self._collate(teacher)
        return batch

    def encode(self, sample: Mapping[str, Any], *, prune: bool = True, max_length: int | None = -1) -> dict:
        """One sample's processor outputs (batch dimension 1) plus ``labels``.

        ``prune=False`` disables PixelPrune for this call (the distillation teacher's input);
        ``max_length=-1`` means the collator's own.
        """
        messages, images, videos = self._messages_and_media(sample)
        text = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        kwargs = dict(self.processor_kwargs)
        if not prune:
            kwargs["pixelprune_enabled"] = False
        max_length = self.max_length if max_length == -1 else max_length
        if max_length is not None:
            kwargs.update(truncation=True, max_length=max_length)
        out = self.processor(
            text=[text], images=images or None, videos=videos or None, return_tensors="pt", padding=False, **kwargs
        )
        encoded = {k: out[k] for k in (*_TOKEN_KEYS, *_ITEM_KEYS) if k in out and out[k] is not None}
        if "mm_token_type_ids" not in encoded:  # the stock processors return it; keep the contract anyway
            encoded["mm_token_type_ids"] = torch.zeros_like(encoded["input_ids"], dtype=torch.int32)
        encoded["labels"] = self.labels_for(encoded["input_ids"][0]).unsqueeze(0)
        return encoded

    def labels_for(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Labels of one row: the tokens of each assistant turn (through its end token), else -100."""
        ids = input_ids.tolist()
        labels = torch.full_like(input_ids, IGNORE_INDEX)
        header, n = self._header_ids, len(self._header_ids)
        i = 0
        while i <= len(ids) - n:
            if ids[i : i + n] != header:
                i += 1
                continue
            start = i + n
            end = start
            while end < len(ids) and ids[end] != self._end_id:
                end += 1
            stop = min(end + 1, len(ids))  # include the end token when it survived truncation
            labels[start:stop] = input_ids[start:stop]
            i = stop
        labels[torch.isin(input_ids, self._vision_ids)] = IGNORE_INDEX
        return labels

    # ------------------------------------------------------------------------------------------
    # helpers

    def _messages_and_media(self, sample: Mapping[str, Any]) -> tuple[list, list, list]:
        """The messages with bare ``{"type": "image"}`` / ``{"type": "video"}`` parts, and the images
        and videos they stand for, in order."""
        from transformers.image_utils import load_image

        if "messages" not in sample:
            raise ValueError(
                f"A sample needs a 'messages' list (chat format); got keys {sorted(sample)}. "
                "See pixelprune.training.collator for the layout."
            )
        given = {
            kind: list(sample.get(f"{kind}s") or ([sample[kind]] if sample.get(kind) is not None else []))
            for kind in ("image", "video")
        }
        given_iter = {kind: iter(items) for kind, items in given.items()}
        media: dict[str, list] = {"image": [], "video": []}
        messages = []
        for message in sample["messages"]:
            content = message.get("content")
            if isinstance(content, str):
                messages.append(dict(message))
                continue
            parts = []
            for part in content:
                kind = part.get("type")
                if kind in media:
                    item = part.get(kind, part.get("url", part.get("path")))
                    if item is None:
                        item = next(given_iter[kind], None)
                        if item is None:
                            raise ValueError(
                                f"The sample's messages hold more {kind} parts than its {len(given[kind])} '{kind}s'."
                            )
                    if kind == "image" and isinstance(item, str):
                        item = load_image(item)
                    media[kind].append(item)  # a video path is loaded by the video processor
                    part = {"type": kind}
                parts.append(part)
            messages.append({**message, "content": parts})
        for kind, items in given_iter.items():
            if next(items, None) is not None:
                raise ValueError(f"The sample has {len(given[kind])} '{kind}s' but fewer {kind} parts in its messages.")
        return messages, media["image"], media["video"]

    def _collate(self, encoded: list[dict]) -> dict[str, Any]:
        if self.padding_free:
            return pack_samples(encoded, self._merge_size, return_flash_attn_kwargs=self.return_flash_attn_kwargs)
        return pad_samples(encoded, self._pad_id, pad_to_multiple_of=self.pad_to_multiple_of)


def _items(encoded: list[dict]) -> dict[str, torch.Tensor]:
    """Per-item tensors (pixels, grids, keep masks) of all samples, concatenated in sample order."""
    out = {}
    for key in _ITEM_KEYS:
        parts = [e[key] for e in encoded if key in e]
        if parts:
            out[key] = torch.cat(parts)
    return out


def pad_samples(encoded: list[dict], pad_token_id: int, *, pad_to_multiple_of: int | None = None) -> dict[str, Any]:
    """Right-pad single-sample encodings (``input_ids``, ``attention_mask``, ``mm_token_type_ids``,
    ``labels`` of shape ``(1, L_i)`` plus per-item tensors) into one ``(B, L)`` batch."""
    length = max(e["input_ids"].shape[1] for e in encoded)
    if pad_to_multiple_of:
        length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
    fill = {"input_ids": pad_token_id, "attention_mask": 0, "mm_token_type_ids": 0, "labels": IGNORE_INDEX}
    out: dict[str, Any] = _items(encoded)
    for key, value in fill.items():
        rows = []
        for e in encoded:
            row = e[key][0] if key in e else torch.ones_like(e["input_ids"][0])  # attention_mask may be absent
            rows.append(torch.cat([row, row.new_full((length - row.numel(),), value)]))
        out[key] = torch.stack(rows)
    return out


def pack_samples(encoded: list[dict], merge_size: int, *, return_flash_attn_kwargs: bool = False) -> dict[str, Any]:
    """Concatenate single-sample encodings into one padding-free row (the module docstring's layout).

    Each sample gets its own positions: row 0 ``0..L_i-1`` (the packed-sequence boundary transformers
    detects), rows 1-3 its M-RoPE positions with kept image tokens at their unpruned places.
    """
    positions, labels = [], []
    for e in encoded:
        positions.append(sample_position_ids(e, merge_size))
        row = e["labels"][0].clone()
        row[0] = IGNORE_INDEX  # never predict a sample's first token from the previous sample
        labels.append(row)
    lengths = [e["input_ids"].shape[1] for e in encoded]
    out: dict[str, Any] = _items(encoded)
    out.update(
        input_ids=torch.cat([e["input_ids"][0] for e in encoded])[None],
        mm_token_type_ids=torch.cat([e["mm_token_type_ids"][0] for e in encoded])[None],
        labels=torch.cat(labels)[None],
        position_ids=torch.cat(positions, dim=1)[:, None],
        use_cache=False,
    )
    if return_flash_attn_kwargs:
        cu = torch.tensor([0, *lengths], dtype=torch.int32).cumsum(0, dtype=torch.int32)
        out.update(cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=max(lengths), max_length_k=max(lengths))
    return out


def sample_position_ids(e: dict, merge_size: int) -> torch.Tensor:
    """(4, L) positions of one sample: text positions (0..L-1) over its M-RoPE (t, h, w) rows."""
    ids = e["input_ids"]
    text = torch.arange(ids.shape[1], dtype=torch.long)
    grid, video_grid = e.get("image_grid_thw"), e.get("video_grid_thw")
    if grid is None and video_grid is None:  # text only
        return text.expand(4, -1).clone()
    # A modality without a keep mask (pruning disabled) gets the stock positions.
    mrope, _ = pruned_rope_positions(
        ids, e["mm_token_type_ids"], grid, video_grid, None, e.get("image_keep_mask"),
        spatial_merge_size=merge_size, video_keep_mask=e.get("video_keep_mask"),
    )
    return torch.cat([text[None], mrope[:, 0].long()])


def _match_answer_tokens(student_labels: torch.Tensor, teacher_labels: torch.Tensor) -> None:
    """Cut the teacher's labels (in place) to the student's answer tokens.

    Both rows hold the same answer tokens in the same order; the student's may be truncated by
    ``max_length`` (the teacher is never truncated), so the teacher keeps only as many as survive.
    """
    s_pos = (student_labels[0] != IGNORE_INDEX).nonzero().flatten()
    t_pos = (teacher_labels[0] != IGNORE_INDEX).nonzero().flatten()
    if t_pos.numel() < s_pos.numel() or not torch.equal(
        student_labels[0, s_pos], teacher_labels[0, t_pos[: s_pos.numel()]]
    ):
        raise ValueError("The unpruned (teacher) sample does not hold the student's answer tokens.")
    teacher_labels[0, t_pos[s_pos.numel():]] = IGNORE_INDEX
