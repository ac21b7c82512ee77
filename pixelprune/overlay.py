"""Overlay pictures: which 32x32 tokens PixelPrune keeps and which it prunes.

The picture is the image as the model sees it (after the processor's resize, so token borders fall
on exact pixel rows and columns):

* kept tokens keep their pixels unchanged (except the faint grid line on their top and left edge);
* pruned tokens are faded into a slate tint and hatched diagonally (visible on light and dark
  content alike);
* a faint token grid is drawn on the first pixel row and column of every token;
* a caption bar below the image says how many tokens were kept.

Exact property (tested): in every token, the pixels off the grid line (rows and columns 1..31) are
the resized image's pixels if the token is kept and differ from them if it is pruned (the tint
changes any colour but its own, and hatch pixels then move further towards the hatch colour).
"""

from __future__ import annotations

import logging
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["GRID_ALPHA", "PRUNED_ALPHA", "PRUNED_TINT", "caption_height", "render_overlay"]

logger = logging.getLogger(__name__)

PRUNED_TINT = (100, 116, 139)  # slate-500: pruned tokens fade into it, light or dark content alike
PRUNED_ALPHA = 0.7
HATCH_COLOUR = (30, 41, 59)  # slate-800 diagonal hatching also marks pruned tokens
HATCH_ALPHA = 0.3
HATCH_PERIOD = 8
GRID_COLOUR = (148, 163, 184)  # slate-400: darkens kept (light) tokens, lightens pruned ones
GRID_ALPHA = 0.3
CAPTION_BACKGROUND = (15, 23, 42)
CAPTION_TEXT = (241, 245, 249)
CAPTION_ACCENT = (56, 189, 248)  # sky-400: the kept share


def _blend(pixels: np.ndarray, colour: tuple[int, int, int], alpha: float) -> np.ndarray:
    """``pixels * (1 - alpha) + colour * alpha`` rounded to uint8."""
    out = pixels.astype(np.float32) * (1.0 - alpha) + np.asarray(colour, dtype=np.float32) * alpha
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


_PRUNED_WHITE = tuple(int(v) for v in _blend(np.full(3, 255, dtype=np.uint8), PRUNED_TINT, PRUNED_ALPHA))


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    for name in ("DejaVuSans.ttf", "LiberationSans-Regular.ttf", "Arial.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType
    except TypeError:  # pragma: no cover - very old Pillow
        return ImageFont.load_default()


def caption_height(width: int) -> int:
    """Height in pixels of the caption bar drawn under an overlay of ``width`` pixels."""
    return max(24, min(64, round(width / 40)))


def render_overlay(
    resized_rgb: np.ndarray,
    keep: np.ndarray,
    *,
    token_size: int = 32,
    caption: str | None = None,
) -> Image.Image:
    """Draw the overlay for one image.

    Args:
        resized_rgb: ``(H, W, 3)`` uint8, the image after the processor's resize (``H`` and ``W``
            multiples of ``token_size``).
        keep: ``(H / token_size, W / token_size)`` bool token grid (True = kept), or its flat
            raster-order form.
        token_size: pixels per token side (``patch_size * merge_size`` = 32 for Qwen3-VL).
        caption: text of the caption bar below the image; ``None`` draws no bar.

    Returns:
        An RGB image of ``W x H`` pixels, plus :func:`caption_height` rows if there is a caption.
    """
    height, width = resized_rgb.shape[:2]
    th, tw = height // token_size, width // token_size
    if th * token_size != height or tw * token_size != width:
        raise ValueError(f"Image {width}x{height} is not a whole number of {token_size}-pixel tokens.")
    keep = np.asarray(keep, dtype=bool).reshape(th, tw)
    pixel_keep = np.repeat(np.repeat(keep, token_size, axis=0), token_size, axis=1)
    pruned = _blend(resized_rgb, PRUNED_TINT, PRUNED_ALPHA)
    yy, xx = np.mgrid[0:height, 0:width]
    hatch = (xx + yy) % HATCH_PERIOD < 2
    pruned[hatch] = _blend(pruned[hatch], HATCH_COLOUR, HATCH_ALPHA)
    out = np.where(pixel_keep[..., None], resized_rgb, pruned)
    # Faint grid on the first row and column of every token.
    out[::token_size] = _blend(out[::token_size], GRID_COLOUR, GRID_ALPHA)
    off_row = np.ones(height, dtype=bool)
    off_row[::token_size] = False
    out[off_row, ::token_size] = _blend(out[off_row, ::token_size], GRID_COLOUR, GRID_ALPHA)
    picture = Image.fromarray(out, "RGB")
    if caption is None:
        return picture
    bar = caption_height(width)
    canvas = Image.new("RGB", (width, height + bar), CAPTION_BACKGROUND)
    canvas.paste(picture, (0, 0))
    _draw_caption(canvas, caption, top=height, bar=bar, kept_fraction=float(keep.mean()))
    return canvas


def _draw_caption(canvas: Image.Image, caption: str, *, top: int, bar: int, kept_fraction: float) -> None:
    """Caption bar: a kept-share meter, the text, and a legend swatch for pruned tokens."""
    draw = ImageDraw.Draw(canvas)
    width = canvas.width
    pad = max(4, bar // 4)
    # Meter: the kept share of the image's tokens.
    meter_w = max(40, width // 8)
    y0, y1 = top + pad, top + bar - pad
    draw.rectangle((pad, y0, pad + meter_w, y1), fill=_PRUNED_WHITE, outline=CAPTION_TEXT)
    if kept_fraction > 0:
        draw.rectangle((pad, y0, pad + round(meter_w * kept_fraction), y1), fill=CAPTION_ACCENT)
    x = pad * 2 + meter_w + pad
    # Shrink the text until it fits; a very narrow image keeps only the first clause.
    size = max(10, int(bar * 0.5))
    while size > 8 and draw.textlength(caption, font=_font(size)) > width - x - pad:
        size -= 1
    font = _font(size)
    if draw.textlength(caption, font=font) > width - x - pad:
        caption = caption.split(",")[0]
        while len(caption) > 1 and draw.textlength(caption, font=font) > width - x - pad:
            caption = caption[:-2] + "\u2026"
    draw.text((x, top + bar / 2), caption, fill=CAPTION_TEXT, font=font, anchor="lm")
    # Legend: a dimmed swatch = pruned, at the right edge if it fits.
    legend = "pruned"
    text_w = draw.textlength(legend, font=font)
    caption_end = x + draw.textlength(caption, font=font)
    swatch = y1 - y0
    lx = width - pad - text_w - pad - swatch
    if lx > caption_end + 2 * pad:
        white = np.full((swatch, swatch, 3), 255, dtype=np.uint8)
        sample = render_overlay(white, np.zeros((1, 1), dtype=bool), token_size=swatch)
        canvas.paste(sample, (round(lx), y0))
        draw.rectangle((lx, y0, lx + swatch, y1), outline=CAPTION_TEXT)
        draw.text((lx + swatch + pad, top + bar / 2), legend, fill=CAPTION_TEXT, font=font, anchor="lm")
