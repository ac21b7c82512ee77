"""The ``image_keep_mask`` contract (docs/DESIGN.md), shared by the processors, every model family
and the vLLM plugin.

``image_keep_mask`` is a flat bool tensor with one entry per merged token of every image, images
concatenated in ``image_grid_thw`` order, tokens in the raster order of each image's merge windows
(the order of ``pixel_values``). Each merged token is ``merge_size**2`` consecutive patch rows.

A mask is validated once where it enters (a model's ``forward``, vLLM's ``_process_image_input``)
into a :class:`KeepMask`: a frozen CPU value holding the per-image totals, kept counts and kept
indices, passed down to the encoder and the rope index so that no later step re-validates it or
reads counts back from an accelerator. The public entry points still accept a raw tensor
(:meth:`KeepMask.of` builds the value from it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch

__all__ = [
    "KEEP_MASK_KEY",
    "VIDEO_KEEP_MASK_KEY",
    "KeepMask",
    "tokens_per_image",
    "validate_keep_mask",
    "split_keep_mask",
    "kept_tokens_per_image",
    "patch_keep_mask",
    "kept_cu_seqlens",
]

KEEP_MASK_KEY = "image_keep_mask"
"""The name of the mask everywhere: processor output key, model keyword, vLLM multimodal field."""

VIDEO_KEEP_MASK_KEY = "video_keep_mask"
"""The video counterpart (``docs/ALGORITHM.md`` section 7): one entry per merged token of every
video, videos concatenated in ``video_grid_thw`` order, each video's temporal slices in order,
raster order within a slice (the order of ``pixel_values_videos``). Every slice keeps at least
its first token, so each slice's ``<|video_pad|>`` run is never empty."""


def _noun(name: str) -> str:
    return "video" if name == VIDEO_KEEP_MASK_KEY else "image"


def tokens_per_image(image_grid_thw: torch.Tensor | Sequence[Sequence[int]], merge_size: int) -> list[int]:
    """Number of merged (LLM) tokens of each image: ``t * h * w / merge_size**2``.

    ``image_grid_thw`` is ``(num_images, 3)`` (a single ``(3,)`` grid counts as one image)."""
    grids = torch.as_tensor(image_grid_thw).reshape(-1, 3).tolist()
    return [int(t * h * w) // (merge_size**2) for t, h, w in grids]


def _checked_flat_mask(image_keep_mask: Any, image_grid_thw: Any, name: str = KEEP_MASK_KEY) -> torch.Tensor:
    """The structural checks, before any value of the mask is read (so that a mask on the
    ``meta`` device or of a wrong dtype gets the documented ``ValueError``, not a torch error)."""
    noun = _noun(name)
    if image_grid_thw is None:
        raise ValueError(f"`{name}` was given without `{noun}_grid_thw`; pass both (the processor returns both).")
    if not isinstance(image_keep_mask, torch.Tensor):
        raise ValueError(f"`{name}` must be a torch.Tensor, got {type(image_keep_mask).__name__}.")
    if image_keep_mask.dim() != 1:
        raise ValueError(
            f"`{name}` must be 1-D (one entry per merged token of every {noun}), "
            f"got shape {tuple(image_keep_mask.shape)}."
        )
    if image_keep_mask.dtype != torch.bool and (
        image_keep_mask.is_floating_point() or image_keep_mask.is_complex()
    ):
        raise ValueError(
            f"`{name}` must be a bool tensor (or integers 0/1), got dtype {image_keep_mask.dtype}."
        )
    if image_keep_mask.device.type == "meta":
        raise ValueError(
            f"`{name}` is on the meta device and holds no values; pass the processor's mask "
            "(on the CPU or the model's device)."
        )
    return image_keep_mask


@dataclass(frozen=True, eq=False)
class KeepMask:
    """A validated keep mask with its per-image bookkeeping, on the CPU; built once per forward /
    request (:meth:`build`) and passed down.

    Attributes:
        mask: flat bool CPU tensor (one entry per merged token of every image).
        grids: each image's ``(t, h, w)`` patch grid.
        merge_size: the spatial merge size the mask was checked against.
        totals: merged tokens of each image (``t * h * w / merge_size**2``).
        kept: kept merged tokens of each image.
        name: :data:`KEEP_MASK_KEY` or :data:`VIDEO_KEEP_MASK_KEY` (which input it validates).

    Video (``name=VIDEO_KEEP_MASK_KEY``): a grid with ``t`` slices of ``h * w / merge_size**2``
    tokens each, in slice order (:meth:`frame_tokens`, :meth:`kept_per_frame`); every slice must
    keep at least one token (its run of placeholders sits between two timestamps).
    """

    mask: torch.Tensor
    grids: tuple[tuple[int, int, int], ...]
    merge_size: int
    totals: tuple[int, ...]
    kept: tuple[int, ...]
    name: str = KEEP_MASK_KEY

    @classmethod
    def build(cls, image_keep_mask: Any, image_grid_thw: Any, merge_size: int, *, name: str = KEEP_MASK_KEY) -> KeepMask:
        """Check ``image_keep_mask`` against ``image_grid_thw`` (see :func:`validate_keep_mask`
        for the errors) and return the value. Reads the mask (and the grid) to the CPU once.
        ``name`` says which mask it is (errors name it; a video mask is checked per slice)."""
        noun = _noun(name)
        mask = _checked_flat_mask(image_keep_mask, image_grid_thw, name).detach().to("cpu")
        if mask.dtype != torch.bool:
            if not bool(((mask == 0) | (mask == 1)).all()):
                raise ValueError(
                    f"`{name}` must be a bool tensor (or integers 0/1), got dtype {mask.dtype}."
                )
            mask = mask.bool()
        grids = tuple(tuple(int(v) for v in row) for row in torch.as_tensor(image_grid_thw).reshape(-1, 3).tolist())
        counts = tokens_per_image(grids, merge_size)
        if mask.numel() != sum(counts):
            raise ValueError(
                f"`{name}` has {mask.numel()} entries but `{noun}_grid_thw` describes "
                f"{sum(counts)} merged tokens ({counts} per {noun}, merge_size={merge_size})."
            )
        kept = tuple(int(m.sum()) for m in torch.split(mask, counts))  # CPU: no device sync
        empty = [i for i, k in enumerate(kept) if k == 0]
        if empty:
            raise ValueError(f"`{name}` keeps no token of {noun}(s) {empty}; every {noun} must keep at least one.")
        value = cls(mask, grids, int(merge_size), tuple(counts), kept, name)
        if name == VIDEO_KEEP_MASK_KEY:
            empty_slices = [
                (v, s) for v, (m, (t, _, _)) in enumerate(zip(value.per_image, grids))
                for s in torch.nonzero(m.view(t, -1).sum(-1) == 0).reshape(-1).tolist()
            ]
            if empty_slices:
                raise ValueError(
                    f"`{name}` keeps no token of (video, temporal slice) {empty_slices}; every slice must "
                    "keep at least one (the selector always keeps its first token)."
                )
        return value

    @classmethod
    def of(
        cls, value: KeepMask | torch.Tensor, image_grid_thw: Any, merge_size: int, *, name: str = KEEP_MASK_KEY
    ) -> KeepMask:
        """``value`` itself when it is a :class:`KeepMask` built for this many images and this
        merge size (it was validated where it entered), else :meth:`build` from the raw tensor."""
        if isinstance(value, KeepMask):
            noun = _noun(name)
            num_images = None if image_grid_thw is None else int(torch.as_tensor(image_grid_thw).reshape(-1, 3).shape[0])
            if value.name != name or value.merge_size != merge_size or (
                num_images is not None and num_images != len(value.grids)
            ):
                raise ValueError(
                    f"The keep mask `{value.name}` was built for {len(value.grids)} {_noun(value.name)}(s) with "
                    f"merge_size={value.merge_size}, but is used as `{name}` with {num_images} {noun}(s) and "
                    f"merge_size={merge_size}."
                )
            return value
        return cls.build(value, image_grid_thw, merge_size, name=name)

    @property
    def num_kept(self) -> int:
        """Kept merged tokens of all images (= image placeholders in the prompt)."""
        return sum(self.kept)

    @property
    def all_kept(self) -> bool:
        """Nothing is pruned (the stock path applies)."""
        return self.kept == self.totals

    @property
    def grid_thw(self) -> torch.Tensor:
        """``(num_images, 3)`` int64 CPU tensor of the grids."""
        return torch.tensor(self.grids, dtype=torch.long).reshape(-1, 3)

    @cached_property
    def per_image(self) -> tuple[torch.Tensor, ...]:
        """Per-image views of :attr:`mask`."""
        return tuple(torch.split(self.mask, list(self.totals)))

    @cached_property
    def kept_indices(self) -> tuple[torch.Tensor, ...]:
        """Per image, the sorted int64 raster indices of its kept tokens (CPU)."""
        return tuple(torch.nonzero(m).reshape(-1) for m in self.per_image)

    @cached_property
    def patch_indices(self) -> torch.Tensor:
        """int64 CPU indices of the kept rows of ``pixel_values`` (``merge_size**2`` per kept token)."""
        return torch.nonzero(patch_keep_mask(self.mask, self.merge_size)).reshape(-1)

    def frame_tokens(self, image: int) -> int:
        """Merged tokens of one temporal slice of image/video ``image`` (``h * w / merge_size**2``)."""
        _, h, w = self.grids[image]
        return h * w // self.merge_size**2

    def kept_per_frame(self) -> torch.Tensor:
        """Kept merged tokens of every temporal slice of every grid, in order (int64 CPU)."""
        parts = [m.view(t, -1).sum(-1) for m, (t, _, _) in zip(self.per_image, self.grids)]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)

    def frame_kept_indices(self, image: int) -> tuple[torch.Tensor, ...]:
        """Per temporal slice of grid ``image``, the sorted int64 raster indices (within the slice,
        ``r * (w / merge) + c``) of its kept tokens (CPU): a video slice's M-RoPE
        :class:`~.mrope_positions.GridSpan` ``kept``."""
        t = self.grids[image][0]
        return tuple(torch.nonzero(row).reshape(-1) for row in self.per_image[image].view(t, -1))

    def cu_seqlens(self) -> torch.Tensor:
        """``cu_seqlens`` (int32, CPU) of the kept patches: one attention segment per frame of
        each image, as the stock vision towers build for full grids, of its kept length."""
        seqlens = (self.kept_per_frame() * self.merge_size**2).to(torch.int32)
        return torch.nn.functional.pad(seqlens.cumsum(0, dtype=torch.int32), (1, 0), value=0)


def validate_keep_mask(
    image_keep_mask: torch.Tensor, image_grid_thw: torch.Tensor | None, merge_size: int
) -> torch.Tensor:
    """Check ``image_keep_mask`` against ``image_grid_thw`` and return it as a flat bool tensor
    (on the mask's device).

    Raises ``ValueError`` when there is no grid, the mask is not a 1-D tensor, has a non-integer
    dtype or holds values other than 0/1, lies on the ``meta`` device, has the wrong length, or
    keeps no token of some image (every image keeps at least one token, its first: the selector
    always keeps it, and an image without tokens would have no placeholders to anchor its
    positions). :meth:`KeepMask.build` does the same checks and keeps the bookkeeping.
    """
    keep = KeepMask.build(image_keep_mask, image_grid_thw, merge_size)
    return keep.mask.to(image_keep_mask.device)


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
    """``cu_seqlens`` (int32, on the mask's device) of the kept patches of a validated keep mask
    (:meth:`KeepMask.cu_seqlens`, which callers holding a :class:`KeepMask` use directly)."""
    return KeepMask.build(image_keep_mask, image_grid_thw, merge_size).cu_seqlens().to(image_keep_mask.device)
