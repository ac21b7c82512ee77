"""Validation and per-image splitting of ``image_keep_mask`` (DESIGN.md), shared by all model families.

``image_keep_mask`` is a flat bool tensor with one entry per merged token of every image, images
concatenated in ``image_grid_thw`` order, tokens in the raster order of each image's merge windows
(the order of ``pixel_values``). Each merged token is ``merge_size**2`` consecutive patch rows.
"""

from __future__ import annotations

import torch

__all__ = [
    "tokens_per_image",
    "validate_keep_mask",
    "split_keep_mask",
    "kept_tokens_per_image",
    "patch_keep_mask",
    "kept_cu_seqlens",
]


def tokens_per_image(image_grid_thw: torch.Tensor, merge_size: int) -> list[int]:
    """Number of merged (LLM) tokens of each image: ``t * h * w / merge_size**2``."""
    return [int(t * h * w) // (merge_size**2) for t, h, w in image_grid_thw.tolist()]


def validate_keep_mask(
    image_keep_mask: torch.Tensor, image_grid_thw: torch.Tensor | None, merge_size: int
) -> torch.Tensor:
    """Check ``image_keep_mask`` against ``image_grid_thw`` and return it as a flat bool tensor.

    Raises ``ValueError`` when there is no grid, the mask is not 1-D, holds values other than 0/1,
    has the wrong length, or keeps no token of some image (every image keeps at least one token,
    its first: the selector always keeps it, and an image without tokens would have no
    placeholders to anchor its positions).
    """
    if image_grid_thw is None:
        raise ValueError("`image_keep_mask` was given without `image_grid_thw`; pass both (the processor returns both).")
    if not isinstance(image_keep_mask, torch.Tensor):
        raise ValueError(f"`image_keep_mask` must be a torch.Tensor, got {type(image_keep_mask).__name__}.")
    if image_keep_mask.dim() != 1:
        raise ValueError(
            f"`image_keep_mask` must be 1-D (one entry per merged token of every image), "
            f"got shape {tuple(image_keep_mask.shape)}."
        )
    if image_keep_mask.dtype != torch.bool:
        if image_keep_mask.is_floating_point() or not bool(((image_keep_mask == 0) | (image_keep_mask == 1)).all()):
            raise ValueError(
                f"`image_keep_mask` must be a bool tensor (or integers 0/1), got dtype {image_keep_mask.dtype}."
            )
        image_keep_mask = image_keep_mask.bool()
    counts = tokens_per_image(image_grid_thw, merge_size)
    if image_keep_mask.numel() != sum(counts):
        raise ValueError(
            f"`image_keep_mask` has {image_keep_mask.numel()} entries but `image_grid_thw` describes "
            f"{sum(counts)} merged tokens ({counts} per image, merge_size={merge_size})."
        )
    kept = [int(m.sum()) for m in torch.split(image_keep_mask, counts)]
    empty = [i for i, k in enumerate(kept) if k == 0]
    if empty:
        raise ValueError(f"`image_keep_mask` keeps no token of image(s) {empty}; every image must keep at least one.")
    return image_keep_mask


def split_keep_mask(image_keep_mask: torch.Tensor, image_grid_thw: torch.Tensor, merge_size: int) -> list[torch.Tensor]:
    """Per-image views of a validated flat keep mask."""
    return list(torch.split(image_keep_mask, tokens_per_image(image_grid_thw, merge_size)))


def kept_tokens_per_image(image_keep_mask: torch.Tensor, image_grid_thw: torch.Tensor, merge_size: int) -> list[int]:
    """Number of kept merged tokens of each image."""
    return [int(m.sum()) for m in split_keep_mask(image_keep_mask, image_grid_thw, merge_size)]


def patch_keep_mask(image_keep_mask: torch.Tensor, merge_size: int) -> torch.Tensor:
    """Expand a token keep mask to the ``merge_size**2`` consecutive patch rows of each token."""
    return image_keep_mask.repeat_interleave(merge_size**2)


def kept_cu_seqlens(image_keep_mask: torch.Tensor, image_grid_thw: torch.Tensor, merge_size: int) -> torch.Tensor:
    """``cu_seqlens`` (int32, on the mask's device) of the kept patches of a validated keep mask.

    One attention segment per frame of each image, as the stock vision towers (transformers and
    vLLM) build for full grids, of its kept length (kept tokens times ``merge_size**2`` patches).
    """
    per_frame = [
        mask.view(int(t), -1).sum(-1) * merge_size**2
        for mask, t in zip(split_keep_mask(image_keep_mask, image_grid_thw, merge_size), image_grid_thw[:, 0].tolist())
    ]
    seqlens = torch.cat(per_frame).to(torch.int32)
    return torch.nn.functional.pad(seqlens.cumsum(0, dtype=torch.int32), (1, 0), value=0)
