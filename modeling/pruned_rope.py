"""M-RoPE position ids for pruned sequences (ALGORITHM.md section 5), shared by all model families.

Each kept image token keeps the (t, h, w) position it has in the unpruned sequence, and the text
after an image resumes where it would without pruning (the full grid's extent, not the largest
kept position). Hence every text token has the same position with and without pruning, and
``rope_deltas`` (next position minus the pruned length) makes cached decoding continue from the
unpruned positions.

The per-image full-grid positions come from the model's own ``get_vision_position_ids`` (the stock
method), so family-specific conventions stay the stock ones; only the gathering is ours.
"""

from __future__ import annotations

import itertools

import torch

from .keep_mask import split_keep_mask, validate_keep_mask

__all__ = ["pruned_rope_index"]


def pruned_rope_index(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    mm_token_type_ids: torch.Tensor,
    image_grid_thw: torch.Tensor | None,
    video_grid_thw: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    image_keep_mask: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``get_rope_index`` for inputs whose images were pruned by ``image_keep_mask``.

    Same contract as the stock ``get_rope_index``: returns ``position_ids`` of shape ``(3, B, L)``
    (zeros at padding) and ``rope_deltas`` of shape ``(B, 1)``. ``model`` is the stock inner model
    (``Qwen3VLModel``, ``Qwen3_5Model``, ...). Videos are handled exactly as stock (unpruned).
    Raises ``ValueError`` when an image's placeholder run does not hold its kept-token count.
    """
    spatial_merge_size = model.config.vision_config.spatial_merge_size
    keep = validate_keep_mask(image_keep_mask, image_grid_thw, spatial_merge_size).to(input_ids.device)
    image_masks = iter(split_keep_mask(keep, image_grid_thw, spatial_merge_size))
    if video_grid_thw is not None:
        # As stock: videos are separated by timestamps, so each frame is its own grid.
        video_grid_thw = torch.repeat_interleave(video_grid_thw, video_grid_thw[:, 0], dim=0)
        video_grid_thw[:, 0] = 1
    grids = {
        1: iter(image_grid_thw),
        2: iter(video_grid_thw) if video_grid_thw is not None else None,
    }

    position_ids = torch.zeros(3, *input_ids.shape, dtype=input_ids.dtype, device=input_ids.device)
    deltas = []
    image_index = 0
    for batch_idx in range(input_ids.shape[0]):
        token_types = mm_token_type_ids[batch_idx]
        if attention_mask is not None:
            token_types = token_types[attention_mask[batch_idx].bool()]
        current_pos = 0
        pieces = []
        for modality, group in itertools.groupby(token_types.tolist()):
            length = len(list(group))
            if modality == 0:
                pieces.append(torch.arange(length, device=input_ids.device).view(1, -1).expand(3, -1) + current_pos)
                current_pos += length
                continue
            if grids[modality] is None:
                raise ValueError(f"Sample {batch_idx} has video tokens but no `video_grid_thw` was given.")
            grid_thw = next(grids[modality])
            full = model.get_vision_position_ids(current_pos, grid_thw, 1, spatial_merge_size, device=input_ids.device)
            if modality == 1:
                kept = next(image_masks)
                if int(kept.sum()) != length:
                    raise ValueError(
                        f"Image {image_index} (sample {batch_idx}) has {length} placeholder tokens but "
                        f"`image_keep_mask` keeps {int(kept.sum())} of its {kept.numel()} tokens; the "
                        "processor must expand each image to its kept count."
                    )
                full = full[:, kept]
                image_index += 1
            pieces.append(full)
            # Text after the image starts past the FULL grid, exactly as without pruning.
            current_pos += max(int(grid_thw[1]), int(grid_thw[2])) // spatial_merge_size
        positions = torch.cat(pieces, dim=1)
        if attention_mask is not None:
            position_ids[:, batch_idx, attention_mask[batch_idx].bool()] = positions.to(position_ids.dtype)
        else:
            position_ids[:, batch_idx] = positions.to(position_ids.dtype)
        # Next position minus the pruned length (stock uses max + 1, which equals `current_pos`
        # unpruned but not when an image's last tokens were pruned and nothing follows it).
        deltas.append(current_pos - positions.shape[1])
    if next(image_masks, None) is not None:
        raise ValueError(
            f"`image_grid_thw` describes more images than the {image_index} image placeholder runs in `input_ids`."
        )
    return position_ids, torch.tensor(deltas, device=input_ids.device).unsqueeze(1)
