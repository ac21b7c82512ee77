"""What PixelPrune keeps of one image file, with no model weights (the library behind
``pixelprune inspect`` and the exporter's retention table; no printing, no argument parsing).

An image is loaded as transformers' ``load_image`` and vLLM load it (EXIF orientation applied, so a
phone photo is inspected upright), preprocessed exactly as the stock Qwen3-VL image processor does
by default (:mod:`pixelprune.processing.image_preprocessing`), then :func:`pixelprune.select_tokens`
picks the tokens to keep.

Why our own preprocessing rather than transformers' processor even when transformers is installed:
it is bit-identical to transformers' PIL backend (tested), needs neither transformers nor
torchvision, and gives the same answer on every machine. transformers picks its torchvision backend
when torchvision is installed, whose resampling differs slightly from PIL's (see
:mod:`pixelprune.processing.image_preprocessing`); images whose sides are already multiples of
32 px within the pixel budget are not resampled and are identical under both.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .core.selector import select_masks
from .core.settings import PixelPruneSettings
from .processing.image_preprocessing import ImagePreprocessConfig, PreprocessedImage, preprocess_image
from .vit_flops import QWEN3_VL_2B_VISION, VisionTowerConfig, estimate_vit_flops

__all__ = ["InspectError", "InspectResult", "inspect_image", "load_image", "settings_summary"]

logger = logging.getLogger(__name__)


class InspectError(Exception):
    """An image that cannot be inspected; the message names the reason (the caller adds the path)."""


@dataclass
class InspectResult:
    """What ``pixelprune inspect`` reports for one image (also its ``--json`` object)."""

    image: str
    width: int  # upright (after EXIF orientation), as the model sees it
    height: int
    resized_width: int
    resized_height: int
    grid_thw: list[int]  # the processor's patch grid (1, H/16, W/16)
    token_grid: list[int]  # merged tokens (rows, columns) = grid / merge_size
    tokens: int
    kept: int
    pruned: int
    retention: float  # kept / tokens
    kept_indices: list[int] = field(repr=False)  # raster order over token_grid
    selector_ms: float = 0.0
    preprocess_ms: float = 0.0
    vit_flops_full: int = 0
    vit_flops_kept: int = 0
    vit_flops_saved: float = 0.0  # fraction of vit_flops_full
    settings: dict[str, Any] = field(default_factory=dict)
    overlay: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(", ", ": "), allow_nan=False)


def load_image(path: Path) -> Any:
    """Open ``path`` with PIL, decode it fully and apply its EXIF orientation (as transformers'
    ``load_image`` and vLLM do); :class:`InspectError` says why it can't be."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if path.is_dir():
        raise InspectError("is a directory, not an image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
            image.load()
            if getattr(image, "n_frames", 1) > 1:
                logger.info("%s has %d frames; inspecting the first", path, image.n_frames)
            image = ImageOps.exif_transpose(image)
    except FileNotFoundError:
        raise InspectError("no such file") from None
    except PermissionError:
        raise InspectError("permission denied") from None
    except UnidentifiedImageError:
        raise InspectError("not an image (Pillow cannot identify the file format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InspectError(f"too large to decode safely ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt data
        raise InspectError(f"cannot decode image data ({exc})") from None
    return image


def inspect_image(
    path: Path,
    settings: PixelPruneSettings,
    config: ImagePreprocessConfig,
    vision_tower: VisionTowerConfig = QWEN3_VL_2B_VISION,
) -> tuple[InspectResult, PreprocessedImage, np.ndarray]:
    """Preprocess and select one image. Returns the result, the preprocessed image and the keep
    grid ``(rows, columns)`` bool. ``vision_tower`` sizes the FLOPs estimate. Raises
    :class:`InspectError` for unusable files."""
    image = load_image(path)
    start = time.perf_counter()
    try:
        pre = preprocess_image(image, config)
    except ValueError as exc:
        raise InspectError(str(exc)) from None
    preprocess_ms = (time.perf_counter() - start) * 1e3
    pixel_values = torch.from_numpy(pre.pixel_values)
    grid = torch.tensor([pre.grid_thw], dtype=torch.int64)
    start = time.perf_counter()
    kept_indices = torch.nonzero(select_masks(pixel_values, grid, config.geometry, settings)[0]).reshape(-1)
    selector_ms = (time.perf_counter() - start) * 1e3
    _, gh, gw = pre.grid_thw
    rows, cols = gh // config.merge_size, gw // config.merge_size
    tokens, kept = rows * cols, int(kept_indices.numel())
    keep = np.zeros(tokens, dtype=bool)
    keep[kept_indices.numpy()] = True
    patches_per_token = config.merge_size**2
    flops = estimate_vit_flops([tokens * patches_per_token], [kept * patches_per_token], vision_tower)
    width, height = pre.original_size
    resized_width, resized_height = pre.resized_size
    result = InspectResult(
        image=str(path), width=width, height=height,
        resized_width=resized_width, resized_height=resized_height,
        grid_thw=list(pre.grid_thw), token_grid=[rows, cols],
        tokens=tokens, kept=kept, pruned=tokens - kept, retention=round(kept / tokens, 6),
        kept_indices=kept_indices.tolist(),
        selector_ms=round(selector_ms, 3), preprocess_ms=round(preprocess_ms, 3),
        vit_flops_full=flops.full, vit_flops_kept=flops.kept,
        vit_flops_saved=round(flops.saved_fraction, 6),
        settings=settings_summary(settings),
    )
    logger.debug("%s: %s", path, {k: v for k, v in asdict(result).items() if k != "kept_indices"})
    return result, pre, keep.reshape(rows, cols)


def settings_summary(settings: PixelPruneSettings) -> dict[str, Any]:
    """The settings that decide the selection, with the effective mode (``anchored`` resolved)."""
    return {
        "threshold": settings.threshold,
        "metric": settings.metric,
        "method": settings.method,
        "anchored": settings.is_anchored,
    }
