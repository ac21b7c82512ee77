"""Processor-side pruning step shared by the transformers processors and the vLLM processor.

Given the stock image processor's output (``pixel_values``, ``image_grid_thw``), its
:class:`~.selector.PatchGeometry` and the effective :class:`PixelPruneSettings`, compute the flat
``image_keep_mask`` (docs/DESIGN.md) with the shared selector (:func:`~.selector.select_masks`)
and record/log per-image statistics.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import torch

from .selector import PatchGeometry, PreprocessorConfig, select_masks
from .settings import PixelPruneSettings

__all__ = [
    "ImagePruningStats",
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


def log_pruning_stats(stats: Sequence[ImagePruningStats], settings: PixelPruneSettings) -> None:
    """Log one line per image: kept/total tokens, grid and selector time (INFO when
    ``settings.verbose``, else DEBUG). Verbose output shows without any logging setup
    (:func:`_verbose_fallback`)."""
    level = logging.INFO if settings.verbose else logging.DEBUG
    if settings.verbose:
        _verbose_fallback()
    if not logger.isEnabledFor(level):
        return
    for s in stats:
        logger.log(
            level,
            "PixelPrune image %d: kept %d/%d tokens (%.1f%%), grid %s, selector %.2f ms "
            "(threshold=%g, metric=%s, method=%s, anchored=%s)",
            s.index, s.kept_tokens, s.total_tokens, 100.0 * s.kept_ratio, list(s.grid_thw),
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
