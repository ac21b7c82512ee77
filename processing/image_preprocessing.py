"""Qwen3-VL / Qwen3.5 image preprocessing without transformers (numpy + PIL).

Reproduces, value for value, what the stock image processor of a Qwen3-VL checkpoint returns for a
still image with its default settings (``preprocessor_config.json`` of the Qwen3-VL / Qwen3.5
checkpoints: ``Qwen2VLImageProcessor`` with ``patch_size=16``, ``merge_size=2``,
``temporal_patch_size=2``, ``image_mean = image_std = (0.5, 0.5, 0.5)``,
``size = {"shortest_edge": 65536, "longest_edge": 16777216}``):

1. convert to RGB (transparency is composited onto white, as transformers does);
2. ``smart_resize`` to sides that are multiples of ``patch_size * merge_size`` = 32 px with the pixel
   count kept in ``[min_pixels, max_pixels]``; PIL bicubic resize of the uint8 image;
3. rescale by 1/255 (in float64, then float32), normalise ``(x - mean) / std`` in float32;
4. duplicate the frame ``temporal_patch_size`` times and cut into ``(num_patches, C*T*P*P)`` rows,
   every ``merge_size**2`` consecutive rows forming one merged token, tokens in raster order.

``tests/test_image_preprocessing.py`` checks exact equality (atol 0) of ``pixel_values`` and
``image_grid_thw`` against transformers' PIL backend (``Qwen2VLImageProcessorPil``).

The torchvision backend (``Qwen2VLImageProcessor``, which transformers picks when torchvision is
installed) is not bit-identical to the PIL backend (nor to this module). Measured with transformers 5.24, torch 2.14.1,
torchvision 0.29.1 on random-noise images: it fuses rescale and normalisation into one float32
step, so even an image that needs no resize (sides multiples of 32 within the pixel budget) differs
by float32 rounding (at most 6e-8, on about half of the values); where the image is resized, its
bicubic resampling differs from PIL's by up to 2/255 on about 1% of the values. Grids are always
the same, and each uint8 level still maps to one value, so pixel-identical tokens stay identical:
at threshold 0 the selection on a non-resized image is the same under both backends (on
``assets/sample_document.png``, which is resized, the kept tokens were also the same).

Only numpy and the standard library are imported at module level (torch is only needed by
:func:`preprocess_images`); PIL is imported where images are handled, so the CLI starts without
transformers. It is not part of the exported remote code (the Hub repos use the stock image
processor).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..core.selector import PatchGeometry

__all__ = [
    "ImagePreprocessConfig",
    "PreprocessedImage",
    "QWEN3_VL_IMAGE_CONFIG",
    "normalisation_table",
    "patchify",
    "preprocess_image",
    "preprocess_images",
    "smart_resize",
    "to_rgb_array",
]

# Qwen3-VL / Qwen3.5 checkpoints' preprocessor_config.json: 256x256 .. 4096x4096 pixels.
DEFAULT_MIN_PIXELS = 65536
DEFAULT_MAX_PIXELS = 16777216
MAX_ASPECT_RATIO = 200  # smart_resize refuses more extreme images


@dataclass(frozen=True)
class ImagePreprocessConfig:
    """The stock Qwen3-VL image processor's defaults (override ``min_pixels``/``max_pixels`` like
    ``size={"shortest_edge": ..., "longest_edge": ...}`` there)."""

    patch_size: int = 16
    temporal_patch_size: int = 2
    merge_size: int = 2
    min_pixels: int = DEFAULT_MIN_PIXELS
    max_pixels: int = DEFAULT_MAX_PIXELS
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    rescale_factor: float = 1 / 255

    def __post_init__(self) -> None:
        for name in ("patch_size", "temporal_patch_size", "merge_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}={getattr(self, name)!r} must be an integer >= 1.")
        if self.min_pixels < 0 or self.max_pixels < 1:
            raise ValueError(
                f"min_pixels={self.min_pixels!r} must be >= 0 and max_pixels={self.max_pixels!r} >= 1."
            )
        if self.min_pixels > self.max_pixels:
            raise ValueError(
                f"min_pixels={self.min_pixels} is larger than max_pixels={self.max_pixels}."
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ImagePreprocessConfig:
        """The preprocessing a stock ``preprocessor_config.json`` (or the ``image_processor``
        block of ``processor_config.json``) describes, read by the one preprocessor-config parser
        (:class:`~pixelprune.core.selector.PreprocessorConfig`); absent resize limits take the
        Qwen3-VL checkpoints' defaults."""
        from ..core.selector import PreprocessorConfig

        parsed = PreprocessorConfig.from_dict(data)
        return cls(
            patch_size=parsed.patch_size, temporal_patch_size=parsed.temporal_patch_size,
            merge_size=parsed.merge_size,
            min_pixels=DEFAULT_MIN_PIXELS if parsed.min_pixels is None else parsed.min_pixels,
            max_pixels=DEFAULT_MAX_PIXELS if parsed.max_pixels is None else parsed.max_pixels,
            image_mean=parsed.image_mean, image_std=parsed.image_std, rescale_factor=parsed.rescale_factor,
        )

    @property
    def factor(self) -> int:
        """Side granularity in pixels: one merged token is ``factor x factor`` pixels (32 for Qwen3-VL)."""
        return self.patch_size * self.merge_size

    @property
    def geometry(self) -> PatchGeometry:
        """The selector's :class:`~pixelprune.core.selector.PatchGeometry` of this preprocessing
        (through the one preprocessor-config parser, :class:`~pixelprune.core.selector.PreprocessorConfig`)."""
        from ..core.selector import PreprocessorConfig

        return PreprocessorConfig(
            patch_size=self.patch_size, merge_size=self.merge_size, temporal_patch_size=self.temporal_patch_size,
            image_mean=self.image_mean, image_std=self.image_std, rescale_factor=self.rescale_factor,
            min_pixels=self.min_pixels, max_pixels=self.max_pixels,
        ).geometry


QWEN3_VL_IMAGE_CONFIG = ImagePreprocessConfig()


def smart_resize(
    height: int,
    width: int,
    factor: int = 32,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[int, int]:
    """The processor's target size: sides multiples of ``factor``, pixel count within
    ``[min_pixels, max_pixels]``, aspect ratio kept as closely as possible.

    Same arithmetic as transformers' ``smart_resize`` (``qwen2_vl``). May return a zero side when
    ``min_pixels`` is 0 and a side is below ``factor / 2``.
    """
    if height < 1 or width < 1:
        raise ValueError(f"Image has an empty side ({width}x{height} pixels).")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ValueError(
            f"absolute aspect ratio must be smaller than {MAX_ASPECT_RATIO}, "
            f"got {max(height, width) / min(height, width)}"
        )
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def to_rgb_array(image: Any) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB of a PIL image, compositing any transparency onto white (as the
    stock processor's ``convert_to_rgb`` does). A multi-frame image uses its current frame."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        raise TypeError(f"Expected a PIL.Image.Image, got {type(image).__name__}.")
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        rgb = Image.alpha_composite(background, rgba).convert("RGB")
    else:
        rgb = image.convert("RGB")
    return np.array(rgb)


def normalisation_table(config: ImagePreprocessConfig = QWEN3_VL_IMAGE_CONFIG) -> np.ndarray:
    """``(C, 256)`` float32: the normalised value of every uint8 level per channel.

    Computed with the processor's own operation order (``x * rescale`` in float64, cast to
    float32, then ``(x - mean) / std`` in float32), so a table look-up is bit-identical to it.
    """
    levels = (np.arange(256, dtype=np.float64) * config.rescale_factor).astype(np.float32)
    mean = np.asarray(config.image_mean, dtype=np.float32)[:, None]
    std = np.asarray(config.image_std, dtype=np.float32)[:, None]
    return (levels[None, :] - mean) / std


def patchify(rgb: np.ndarray, config: ImagePreprocessConfig = QWEN3_VL_IMAGE_CONFIG) -> np.ndarray:
    """Normalised ``(num_patches, C*T*P*P)`` float32 rows of a resized ``(H, W, C)`` uint8 image,
    in the stock layout (merge windows of ``merge_size**2`` patches, windows in raster order)."""
    p, m, t = config.patch_size, config.merge_size, config.temporal_patch_size
    height, width, channels = rgb.shape
    if height % (p * m) or width % (p * m):
        raise ValueError(f"Image sides {width}x{height} are not multiples of {p * m} pixels.")
    gh, gw = height // p, width // p
    # Lay out the uint8 pixels first (4x less data to move), then map levels through the table.
    blocks = rgb.reshape(gh // m, m, p, gw // m, m, p, channels)
    blocks = blocks.transpose(0, 3, 1, 4, 6, 2, 5)  # (gh/m, gw/m, mh, mw, C, ph, pw)
    table = normalisation_table(config)  # (C, 256)
    normalised = table[np.arange(channels)[:, None, None], blocks]  # same shape, float32
    frames = np.broadcast_to(normalised[:, :, :, :, :, None], (*normalised.shape[:5], t, p, p))
    return np.ascontiguousarray(frames).reshape(gh * gw, channels * t * p * p)


@dataclass
class PreprocessedImage:
    """One image as the model sees it."""

    pixel_values: np.ndarray  # (num_patches, C*T*P*P) float32
    grid_thw: tuple[int, int, int]  # patch grid (1, H/P, W/P)
    original_size: tuple[int, int]  # (width, height) before resizing
    resized: np.ndarray = field(repr=False)  # (H, W, 3) uint8, what the patches were cut from

    @property
    def resized_size(self) -> tuple[int, int]:
        """(width, height) after ``smart_resize``."""
        return int(self.resized.shape[1]), int(self.resized.shape[0])


def preprocess_image(image: Any, config: ImagePreprocessConfig = QWEN3_VL_IMAGE_CONFIG) -> PreprocessedImage:
    """Preprocess one PIL image exactly as the stock Qwen3-VL image processor does.

    Raises:
        ValueError: the image is empty, too elongated (aspect ratio > 200, as the stock processor),
            or too small to form one merged token under ``config.min_pixels``.
    """
    from PIL import Image

    rgb = to_rgb_array(image)
    height, width = rgb.shape[:2]
    new_h, new_w = smart_resize(height, width, config.factor, config.min_pixels, config.max_pixels)
    if new_h < config.factor or new_w < config.factor:
        raise ValueError(
            f"Image of {width}x{height} pixels is too small to form one {config.factor}x{config.factor} "
            f"token (it would be resized to {new_w}x{new_h} with min_pixels={config.min_pixels})."
        )
    # The stock processor always goes through PIL's resize (a same-size bicubic resize is a copy).
    resized = np.array(Image.fromarray(rgb).resize((new_w, new_h), resample=Image.Resampling.BICUBIC))
    return PreprocessedImage(
        pixel_values=patchify(resized, config),
        grid_thw=(1, new_h // config.patch_size, new_w // config.patch_size),
        original_size=(width, height),
        resized=resized,
    )


def preprocess_images(
    images: Sequence[Any], config: ImagePreprocessConfig = QWEN3_VL_IMAGE_CONFIG
) -> tuple[Any, Any]:
    """``(pixel_values, image_grid_thw)`` torch tensors for a list of PIL images, like
    ``image_processor(images, return_tensors="pt")`` (float32 and int64)."""
    import torch

    done = [preprocess_image(image, config) for image in images]
    pixel_values = torch.from_numpy(np.concatenate([d.pixel_values for d in done], axis=0))
    grid = torch.tensor([list(d.grid_thw) for d in done], dtype=torch.int64).reshape(-1, 3)
    return pixel_values, grid
