"""processing/image_preprocessing.py reproduces transformers' Qwen3-VL image preprocessing exactly.

The oracle is transformers' own PIL-backend image processor (``Qwen2VLImageProcessorPil``) with a
Qwen3-VL checkpoint's settings; ``pixel_values`` must be equal to the bit (atol 0).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from pixelprune.processing.image_preprocessing import (
    ImagePreprocessConfig,
    normalisation_table,
    preprocess_image,
    preprocess_images,
    smart_resize,
)

hf_pil = pytest.importorskip(
    "transformers.models.qwen2_vl.image_processing_pil_qwen2_vl",
    reason="transformers (the oracle) is not installed",
)


def stock_processor(config: ImagePreprocessConfig = ImagePreprocessConfig()):
    """transformers' processor configured like a Qwen3-VL checkpoint's preprocessor_config.json."""
    return hf_pil.Qwen2VLImageProcessorPil(
        patch_size=config.patch_size,
        temporal_patch_size=config.temporal_patch_size,
        merge_size=config.merge_size,
        image_mean=list(config.image_mean),
        image_std=list(config.image_std),
        size={"shortest_edge": config.min_pixels, "longest_edge": config.max_pixels},
    )


def _stock_composites_transparency() -> bool:
    """transformers 5.24 composites transparency onto white in ``convert_to_rgb``; 5.20 (and
    older) drops the alpha channel. We follow the current behaviour."""
    from transformers.image_transforms import convert_to_rgb

    clear = Image.new("RGBA", (1, 1), (0, 0, 0, 0))
    return np.asarray(convert_to_rgb(clear)).reshape(-1)[:3].tolist() == [255, 255, 255]


def stock_inputs(images: list[Image.Image]) -> list[Image.Image]:
    """What the stock processor must see to be the oracle of our (compositing) behaviour."""
    if _stock_composites_transparency():
        return images
    out = []
    for image in images:
        if "A" in image.getbands() or image.info.get("transparency") is not None:
            rgba = image.convert("RGBA")
            image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
        out.append(image)
    return out


def picture(width: int, height: int, mode: str, seed: int = 0) -> Image.Image:
    """Noise over gradients and flat areas, with a varying alpha channel, in ``mode``."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // max(width, 1), y * 255 // max(height, 1), (x + y) % 256, 255 - (x * y) % 256], -1)
    noise = rng.integers(0, 256, (height, width, 4))
    flat = (x // 16 + y // 16) % 3 == 0
    rgba = np.where(flat[..., None], base, noise).astype(np.uint8)
    rgba[..., 3] = np.where(x < width // 2, 255, rgba[..., 3])  # half opaque, half varying alpha
    image = Image.fromarray(rgba, "RGBA")
    if mode == "P":
        return image.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE)
    return image.convert(mode)


CASES = [
    (300, 200, "RGB"),
    (1001, 333, "RGBA"),  # transparency composited on white
    (64, 64, "L"),  # grayscale, upscaled to min_pixels
    (5, 7, "RGB"),  # tiny
    (2000, 30, "RGB"),  # large aspect ratio
    (320, 256, "LA"),
    (257, 129, "P"),
    (256, 320, "RGB"),  # already a multiple of 32 within the budget
    (31, 450, "CMYK"),
]


@pytest.mark.parametrize(("width", "height", "mode"), CASES)
def test_matches_stock_processor_exactly(width, height, mode):
    image = picture(width, height, mode)
    expected = stock_processor()(images=stock_inputs([image]), return_tensors="pt")
    pixel_values, grid = preprocess_images([image])
    assert grid.dtype == torch.int64 and pixel_values.dtype == torch.float32
    assert grid.tolist() == expected["image_grid_thw"].tolist()
    assert pixel_values.shape == expected["pixel_values"].shape
    assert torch.equal(pixel_values, expected["pixel_values"].to(torch.float32))


@pytest.mark.parametrize(
    ("min_pixels", "max_pixels", "size"),
    [
        (4096, 128 * 128, (400, 300)),  # the max_pixels (downscaling) branch
        (320 * 320, 16777216, (100, 60)),  # a larger min_pixels
        (1024, 4096, (90, 33)),
    ],
)
def test_pixel_budget_overrides_match_stock(min_pixels, max_pixels, size):
    config = ImagePreprocessConfig(min_pixels=min_pixels, max_pixels=max_pixels)
    image = picture(*size, "RGB", seed=3)
    expected = stock_processor(config)(images=[image], return_tensors="pt")
    pixel_values, grid = preprocess_images([image], config)
    assert grid.tolist() == expected["image_grid_thw"].tolist()
    assert torch.equal(pixel_values, expected["pixel_values"])


def test_several_images_in_one_call_match_stock():
    images = [picture(300, 200, "RGB", 1), picture(64, 96, "L", 2), picture(130, 70, "RGBA", 3)]
    expected = stock_processor()(images=stock_inputs(images), return_tensors="pt")
    pixel_values, grid = preprocess_images(images)
    assert grid.tolist() == expected["image_grid_thw"].tolist()
    assert torch.equal(pixel_values, expected["pixel_values"])


def test_smart_resize_matches_stock():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as stock

    rng = np.random.default_rng(0)
    sizes = [(1, 1), (1, 200), (32, 32), (1754, 1240), (4100, 4100), (16, 3000), (8000, 6000)]
    sizes += [tuple(int(v) for v in rng.integers(1, 5000, 2)) for _ in range(300)]
    for h, w in sizes:
        if max(h, w) / min(h, w) > 200:
            continue
        for lo, hi in [(65536, 16777216), (0, 4096), (3136, 1003520)]:
            assert smart_resize(h, w, 32, lo, hi) == stock(h, w, 32, lo, hi), (h, w, lo, hi)


def test_smart_resize_refuses_extreme_aspect_ratio_like_stock():
    with pytest.raises(ValueError, match="aspect ratio"):
        smart_resize(1, 201)
    with pytest.raises(ValueError, match="aspect ratio"):
        preprocess_image(Image.new("RGB", (300, 1)))


def test_image_too_small_for_one_token():
    config = ImagePreprocessConfig(min_pixels=0)
    with pytest.raises(ValueError, match="too small to form one 32x32 token"):
        preprocess_image(Image.new("RGB", (10, 10)), config)


def test_grid_and_layout():
    """A token's 4 patches are consecutive rows and hold its 32x32 pixels, both frames equal."""
    rgb = np.random.default_rng(5).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    pre = preprocess_image(Image.fromarray(rgb), ImagePreprocessConfig(min_pixels=0))
    assert pre.grid_thw == (1, 4, 6) and pre.resized_size == (96, 64)
    assert np.array_equal(pre.resized, rgb)  # no resampling at a multiple of 32
    rows = pre.pixel_values.reshape(2 * 3, 4, 3, 2, 16, 16)  # tokens, patches, C, T, P, P
    assert np.array_equal(rows[:, :, :, 0], rows[:, :, :, 1])
    table = normalisation_table()
    token = 4  # row 1, column 1 of the 2 x 3 token grid
    block = rgb[32:64, 32:64]
    for patch, (dy, dx) in enumerate([(0, 0), (0, 16), (16, 0), (16, 16)]):
        expected = table[np.arange(3)[:, None, None], block[dy:dy + 16, dx:dx + 16].transpose(2, 0, 1)]
        assert np.array_equal(rows[token, patch, :, 0], expected)


def test_config_validation():
    with pytest.raises(ValueError, match="min_pixels=10 is larger than max_pixels=5"):
        ImagePreprocessConfig(min_pixels=10, max_pixels=5)
    with pytest.raises(ValueError, match="patch_size"):
        ImagePreprocessConfig(patch_size=0)
    assert ImagePreprocessConfig().factor == 32
    assert math.isclose(float(normalisation_table()[0, 255]), 1.0)
