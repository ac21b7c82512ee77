"""What PixelPrune keeps of one image or video file, with no model weights (the library behind
``pixelprune inspect`` and the exporter's retention table; no printing, no argument parsing).

Videos (:func:`inspect_video`) are decoded and preprocessed by the stock Qwen3-VL video processor
(:mod:`pixelprune.video_files`, optional packages) and selected by the video rule
(``docs/ALGORITHM.md`` section 7); the rest of this docstring is about images.

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
from .core.video_selector import select_video_masks
from .processing.image_preprocessing import ImagePreprocessConfig, PreprocessedImage, preprocess_image
from .video_files import (
    VIDEO_EXTENSIONS, VIDEO_EXTRA, VideoConfig, frames_from_pixel_values, is_video_file, preprocess_video, probe_video,
)
from .vit_flops import QWEN3_VL_2B_VISION, VisionTowerConfig, estimate_vit_flops

__all__ = [
    "InspectError", "InspectResult", "VideoInspectResult", "inspect_image", "inspect_video", "is_video", "load_image",
    "settings_summary",
]

logger = logging.getLogger(__name__)


class InspectError(Exception):
    """An image that cannot be inspected; the message names the reason (the caller adds the path)."""


class _JsonRecord:
    def to_json(self) -> str:
        """One line of ``--json`` output (every field; no NaN)."""
        return json.dumps(asdict(self), separators=(", ", ": "), allow_nan=False)


@dataclass
class InspectResult(_JsonRecord):
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


@dataclass
class VideoInspectResult(_JsonRecord):
    """What ``pixelprune inspect`` reports for one video (also its ``--json`` object). Token
    counts and ``kept_indices`` (``s * rows * cols + r * cols + c``) cover all temporal slices;
    ``slices`` has one entry per slice (two sampled frames each)."""

    video: str
    width: int  # decoded frames
    height: int
    resized_width: int
    resized_height: int
    fps: float  # the stream's frame rate
    total_frames: int  # in the file (counted by decoding where the container does not say)
    frame_indices: list[int]  # the frames the stock processor samples (2 per second by default)
    grid_thw: list[int]  # the processor's patch grid (t, H/16, W/16): t temporal slices
    token_grid: list[int]  # (slices, rows, columns) of merged tokens
    tokens: int
    kept: int
    pruned: int
    retention: float
    kept_indices: list[int] = field(repr=False)
    slices: list[dict[str, Any]] = field(default_factory=list)  # slice, frames, timestamp, tokens, kept
    selector_ms: float = 0.0
    preprocess_ms: float = 0.0  # decoding + the stock video processor
    vit_flops_full: int = 0
    vit_flops_kept: int = 0
    vit_flops_saved: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)
    overlay: str | None = None  # contact sheet PNG
    animation: str | None = None  # animated GIF


def is_video(path: Path) -> bool:
    """Whether ``path`` is inspected as a video: a video extension (:data:`~pixelprune.video_files.VIDEO_EXTENSIONS`),
    or a file Pillow cannot identify that PyAV (when installed) opens with a video stream."""
    if is_video_file(path):
        return True
    if not path.is_file():
        return False
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path):
            return False
    except UnidentifiedImageError:
        return probe_video(path)
    except Exception:  # noqa: BLE001 - unreadable: the image path reports why
        return False


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
        raise InspectError(
            "not an image (Pillow cannot identify the file format) nor a video (video files are recognised by "
            f"their extension: {', '.join(sorted(VIDEO_EXTENSIONS))}; or by content once PyAV is installed: {VIDEO_EXTRA})"
        ) from None
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
    keep = select_masks(pixel_values, grid, config.geometry, settings)[0].numpy()
    selector_ms = (time.perf_counter() - start) * 1e3
    _, gh, gw = pre.grid_thw
    rows, cols = gh // config.merge_size, gw // config.merge_size
    width, height = pre.original_size
    resized_width, resized_height = pre.resized_size
    result = InspectResult(
        image=str(path), width=width, height=height,
        resized_width=resized_width, resized_height=resized_height,
        grid_thw=list(pre.grid_thw), token_grid=[rows, cols],
        **_selection_fields(keep, 1, config.merge_size, vision_tower),
        selector_ms=round(selector_ms, 3), preprocess_ms=round(preprocess_ms, 3),
        settings=settings_summary(settings),
    )
    logger.debug("%s: %s", path, {k: v for k, v in asdict(result).items() if k != "kept_indices"})
    return result, pre, keep.reshape(rows, cols)


def _selection_fields(keep: np.ndarray, units: int, merge_size: int, vision_tower: VisionTowerConfig) -> dict[str, Any]:
    """The counts, kept indices and ViT FLOPs of a flat keep mask over ``units`` equal attention
    units (1 for an image, the ``t`` slices of a video: the ViT attends within each)."""
    per_unit = keep.reshape(units, -1)
    tokens, kept = int(keep.size), int(keep.sum())
    patches_per_token = merge_size**2
    flops = estimate_vit_flops([per_unit.shape[1] * patches_per_token] * units,
                               [int(k) * patches_per_token for k in per_unit.sum(axis=1)], vision_tower)
    return dict(
        tokens=tokens, kept=kept, pruned=tokens - kept, retention=round(kept / tokens, 6),
        kept_indices=np.flatnonzero(keep).tolist(),
        vit_flops_full=flops.full, vit_flops_kept=flops.kept, vit_flops_saved=round(flops.saved_fraction, 6),
    )


def inspect_video(
    path: Path,
    settings: PixelPruneSettings,
    config: VideoConfig = VideoConfig(),
    vision_tower: VisionTowerConfig = QWEN3_VL_2B_VISION,
) -> tuple[VideoInspectResult, np.ndarray, np.ndarray]:
    """Decode, preprocess (stock video processor) and select one video: every setting applies, as
    for images (the ``video`` setting, which switches video pruning in models and processors, is
    not consulted: inspecting a video means pruning it). Returns the result, the frames the model
    sees ``(t * 2, H, W, 3)`` uint8 (resized; the last one repeated where the processor pads to
    whole slices) and the keep grid ``(t, rows, columns)`` bool. Raises
    :class:`~pixelprune.video_files.VideoSupportMissing` when a package is missing and
    :class:`~pixelprune.video_files.VideoError` for unusable files."""
    pre = preprocess_video(path, config)
    t, gh, gw = pre.video_grid_thw
    start = time.perf_counter()
    keep = select_video_masks(pre.pixel_values_videos, [pre.video_grid_thw], pre.geometry, settings)[0]
    selector_ms = (time.perf_counter() - start) * 1e3
    m, tp = pre.geometry.merge_size, pre.geometry.temporal_patch_size
    rows, cols = gh // m, gw // m
    padded = pre.frame_indices + pre.frame_indices[-1:] * (t * tp - len(pre.frame_indices))
    slices = []
    for s, kept in enumerate(keep.reshape(t, rows * cols).sum(axis=1).tolist()):
        frames = padded[s * tp : (s + 1) * tp]
        # the timestamp Qwen3-VL writes before the slice: the mean time of its first and last frame
        timestamp = (frames[0] + frames[-1]) / 2 / pre.fps if pre.fps else 0.0
        slices.append({"slice": s, "frames": frames, "timestamp": round(timestamp, 6), "tokens": rows * cols, "kept": kept})
    result = VideoInspectResult(
        video=str(path), width=pre.width, height=pre.height,
        resized_width=gw * pre.geometry.patch_size, resized_height=gh * pre.geometry.patch_size,
        fps=round(pre.fps, 6), total_frames=pre.total_frames, frame_indices=pre.frame_indices,
        grid_thw=[t, gh, gw], token_grid=[t, rows, cols],
        **_selection_fields(keep, t, m, vision_tower), slices=slices,
        selector_ms=round(selector_ms, 3), preprocess_ms=round(pre.preprocess_ms, 3),
        settings=settings_summary(settings),
    )
    logger.debug("%s: %s", path, {k: v for k, v in asdict(result).items() if k != "kept_indices"})
    frames = frames_from_pixel_values(pre.pixel_values_videos, pre.video_grid_thw, pre.geometry)
    return result, frames, keep.reshape(t, rows, cols)


def settings_summary(settings: PixelPruneSettings) -> dict[str, Any]:
    """The settings that decide the selection, with the effective mode (``anchored`` resolved)."""
    return {
        "threshold": settings.threshold,
        "metric": settings.metric,
        "method": settings.method,
        "anchored": settings.is_anchored,
    }
