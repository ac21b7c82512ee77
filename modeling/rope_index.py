"""``get_rope_index`` for pruned inputs (ALGORITHM.md section 5), shared by all model families.

Finds each sample's image and video placeholder runs (``mm_token_type_ids``, as the stock
``get_rope_index`` does) and hands them to :func:`~.mrope_positions.pruned_mrope_positions`, the one
implementation of the position rule, shared with the vLLM plugin: kept image tokens (and kept
tokens of every video slice) keep their unpruned (t, h, w) positions and the text after an image
(a video slice) resumes where it would without pruning,
so ``rope_deltas`` (next position minus the pruned length) makes cached decoding continue from the
unpruned positions.
"""

from __future__ import annotations

import itertools

import torch

from ..core.keep_mask import VIDEO_KEEP_MASK_KEY, KeepMask
from ..core.mrope_positions import GridSpan, pruned_mrope_positions

__all__ = ["pruned_rope_index", "pruned_rope_positions"]


def pruned_rope_index(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    mm_token_type_ids: torch.Tensor,
    image_grid_thw: torch.Tensor | None,
    video_grid_thw: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    image_keep_mask: torch.Tensor | KeepMask | None,
    video_keep_mask: torch.Tensor | KeepMask | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``get_rope_index`` for inputs whose images (``image_keep_mask``) and/or videos
    (``video_keep_mask``) were pruned; a mask that is ``None`` means that modality is unpruned.

    Same contract as the stock ``get_rope_index``: returns ``position_ids`` of shape ``(3, B, L)``
    (zeros at padding) and ``rope_deltas`` of shape ``(B, 1)``. ``model`` is the stock inner model
    (``Qwen3VLModel``, ``Qwen3_5Model``, ...), read for its ``spatial_merge_size``; the masks are
    the :class:`~pixelprune.core.keep_mask.KeepMask` values built by ``forward`` or raw masks
    (validated here). Raises ``ValueError`` when an image's placeholder run does not hold its
    kept-token count or a video slice's run its kept count (its grid size when unpruned).
    """
    return pruned_rope_positions(
        input_ids, mm_token_type_ids, image_grid_thw, video_grid_thw, attention_mask, image_keep_mask,
        spatial_merge_size=model.config.vision_config.spatial_merge_size, video_keep_mask=video_keep_mask,
    )


def pruned_rope_positions(
    input_ids: torch.Tensor,
    mm_token_type_ids: torch.Tensor,
    image_grid_thw: torch.Tensor | None,
    video_grid_thw: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    image_keep_mask: torch.Tensor | KeepMask | None,
    *,
    spatial_merge_size: int,
    video_keep_mask: torch.Tensor | KeepMask | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`pruned_rope_index` without a model: the merge size is given (the processor knows it).

    Used where no model is at hand, e.g. a data collator that packs samples into one row and needs
    each sample's M-RoPE positions.

    Videos, as stock, are one grid per temporal slice (slices are separated by timestamps); with
    ``video_keep_mask`` each slice's run holds its kept tokens, at their unpruned cells.
    """
    # A modality without a mask is unpruned (its spans keep every cell).
    image_keep = None if image_keep_mask is None else KeepMask.of(image_keep_mask, image_grid_thw, spatial_merge_size)
    video_keep = None if video_keep_mask is None else KeepMask.of(
        video_keep_mask, video_grid_thw, spatial_merge_size, name=VIDEO_KEEP_MASK_KEY
    )
    image_grids = image_keep.grids if image_keep is not None else _grids(image_grid_thw)
    video_grids = video_keep.grids if video_keep is not None else _grids(video_grid_thw)
    images = iter(range(len(image_grids)))
    # (video, slice) of every frame run, in prompt order; each slice is its own grid, as stock.
    frames = iter([(v, s) for v, (t, _, _) in enumerate(video_grids) for s in range(t)])
    frame_kept = [video_keep.frame_kept_indices(v) for v in range(len(video_grids))] if video_keep is not None else None

    position_ids = torch.zeros(3, *input_ids.shape, dtype=input_ids.dtype, device=input_ids.device)
    deltas = []
    image_index = 0
    for batch_idx in range(input_ids.shape[0]):
        token_types = mm_token_type_ids[batch_idx]
        if attention_mask is not None:
            token_types = token_types[attention_mask[batch_idx].bool()]
        spans = []
        offset = 0
        for modality, group in itertools.groupby(token_types.tolist()):
            length = len(list(group))
            if modality == 1:
                image = next(images, None)
                if image is None:
                    raise ValueError(
                        f"Sample {batch_idx} has more image placeholder runs than the {image_index} images of "
                        "`image_grid_thw`."
                    )
                _, grid_h, grid_w = image_grids[image]
                span = GridSpan(offset, grid_h // spatial_merge_size, grid_w // spatial_merge_size,
                                None if image_keep is None else image_keep.kept_indices[image])
                if span.num_tokens != length:
                    raise ValueError(
                        f"Image {image_index} (sample {batch_idx}) has {length} placeholder tokens but "
                        + (f"`image_keep_mask` keeps {span.num_tokens} of its {span.grid_h * span.grid_w} tokens; "
                           "the processor must expand each image to its kept count."
                           if image_keep is not None else
                           f"its {span.grid_h}x{span.grid_w} token grid has {span.num_tokens}.")
                    )
                image_index += 1
                spans.append(span)
            elif modality == 2:
                frame = next(frames, None)
                if frame is None:
                    raise ValueError(
                        f"Sample {batch_idx} has more video frame placeholder runs than `video_grid_thw` describes."
                    )
                video, slice_ = frame
                _, grid_h, grid_w = video_grids[video]
                span = GridSpan(offset, grid_h // spatial_merge_size, grid_w // spatial_merge_size,
                                None if frame_kept is None else frame_kept[video][slice_])
                if span.num_tokens != length:
                    raise ValueError(
                        f"Slice {slice_} of video {video} (sample {batch_idx}) has {length} placeholder tokens but "
                        + (f"`video_keep_mask` keeps {span.num_tokens} of its {span.grid_h * span.grid_w} tokens; "
                           "the processor must expand each slice to its kept count."
                           if video_keep is not None else
                           f"its {span.grid_h}x{span.grid_w} token grid has {span.num_tokens}.")
                    )
                spans.append(span)
            offset += length
        positions, delta = pruned_mrope_positions(offset, spans)
        positions = positions.to(device=position_ids.device, dtype=position_ids.dtype)
        if attention_mask is not None:
            position_ids[:, batch_idx, attention_mask[batch_idx].bool()] = positions
        else:
            position_ids[:, batch_idx] = positions
        # Stock uses max + 1 - length, which equals `delta` unpruned but not when an image's last
        # tokens were pruned and nothing follows it.
        deltas.append(delta)
    if next(images, None) is not None:
        raise ValueError(
            f"`image_grid_thw` describes more images than the {image_index} image placeholder runs in `input_ids`."
        )
    if next(frames, None) is not None:
        raise ValueError(
            "`video_grid_thw` describes more video slices than there are video placeholder runs in `input_ids`."
        )
    return position_ids, torch.tensor(deltas, device=input_ids.device).unsqueeze(1)


def _grids(grid_thw: torch.Tensor | None) -> list[tuple[int, int, int]]:
    """The ``(t, h, w)`` rows of a grid tensor (none without one)."""
    return [] if grid_thw is None else [tuple(row) for row in torch.as_tensor(grid_thw).reshape(-1, 3).tolist()]
