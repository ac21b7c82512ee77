"""Video files for ``pixelprune inspect``: decoded and preprocessed exactly as the stock Qwen3-VL
video processor does, with no model weights.

The stock processor (transformers' ``Qwen3VLVideoProcessor`` with the Qwen3-VL / Qwen3.5
checkpoints' ``video_preprocessor_config.json``: 2 frames per second, 4..768 frames,
``size = {"shortest_edge": 4096, "longest_edge": 25165824}``) does everything here: it picks the
frames (``sample_frames``), resizes, normalises and patchifies them. The only change is the
decoder: transformers decodes a file with torchcodec by default; we decode with PyAV through
transformers' own ``load_video(..., backend="pyav")`` (a subclass overriding ``fetch_videos``),
so the frame indices are the stock ones. PyAV, transformers and torchvision (which the stock video
processor needs) are optional: :func:`preprocess_video` raises :class:`VideoSupportMissing`
naming what to install (``pip install "pixelprune[video]"`` brings PyAV and transformers).

Matroska / WebM files carry no frame count in their header and PyAV reports 0 frames there, which
transformers' reader turns into an empty sample; we then count the frames by decoding them once
(the same decoder loop transformers uses) and sample from that count.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .core.selector import PatchGeometry

__all__ = [
    "STOCK_VIDEO_PROCESSOR_CONFIG",
    "VIDEO_CONTAINER_FORMATS",
    "VIDEO_EXTENSIONS",
    "VIDEO_EXTRA",
    "PreprocessedVideo",
    "VideoConfig",
    "VideoError",
    "VideoSupportMissing",
    "frames_from_pixel_values",
    "is_video_file",
    "preprocess_video",
    "probe_video",
]

logger = logging.getLogger(__name__)

VIDEO_EXTRA = 'pip install "pixelprune[video]"'

# Containers decided by extension alone (anything else is tried as an image first, then probed).
VIDEO_EXTENSIONS = frozenset({
    ".3gp", ".avi", ".flv", ".m2ts", ".m4v", ".mkv", ".mov", ".mp4", ".mpeg", ".mpg", ".mts", ".ogv", ".ts",
    ".webm", ".wmv",
})

# video_preprocessor_config.json of the Qwen3-VL / Qwen3.5 checkpoints (the values that differ from
# or are not in the class defaults; tests/tiny_models.py writes the same file).
STOCK_VIDEO_PROCESSOR_CONFIG: dict[str, Any] = {
    "patch_size": 16,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "do_sample_frames": True,
    "fps": 2,
    "min_frames": 4,
    "max_frames": 768,
    "size": {"shortest_edge": 4096, "longest_edge": 25165824},
}


class VideoError(Exception):
    """A video that cannot be inspected; the message names the reason (the caller adds the path)."""


class VideoSupportMissing(VideoError):
    """A package that video inspection needs is not installed; the message says what to install."""


@dataclass(frozen=True)
class VideoConfig:
    """The video processor settings a user may change (``None``: the checkpoints' value)."""

    fps: float | None = None  # frames sampled per second of video
    min_pixels: int | None = None  # size["shortest_edge"]: the least pixels of all sampled frames together
    max_pixels: int | None = None  # size["longest_edge"]: the most pixels of all sampled frames together

    def __post_init__(self) -> None:
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"fps={self.fps} must be > 0.")
        for name in ("min_pixels", "max_pixels"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name}={value} must be >= 1.")
        low = STOCK_VIDEO_PROCESSOR_CONFIG["size"]["shortest_edge"] if self.min_pixels is None else self.min_pixels
        high = STOCK_VIDEO_PROCESSOR_CONFIG["size"]["longest_edge"] if self.max_pixels is None else self.max_pixels
        if low > high:
            raise ValueError(f"video min_pixels={low} is larger than video max_pixels={high}.")

    def processor_kwargs(self) -> dict[str, Any]:
        """The stock configuration with this config's overrides."""
        kwargs = {**STOCK_VIDEO_PROCESSOR_CONFIG, "size": dict(STOCK_VIDEO_PROCESSOR_CONFIG["size"])}
        if self.fps is not None:
            kwargs["fps"] = self.fps
        if self.min_pixels is not None:
            kwargs["size"]["shortest_edge"] = self.min_pixels
        if self.max_pixels is not None:
            kwargs["size"]["longest_edge"] = self.max_pixels
        return kwargs


@dataclass
class PreprocessedVideo:
    """One video as the stock processor returns it, plus what the decoder reported."""

    pixel_values_videos: torch.Tensor  # (t*h*w, C*T*P*P) float32
    video_grid_thw: list[int]  # [t, h, w] patches
    geometry: PatchGeometry  # the processor's layout and normalisation
    width: int  # of the decoded frames
    height: int
    fps: float  # the stream's average frame rate (what the sampler used)
    total_frames: int  # as the header says, or counted by decoding (Matroska, WebM)
    frames_counted: bool  # True when total_frames was counted by decoding
    frame_indices: list[int]  # the sampled frames, before the processor's temporal padding
    preprocess_ms: float  # decoding + the processor


def is_video_file(path: Path) -> bool:
    """Whether ``path``'s extension is a video container's (:data:`VIDEO_EXTENSIONS`)."""
    return path.suffix.lower() in VIDEO_EXTENSIONS


def _import_av() -> Any:
    try:
        return importlib.import_module("av")
    except ImportError:
        raise VideoSupportMissing(f"decoding videos needs PyAV (the `av` package): {VIDEO_EXTRA}") from None


# Demuxers whose detection is by content (FFmpeg also "opens" text files as ANSI art and images
# by their extension: those are not videos to us).
VIDEO_CONTAINER_FORMATS = frozenset({"mov", "mp4", "matroska", "webm", "avi", "mpegts", "mpeg", "flv", "asf", "ogg"})


def probe_video(path: Path) -> bool:
    """Whether PyAV (when installed) finds a video container (:data:`VIDEO_CONTAINER_FORMATS`) with a
    video stream in ``path``; for files whose extension says nothing. Never raises for unreadable
    files (they are reported by the caller)."""
    try:
        av = importlib.import_module("av")
    except ImportError:
        return False
    try:
        with av.open(str(path)) as container:
            formats = set(container.format.name.split(","))
            return bool(formats & VIDEO_CONTAINER_FORMATS) and bool(container.streams.video)
    except Exception:  # noqa: BLE001 - any failure means "not a video we can read"
        return False


def _count_frames(av: Any, path: str) -> int:
    """Frames in the first video stream, counted by decoding them (the loop transformers' reader runs)."""
    with av.open(path) as container:
        return sum(1 for _ in container.decode(video=0))


@lru_cache(maxsize=1)
def _processor_class() -> type:
    """The stock ``Qwen3VLVideoProcessor`` reading files with PyAV (and counting frames when a
    container does not say how many it has). Built on first use: transformers is optional."""
    try:
        video_utils = importlib.import_module("transformers.video_utils")
        stock = importlib.import_module("transformers.models.qwen3_vl.video_processing_qwen3_vl")
    except ImportError:
        raise VideoSupportMissing(f"inspecting videos needs transformers (the stock Qwen3-VL video processor): {VIDEO_EXTRA}") from None

    class PyAVQwen3VLVideoProcessor(stock.Qwen3VLVideoProcessor):
        """``Qwen3VLVideoProcessor`` that decodes files with PyAV; sampling and preprocessing are stock."""

        def fetch_videos(self, video_url_or_urls, sample_indices_fn=None):
            if isinstance(video_url_or_urls, list):  # as the stock method: one (video, metadata) per file
                return list(zip(*[self.fetch_videos(x, sample_indices_fn=sample_indices_fn) for x in video_url_or_urls]))
            path = str(video_url_or_urls)
            sample = sample_indices_fn or video_utils.default_sample_indices_fn  # stock: every frame

            def counted_sample(metadata, **kwargs):
                if not metadata.total_num_frames:  # Matroska / WebM headers have no frame count
                    metadata.total_num_frames = _count_frames(_import_av(), path)
                    metadata.duration = metadata.total_num_frames / metadata.fps if metadata.fps else 0.0
                    metadata.frames_counted = True
                    logger.info("%s: no frame count in the container; counted %d frames by decoding", path,
                                metadata.total_num_frames)
                if not metadata.total_num_frames:
                    raise VideoError("the video stream has no frames")
                return sample(metadata=metadata, **kwargs)

            return video_utils.load_video(path, backend="pyav", sample_indices_fn=counted_sample)

    return PyAVQwen3VLVideoProcessor


def _importable(name: str) -> str | None:
    """``None`` if ``name`` imports, else why not."""
    try:
        importlib.import_module(name)
    except ImportError:
        return "not installed"
    except Exception as exc:  # noqa: BLE001 - e.g. a torchvision build that does not match torch
        return f"cannot be imported ({type(exc).__name__}: {exc})"
    return None


def _check_support() -> None:
    """Raise :class:`VideoSupportMissing` naming the first missing package (PyAV, transformers,
    torchvision: the order a user installs them in)."""
    _import_av()
    if _importable("transformers") is not None:
        raise VideoSupportMissing(
            f"inspecting videos needs transformers (the stock Qwen3-VL video processor): {VIDEO_EXTRA}"
        )
    why = _importable("torchvision")
    if why is not None:
        raise VideoSupportMissing(
            f"the stock Qwen3-VL video processor needs torchvision, which is {why}: install the torchvision "
            "build that matches your torch (pip install torchvision, from the same index as torch)"
        )


@lru_cache(maxsize=4)
def _processor(config: VideoConfig) -> Any:
    kwargs = config.processor_kwargs()
    processor = _processor_class()(**kwargs)
    # The stock default (None) means "uncapped" in the transformers versions we support and logs a
    # deprecation warning on every first call; resolving it here keeps the behaviour and the output clean.
    if "cap_pixels_per_frame" in getattr(processor.valid_kwargs, "__annotations__", {}) and processor.cap_pixels_per_frame is None:
        processor.cap_pixels_per_frame = False
    return processor


def preprocess_video(path: Path, config: VideoConfig = VideoConfig()) -> PreprocessedVideo:
    """Decode, sample and preprocess ``path`` as the stock video processor does (see the module
    docstring). Raises :class:`VideoSupportMissing` when a package is missing and
    :class:`VideoError` for unreadable files."""
    if path.is_dir():
        raise VideoError("is a directory, not a video file")
    if not path.exists():
        raise VideoError("no such file")
    _check_support()
    av = _import_av()
    processor = _processor(config)
    start = time.perf_counter()
    try:
        out = processor(videos=[str(path)], return_metadata=True, return_tensors="pt")
    except VideoError:
        raise
    except PermissionError:
        raise VideoError("permission denied") from None
    except (av.error.FFmpegError, OSError) as exc:
        raise VideoError(f"cannot decode video ({exc})") from None
    except (IndexError, ValueError, TypeError) as exc:  # no frames, a reader that stopped early, or the
        # processor refusing the clip (one frame: "t:1 must be larger than temporal_factor:2")
        raise VideoError(f"cannot decode or preprocess video ({type(exc).__name__}: {exc})") from None
    preprocess_ms = (time.perf_counter() - start) * 1e3
    metadata = out["video_metadata"][0]
    t, h, w = (int(v) for v in out["video_grid_thw"][0])
    indices = [int(i) for i in metadata.frames_indices]
    if -(-len(indices) // processor.temporal_patch_size) != t:
        raise VideoError(f"decoded {len(indices)} frames for a grid of t={t} slices (the decoder stopped early?)")
    return PreprocessedVideo(
        pixel_values_videos=out["pixel_values_videos"], video_grid_thw=[t, h, w],
        geometry=PatchGeometry.from_image_processor(processor),
        width=int(metadata.width), height=int(metadata.height), fps=float(metadata.fps),
        total_frames=int(metadata.total_num_frames), frames_counted=bool(getattr(metadata, "frames_counted", False)),
        frame_indices=indices, preprocess_ms=preprocess_ms,
    )


def frames_from_pixel_values(pixel_values_videos: torch.Tensor, grid_thw: list[int], geometry: PatchGeometry) -> np.ndarray:
    """Undo the processor's patchify and normalisation: ``(t * T, H, W, 3)`` uint8 frames as the model
    sees them (resized; the last frame repeated where the processor padded to whole slices)."""
    t, h, w = grid_thw
    m, tp, p, c = geometry.merge_size, geometry.temporal_patch_size, geometry.patch_size, geometry.channels
    # rows: (t, h/m, w/m, m, m) patches; columns: (C, T, P, P) values (the stock patchify's order)
    x = pixel_values_videos.detach().to(torch.float32).reshape(t, h // m, w // m, m, m, c, tp, p, p)
    x = x.permute(0, 6, 1, 3, 7, 2, 4, 8, 5).reshape(t * tp, h * p, w * p, c)
    mean = torch.tensor(geometry.image_mean, dtype=torch.float32)
    std = torch.tensor(geometry.image_std, dtype=torch.float32)
    return torch.clamp(torch.round((x * std + mean) * 255.0), 0, 255).to(torch.uint8).numpy()
