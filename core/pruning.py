"""Processor-side pruning step shared by the transformers processors and the vLLM processor.

Given the stock image processor's output (``pixel_values``, ``image_grid_thw``), its
:class:`~.selector.PatchGeometry` and the effective :class:`PixelPruneSettings`, compute the flat
``image_keep_mask`` (docs/DESIGN.md) with the shared selector (:func:`~.selector.select_masks`)
and record/log per-image statistics. :func:`prune_video_batch` does the same for the video
processor's output (``video_keep_mask``, :func:`~.video_selector.select_video_masks`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import Any

import torch

from .selector import PatchGeometry, PreprocessorConfig, select_masks
from .settings import PixelPruneSettings
from .video_selector import select_video_masks

__all__ = [
    "ImagePruningStats",
    "VideoPruningStats",
    "prune_video_batch",
    "PatchGeometry",
    "PreprocessorConfig",
    "SelectorGeometry",
    "log_pruning_stats",
    "prune_image_batch",
]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ImagePruningStats:
    """What PixelPrune did to one image.

    Attributes:
        index: position of the image among the call's images (flattened over the batch).
        grid_thw: the image's ``(t, h, w)`` patch grid.
        kept_tokens: merged tokens kept (= ``<|image_pad|>`` placeholders emitted).
        total_tokens: merged tokens without pruning (``t * h * w / merge_size**2``).
        selector_seconds: wall time of the selector for this image.
    """

    index: int
    grid_thw: tuple[int, int, int]
    kept_tokens: int
    total_tokens: int
    selector_seconds: float

    @property
    def kept_ratio(self) -> float:
        """Kept fraction of the image's tokens (1.0 = nothing pruned)."""
        return self.kept_tokens / self.total_tokens if self.total_tokens else 1.0


@dataclasses.dataclass(frozen=True)
class VideoPruningStats:
    """What PixelPrune did to one video.

    Attributes:
        index: position of the video among the call's videos (flattened over the batch).
        grid_thw: the video's ``(t, h, w)`` patch grid (``t`` temporal slices).
        kept_per_slice: kept merged tokens of each slice (= that slice's ``<|video_pad|>`` run).
        slice_tokens: merged tokens of one slice without pruning (``h * w / merge_size**2``).
        selector_seconds: wall time of the selector for this video.
    """

    index: int
    grid_thw: tuple[int, int, int]
    kept_per_slice: tuple[int, ...]
    slice_tokens: int
    selector_seconds: float

    @property
    def kept_tokens(self) -> int:
        """Merged tokens kept over all slices."""
        return sum(self.kept_per_slice)

    @property
    def total_tokens(self) -> int:
        """Merged tokens without pruning (``t * h * w / merge_size**2``)."""
        return self.grid_thw[0] * self.slice_tokens

    @property
    def kept_ratio(self) -> float:
        """Kept fraction of the video's tokens (1.0 = nothing pruned)."""
        return self.kept_tokens / self.total_tokens if self.total_tokens else 1.0


SelectorGeometry = PatchGeometry
"""The former name of :class:`~.selector.PatchGeometry` (the one geometry record)."""


def prune_image_batch(
    pixel_values: Any,
    image_grid_thw: Any,
    settings: PixelPruneSettings,
    geometry: PatchGeometry,
) -> tuple[torch.Tensor, list[ImagePruningStats]]:
    """Select the kept tokens of every image of a processed batch.

    Args:
        pixel_values: ``(num_patches, C*T*P*P)`` (torch or numpy), all images concatenated.
        image_grid_thw: ``(num_images, 3)`` patch grids.
        settings: the effective settings of this call (``enabled`` is not consulted here).
        geometry: the image processor's geometry (:meth:`PatchGeometry.from_image_processor`).

    Returns:
        The flat bool ``image_keep_mask`` (torch, one entry per merged token of every image, in
        ``pixel_values`` order) and one :class:`ImagePruningStats` per image, also logged
        (INFO when ``settings.verbose``, else DEBUG).
    """
    pixels = torch.as_tensor(pixel_values)
    grids = torch.as_tensor(image_grid_thw).reshape(-1, 3).tolist()
    described = sum(t * h * w for t, h, w in grids)
    if described != pixels.shape[0]:
        raise ValueError(
            f"pixel_values has {pixels.shape[0]} patches but image_grid_thw {grids} describes {described}."
        )
    seconds: list[float] = []
    masks = select_masks(pixels, grids, geometry, settings, seconds=seconds)
    merge_area = geometry.merge_size**2
    stats = [
        ImagePruningStats(index, (t, h, w), int(mask.sum()), t * h * w // merge_area, took)
        for index, ((t, h, w), mask, took) in enumerate(zip(grids, masks, seconds))
    ]
    log_pruning_stats(stats, settings)
    keep_mask = torch.cat(masks) if masks else torch.zeros(0, dtype=torch.bool)
    return keep_mask, stats


def prune_video_batch(
    pixel_values_videos: Any,
    video_grid_thw: Any,
    settings: PixelPruneSettings,
    geometry: PatchGeometry,
) -> tuple[torch.Tensor, list[VideoPruningStats]]:
    """Select the kept tokens of every video of a processed batch (``docs/ALGORITHM.md`` §7).

    Args:
        pixel_values_videos: ``(num_patches, C*T*P*P)`` (torch or numpy), all videos concatenated.
        video_grid_thw: ``(num_videos, 3)`` patch grids.
        settings: the effective settings of this call (``enabled`` / ``video`` are not consulted).
        geometry: the video processor's geometry (:meth:`PatchGeometry.from_image_processor`).

    Returns:
        The flat bool ``video_keep_mask`` (torch; one entry per merged token of every video, slices
        in order) and one :class:`VideoPruningStats` per video, also logged like images.
    """
    pixels = torch.as_tensor(pixel_values_videos)
    grids = torch.as_tensor(video_grid_thw).reshape(-1, 3).tolist()
    described = sum(t * h * w for t, h, w in grids)
    if described != pixels.shape[0]:
        raise ValueError(
            f"pixel_values_videos has {pixels.shape[0]} patches but video_grid_thw {grids} describes {described}."
        )
    merge_area = geometry.merge_size**2
    masks: list[torch.Tensor] = []
    stats: list[VideoPruningStats] = []
    offset = 0
    for index, (t, h, w) in enumerate(grids):
        rows = t * h * w
        start = time.perf_counter()  # one video per call: its own selector time
        (mask,) = select_video_masks(pixels[offset : offset + rows], [[t, h, w]], geometry, settings)
        took = time.perf_counter() - start
        offset += rows
        mask = torch.as_tensor(mask, dtype=torch.bool)
        masks.append(mask)
        per_slice = tuple(int(k) for k in mask.view(t, -1).sum(-1).tolist())
        stats.append(VideoPruningStats(index, (t, h, w), per_slice, h * w // merge_area, took))
    log_pruning_stats(stats, settings)
    keep_mask = torch.cat(masks) if masks else torch.zeros(0, dtype=torch.bool)
    return keep_mask, stats


def log_pruning_stats(
    stats: Sequence[ImagePruningStats | VideoPruningStats], settings: PixelPruneSettings
) -> None:
    """Log one line per image: kept/total tokens, grid and selector time (INFO when
    ``settings.verbose``, else DEBUG). Verbose output shows without any logging setup
    (:func:`_verbose_fallback`)."""
    level = logging.INFO if settings.verbose else logging.DEBUG
    if settings.verbose:
        _verbose_fallback()
    if not logger.isEnabledFor(level):
        return
    for s in stats:
        kind = "video" if isinstance(s, VideoPruningStats) else "image"
        logger.log(
            level,
            "PixelPrune %s %d: kept %d/%d tokens (%.1f%%), grid %s, selector %.2f ms "
            "(threshold=%g, metric=%s, method=%s, anchored=%s)",
            kind, s.index, s.kept_tokens, s.total_tokens, 100.0 * s.kept_ratio, list(s.grid_thw),
            1000.0 * s.selector_seconds, settings.threshold, settings.metric, settings.method,
            settings.is_anchored,
        )


_FALLBACK_HANDLER = logging.StreamHandler()  # sys.stderr at emit time
_FALLBACK_HANDLER.setFormatter(logging.Formatter("%(message)s"))


def _verbose_fallback() -> None:
    """``verbose`` must print the per-image line even when the application configured no logging
    (the paper's code printed it). Python would drop an INFO record then (no handler, root level
    WARNING), so, as transformers does for its own library logger, attach a stderr handler to our
    logger at INFO while no handler is configured anywhere on its path to the root. Once the
    application configures logging, detach it: its configuration decides (no duplicate lines)."""
    global _LEVEL_BEFORE_FALLBACK
    attached = _FALLBACK_HANDLER in logger.handlers
    configured, node = False, logger
    while node is not None and not configured:
        configured = any(h is not _FALLBACK_HANDLER for h in node.handlers)
        node = node.parent if node.propagate else None
    if not configured and not attached:
        logger.addHandler(_FALLBACK_HANDLER)
        _LEVEL_BEFORE_FALLBACK = logger.level
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)
    elif configured and attached:
        logger.removeHandler(_FALLBACK_HANDLER)
        logger.setLevel(_LEVEL_BEFORE_FALLBACK)


_LEVEL_BEFORE_FALLBACK = logging.NOTSET
