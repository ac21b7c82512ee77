"""Processor-side pruning step shared by the transformers processors and the vLLM processor.

Given the stock image processor's output (``pixel_values``, ``image_grid_thw``) and the
effective :class:`PixelPruneSettings`, compute the flat ``image_keep_mask`` (DESIGN.md) with the
shared selector, per image, and record/log per-image statistics.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .selector import select_keep_mask
from .settings import PixelPruneSettings

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
class SelectorGeometry:
    """The image processor's patch geometry and normalisation, as the selector needs them.

    ``image_mean``/``image_std`` are the affine map from ``pixel_values`` back to [0, 1] pixels
    (``pixel = value * std + mean``), which is the processor's own mean/std when it normalises.
    """

    patch_size: int
    merge_size: int
    temporal_patch_size: int
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]

    @classmethod
    def from_image_processor(cls, image_processor: Any, images_kwargs: Mapping[str, Any] | None = None) -> SelectorGeometry:
        """Read the geometry from ``image_processor``, honouring per-call ``images_kwargs``
        overrides (``patch_size``, ``merge_size``, ``image_mean``, ``do_normalize``, ...)."""
        kw = dict(images_kwargs or {})

        def get(name: str) -> Any:
            value = kw.get(name)
            return getattr(image_processor, name, None) if value is None else value

        channels = 3
        mean = _per_channel(get("image_mean"), channels, default=0.0)
        std = _per_channel(get("image_std"), channels, default=1.0)
        if get("do_normalize") is False:
            mean, std = (0.0,) * channels, (1.0,) * channels
        if get("do_rescale") is False:
            # values are raw 0..255 intensities: scale the de-normalised values back to [0, 1]
            mean = tuple(m / 255.0 for m in mean)
            std = tuple(s / 255.0 for s in std)
        else:
            factor = float(get("rescale_factor") or 1 / 255) * 255.0
            if abs(factor - 1.0) > 1e-9:  # a non-standard rescale factor: values are pixel * factor
                mean = tuple(m / factor for m in mean)
                std = tuple(s / factor for s in std)
        return cls(
            patch_size=int(get("patch_size")),
            merge_size=int(get("merge_size")),
            temporal_patch_size=int(get("temporal_patch_size")),
            image_mean=mean,
            image_std=std,
        )


def _per_channel(value: Any, channels: int, default: float) -> tuple[float, ...]:
    if value is None:
        return (default,) * channels
    if isinstance(value, (int, float)):
        return (float(value),) * channels
    return tuple(float(v) for v in value)


def prune_image_batch(
    pixel_values: Any,
    image_grid_thw: Any,
    settings: PixelPruneSettings,
    geometry: SelectorGeometry,
) -> tuple[torch.Tensor, list[ImagePruningStats]]:
    """Select the kept tokens of every image of a processed batch.

    Args:
        pixel_values: ``(num_patches, C*T*P*P)`` (torch or numpy), all images concatenated.
        image_grid_thw: ``(num_images, 3)`` patch grids.
        settings: the effective settings of this call (``enabled`` is not consulted here).
        geometry: the image processor's geometry (:meth:`SelectorGeometry.from_image_processor`).

    Returns:
        The flat bool ``image_keep_mask`` (torch, one entry per merged token of every image, in
        ``pixel_values`` order) and one :class:`ImagePruningStats` per image, also logged
        (INFO when ``settings.verbose``, else DEBUG).
    """
    pixels = torch.as_tensor(pixel_values)
    grids = torch.as_tensor(image_grid_thw).reshape(-1, 3).tolist()
    merge_area = geometry.merge_size**2
    masks: list[torch.Tensor] = []
    stats: list[ImagePruningStats] = []
    offset = 0
    for index, (t, h, w) in enumerate(grids):
        n_patches = t * h * w
        start = time.perf_counter()
        mask = select_keep_mask(
            pixels[offset : offset + n_patches],
            [[t, h, w]],
            merge_size=geometry.merge_size,
            temporal_patch_size=geometry.temporal_patch_size,
            patch_size=geometry.patch_size,
            image_mean=geometry.image_mean,
            image_std=geometry.image_std,
            threshold=settings.threshold,
            metric=settings.metric,
            method=settings.method,
            anchored=settings.anchored,
        )
        seconds = time.perf_counter() - start
        offset += n_patches
        masks.append(mask)
        stats.append(ImagePruningStats(index, (t, h, w), int(mask.sum()), n_patches // merge_area, seconds))
    if offset != pixels.shape[0]:
        raise ValueError(
            f"pixel_values has {pixels.shape[0]} patches but image_grid_thw {grids} describes {offset}."
        )
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
