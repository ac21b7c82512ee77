"""Run a stock Qwen3-VL / Qwen3.5 vision tower on the kept patches only (ALGORITHM.md section 5).

The stock vision ``forward`` computes four grid-dependent tensors through the helpers of
``transformers/vision_utils.py``, each of which returns a precomputed value when the caller passes it
as a kwarg. We compute them for the FULL grid with the same helpers, gather them at the kept
patches and hand them in, so the unmodified stock forward embeds only kept patches while every
kept patch keeps its unpruned 2-D position:

* ``interp_indices`` / ``interp_weights``: the learned absolute position table interpolated to the
  full grid, gathered at kept patches;
* ``position_ids``: the (h, w) coordinates feeding the 2-D rotary embedding, gathered likewise;
* ``cu_seqlens``: attention segments of kept lengths (one per image frame / video temporal slice,
  as stock).

Images and videos are encoded the same way (the stock ``get_video_features`` is the image path on
the video grid); which one a mask describes is its :attr:`KeepMask.name`.

Merged tokens are kept or dropped whole (``merge_size**2`` consecutive patches), so the stock patch
merger and deepstack mergers see complete windows and emit one row per kept token.
"""

from __future__ import annotations

import logging

import torch
from transformers.vision_utils import (
    get_vision_interpolation_indices_and_weights,
    get_vision_position_ids,
)

from ..core.keep_mask import KEEP_MASK_KEY, VIDEO_KEEP_MASK_KEY, KeepMask

__all__ = ["kept_vision_kwargs", "encode_kept_patches"]

logger = logging.getLogger(__name__)


def kept_vision_kwargs(
    visual: torch.nn.Module, image_grid_thw: torch.Tensor, image_keep_mask: torch.Tensor | KeepMask
) -> dict:
    """The precomputed vision kwargs (full-grid position data gathered at kept patches).

    ``image_keep_mask`` is a :class:`~pixelprune.core.keep_mask.KeepMask` (or a raw mask,
    validated here). Returns the kwargs (on ``image_grid_thw``'s device) plus ``"patch_index"``,
    the int64 indices of the kept rows of ``pixel_values`` (CPU).
    """
    merge_size = visual.spatial_merge_size
    keep = _keep_mask(image_keep_mask, image_grid_thw, merge_size)
    device = image_grid_thw.device
    patch_index = keep.patch_indices
    index = patch_index.to(device)
    interp_indices, interp_weights = get_vision_interpolation_indices_and_weights(
        image_grid_thw,
        num_grid_per_side=visual.num_grid_per_side,
        mode=visual.interpolation_mode,
        align_corners=visual.interpolation_align_corners,
        spatial_merge_size=visual.config.spatial_merge_size,
    )
    position_ids = get_vision_position_ids(image_grid_thw, merge_size)
    return {
        "patch_index": patch_index,
        "interp_indices": interp_indices[index],
        "interp_weights": interp_weights[index],
        "position_ids": position_ids[index],
        "cu_seqlens": keep.cu_seqlens().to(device),
    }


def encode_kept_patches(
    visual: torch.nn.Module,
    pixel_values: torch.Tensor,
    image_grid_thw: torch.Tensor,
    image_keep_mask: torch.Tensor | KeepMask,
    **kwargs,
):
    """Encode only the kept patches with the stock ``visual`` module.

    ``image_keep_mask`` is the :class:`~pixelprune.core.keep_mask.KeepMask` the model's
    ``forward`` built (an image or a video mask), or a raw image mask (validated here). Returns
    the stock vision output with
    ``pooler_output`` split into one tensor of kept-token embeddings per image (as the stock
    ``get_image_features`` splits full grids), and ``deepstack_features`` (Qwen3-VL) split the
    same way.
    """
    merge_size = visual.spatial_merge_size
    keep = _keep_mask(image_keep_mask, image_grid_thw, merge_size)
    total_patches = sum(keep.totals) * merge_size**2
    if pixel_values.shape[0] != total_patches:
        is_video = keep.name == VIDEO_KEEP_MASK_KEY
        pixels, grid = ("pixel_values_videos", "video_grid_thw") if is_video else ("pixel_values", "image_grid_thw")
        raise ValueError(
            f"`{pixels}` has {pixel_values.shape[0]} patch rows but `{grid}` describes {total_patches}; "
            f"pass the complete `{pixels}` (the model drops the pruned patches itself)."
        )
    vision_kwargs = kept_vision_kwargs(visual, image_grid_thw, keep)
    patch_index = vision_kwargs.pop("patch_index").to(pixel_values.device)
    kwargs.pop("return_dict", None)
    output = visual(
        pixel_values.index_select(0, patch_index).type(visual.dtype),
        grid_thw=image_grid_thw,
        return_dict=True,
        **{**kwargs, **vision_kwargs},
    )
    kept_counts = list(keep.kept)
    logger.debug("PixelPrune ViT: kept %d of %d tokens (per image: %s)", keep.num_kept, keep.mask.numel(), kept_counts)
    output.pooler_output = torch.split(output.pooler_output, kept_counts)
    if getattr(output, "deepstack_features", None) is not None:
        output.deepstack_features = [torch.split(feature, kept_counts) for feature in output.deepstack_features]
    return output


def _keep_mask(keep_mask: torch.Tensor | KeepMask, grid_thw: torch.Tensor, merge_size: int) -> KeepMask:
    """A :class:`KeepMask` (image or video, checked against ``grid_thw``), or a raw image mask validated."""
    name = keep_mask.name if isinstance(keep_mask, KeepMask) else KEEP_MASK_KEY
    return KeepMask.of(keep_mask, grid_thw, merge_size, name=name)
