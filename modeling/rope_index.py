"""``get_rope_index`` for pruned inputs (ALGORITHM.md section 5), shared by all model families.

Finds each sample's image and video placeholder runs (``mm_token_type_ids``, as the stock
``get_rope_index`` does) and hands them to :func:`~.mrope_positions.pruned_mrope_positions`, the one
implementation of the position rule, shared with the vLLM plugin: kept image tokens keep their
unpruned (t, h, w) positions and the text after an image resumes where it would without pruning,
so ``rope_deltas`` (next position minus the pruned length) makes cached decoding continue from the
unpruned positions.
"""

from __future__ import annotations

import itertools

import torch

from ..core.keep_mask import KeepMask
from ..core.mrope_positions import GridSpan, pruned_mrope_positions

__all__ = ["pruned_rope_index", "pruned_rope_positions"]


def pruned_rope_index(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    mm_token_type_ids: torch.Tensor,
    image_grid_thw: torch.Tensor | None,
    video_grid_thw: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    image_keep_mask: torch.Tensor | KeepMask,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``get_rope_index`` for inputs whose images were pruned by ``image_keep_mask``.

    Same contract as the stock ``get_rope_index``: returns ``position_ids`` of shape ``(3, B, L)``
    (zeros at padding) and ``rope_deltas`` of shape ``(B, 1)``. ``model`` is the stock inner model
    (``Qwen3VLModel``, ``Qwen3_5Model``, ...), read for its ``spatial_merge_size``;
    ``image_keep_mask`` is the :class:`~pixelprune.core.keep_mask.KeepMask` built by ``forward``
    or a raw mask (validated here). Videos are
    handled exactly as stock (unpruned, one grid per frame). Raises ``ValueError`` when an image's
    placeholder run does not hold its kept-token count or a video frame's run its grid size.
    """
    return pruned_rope_positions(
        input_ids, mm_token_type_ids, image_grid_thw, video_grid_thw, attention_mask, image_keep_mask,
        spatial_merge_size=model.config.vision_config.spatial_merge_size,
    )


def pruned_rope_positions(
    input_ids: torch.Tensor,
    mm_token_type_ids: torch.Tensor,
    image_grid_thw: torch.Tensor | None,
    video_grid_thw: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    image_keep_mask: torch.Tensor | KeepMask,
    *,
    spatial_merge_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`pruned_rope_index` without a model: the merge size is given (the processor knows it).

    Used where no model is at hand, e.g. a data collator that packs samples into one row and needs
    each sample's M-RoPE positions.
    """
    keep = KeepMask.of(image_keep_mask, image_grid_thw, spatial_merge_size)
    images = iter(range(len(keep.grids)))
    # As stock: videos are separated by timestamps, so each frame is its own grid.
    frame_grids = iter(
        [] if video_grid_thw is None else [(h, w) for t, h, w in video_grid_thw.tolist() for _ in range(t)]
    )

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
                if keep.kept[image] != length:
                    raise ValueError(
                        f"Image {image_index} (sample {batch_idx}) has {length} placeholder tokens but "
                        f"`image_keep_mask` keeps {keep.kept[image]} of its {keep.totals[image]} tokens; the "
                        "processor must expand each image to its kept count."
                    )
                _, grid_h, grid_w = keep.grids[image]
                span = GridSpan(offset, grid_h // spatial_merge_size, grid_w // spatial_merge_size,
                                keep.kept_indices[image])
                image_index += 1
                spans.append(span)
            elif modality == 2:
                grid = next(frame_grids, None)
                if grid is None:
                    raise ValueError(
                        f"Sample {batch_idx} has more video frame placeholder runs than `video_grid_thw` describes."
                    )
                span = GridSpan(offset, grid[0] // spatial_merge_size, grid[1] // spatial_merge_size)
                if span.num_tokens != length:
                    raise ValueError(
                        f"A video frame of sample {batch_idx} has {length} placeholder tokens for its "
                        f"{span.grid_h}x{span.grid_w} token grid."
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
    return position_ids, torch.tensor(deltas, device=input_ids.device).unsqueeze(1)
