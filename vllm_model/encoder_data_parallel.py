"""``--mm-encoder-tp-mode data`` for PixelPrune: the ViT runs data-parallel over KEPT patches.

Images and videos alike: vLLM encodes each modality of a batch in its own call, and a video is
one item (its slices stay on one rank, each slice one attention sequence of its kept length, as
on a single rank); "image" below means either.

With ``mm_encoder_tp_mode="data"`` vLLM replicates the (small) ViT on every tensor-parallel rank
and splits the images of a batch between ranks (``run_dp_sharded_mrope_vision_model``): images are
balanced by patch count with :func:`vllm.model_executor.models.vision.get_load_balance_assignment`,
each rank encodes its images, and the features are all-gathered and put back in image order.
The stock split sizes images by their full grids; here the same helper balances by the number of
KEPT patches (the ViT's real work), each rank encodes exactly the kept patches of its images with
their full-grid positions (:func:`~pixelprune.vllm_model.models.kept_patch_encoder_metadata`,
the single-rank path's metadata), and the gathered features come back in placeholder (image)
order, one row per kept token.

The pure part (:class:`DataParallelPlan`, :func:`rank_inputs`) is unit-tested without engines;
:func:`encode_kept_patches_data_parallel` adds the rank lookup, the encoder call and the gather.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..core.keep_mask import KeepMask, patch_keep_mask

from vllm.distributed import (
    get_tensor_model_parallel_rank,
    get_tensor_model_parallel_world_size,
    tensor_model_parallel_all_gather,
)
from vllm.model_executor.models.vision import get_load_balance_assignment

__all__ = ["DataParallelPlan", "rank_inputs", "encode_kept_patches_data_parallel"]


@dataclass(frozen=True)
class DataParallelPlan:
    """Which images each rank encodes, and how to put the gathered features back in order.

    ``kept_tokens[i]`` is image ``i``'s kept (merged) token count, images in placeholder order.
    ``order`` lists image indices rank by rank (``counts[r]`` of them for rank ``r``), as
    ``get_load_balance_assignment`` returns them; each rank's output holds its images' kept
    tokens in that order, padded to :attr:`max_rank_tokens` rows for the all-gather.
    """

    kept_tokens: tuple[int, ...]
    order: tuple[int, ...]
    counts: tuple[int, ...]

    @classmethod
    def balance(cls, kept_tokens: list[int], world_size: int, merge_size: int) -> DataParallelPlan:
        """Balance images across ``world_size`` ranks by their kept PATCH counts (vLLM's helper)."""
        if world_size < 1:
            raise ValueError(f"world_size must be >= 1, got {world_size}.")
        kept_patches = [k * merge_size**2 for k in kept_tokens]
        order, counts, _ = get_load_balance_assignment(kept_patches, world_size)
        return cls(tuple(kept_tokens), tuple(order), tuple(counts))

    @property
    def world_size(self) -> int:
        return len(self.counts)

    def images_of(self, rank: int) -> list[int]:
        """Indices of the images rank ``rank`` encodes, in the order its output holds them."""
        start = sum(self.counts[:rank])
        return list(self.order[start : start + self.counts[rank]])

    def rank_tokens(self, rank: int) -> int:
        """Rows (kept tokens) rank ``rank`` produces before padding."""
        return sum(self.kept_tokens[i] for i in self.images_of(rank))

    @property
    def max_rank_tokens(self) -> int:
        """Rows every rank pads its output to, so the all-gather sees equal shapes."""
        return max(self.rank_tokens(rank) for rank in range(self.world_size))

    def reassemble(self, gathered: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Per-image features in placeholder order from the all-gathered, padded rank outputs."""
        expected = self.world_size * self.max_rank_tokens
        if gathered.shape[0] != expected:
            raise RuntimeError(
                f"PixelPrune: the gathered encoder output has {gathered.shape[0]} rows, expected {expected} "
                f"({self.world_size} ranks x {self.max_rank_tokens})."
            )
        per_image: list[torch.Tensor | None] = [None] * len(self.kept_tokens)
        for rank in range(self.world_size):
            images = self.images_of(rank)
            rows = gathered[rank * self.max_rank_tokens :][: self.rank_tokens(rank)]
            for index, features in zip(images, rows.split([self.kept_tokens[i] for i in images])):
                per_image[index] = features
        missing = [i for i, f in enumerate(per_image) if f is None]
        if missing:
            raise RuntimeError(f"PixelPrune: no rank encoded image(s) {missing}.")
        return tuple(per_image)  # type: ignore[arg-type]


def rank_inputs(pixel_values: torch.Tensor, keep: KeepMask, images: list[int]) -> tuple[torch.Tensor, KeepMask]:
    """The inputs of the kept-patch encoder for a subset of images.

    ``pixel_values`` holds the full-grid patch rows of every image of ``keep`` (in its order).
    Returns the kept patch rows of ``images`` (in the given order) and their :class:`KeepMask`
    (full grids, so positions are those of the full grids; already validated, not rebuilt).
    """
    patches = keep.merge_size**2
    starts = [0]
    for total in keep.totals:
        starts.append(starts[-1] + total * patches)
    rows = torch.cat([starts[i] + torch.nonzero(patch_keep_mask(keep.per_image[i], keep.merge_size)).reshape(-1)
                      for i in images])
    local = KeepMask(torch.cat([keep.per_image[i] for i in images]), tuple(keep.grids[i] for i in images),
                     keep.merge_size, tuple(keep.totals[i] for i in images), tuple(keep.kept[i] for i in images),
                     keep.name)
    return pixel_values.index_select(0, rows.to(pixel_values.device)), local


def encode_kept_patches_data_parallel(
    visual: torch.nn.Module,
    pixel_values: torch.Tensor,
    keep: KeepMask,
    metadata_fn: Callable[[torch.nn.Module, torch.Tensor, KeepMask], dict],
) -> tuple[torch.Tensor, ...]:
    """Encode the kept patches of all images data-parallel across the tensor-parallel ranks.

    ``keep`` is the validated keep mask of the images of ``pixel_values``.
    ``metadata_fn(visual, grid_thw, keep)`` builds the kept-patch ``encoder_metadata`` (the
    single-rank path's). Every rank must call this with the same arguments (they do: each rank
    runs the same model code on the same batch). Returns one tensor per image, in image order.
    """
    plan = DataParallelPlan.balance(list(keep.kept), get_tensor_model_parallel_world_size(), keep.merge_size)
    rank = get_tensor_model_parallel_rank()
    images = plan.images_of(rank)
    if images:
        local_pixels, local_keep = rank_inputs(pixel_values, keep, images)
        metadata = metadata_fn(visual, local_keep.grid_thw, local_keep)
        local = visual(local_pixels, local_keep.grid_thw, encoder_metadata=metadata)
        if local.shape[0] != plan.rank_tokens(rank):
            raise RuntimeError(
                f"PixelPrune: the vision encoder returned {local.shape[0]} embeddings for "
                f"{plan.rank_tokens(rank)} kept tokens (rank {rank})."
            )
    else:  # more ranks than images: this rank only pads
        local = torch.empty((0, visual.out_hidden_size), device=visual.device, dtype=visual.dtype)
    padding = local.new_zeros((plan.max_rank_tokens - local.shape[0], local.shape[1]))
    gathered = tensor_model_parallel_all_gather(torch.cat([local, padding]).contiguous(), dim=0)
    return plan.reassemble(gathered)
