"""Overlay pictures: which 32x32 tokens PixelPrune keeps and which it prunes.

The picture is the image as the model sees it (after the processor's resize, so token borders fall
on exact pixel rows and columns):

* kept tokens keep their pixels unchanged (except the faint grid line on their top and left edge);
* pruned tokens are faded into a slate tint and hatched diagonally (visible on light and dark
  content alike);
* a faint token grid is drawn on the first pixel row and column of every token;
* a caption bar below the image says how many tokens were kept, with a kept-share meter and a legend;
  it wraps its text and grows in height rather than cutting anything off, and an image narrower
  than :data:`MIN_CAPTION_WIDTH` gets a wider canvas (the image at its left edge).

Exact property (tested): in every token, the pixels off the grid line (rows and columns 1..31) are
the resized image's pixels if the token is kept and differ from them if it is pruned (the tint
changes any colour but its own, and hatch pixels then move further towards the hatch colour).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["GRID_ALPHA", "PRUNED_ALPHA", "PRUNED_TINT", "CaptionLayout", "caption_height", "caption_layout", "render_overlay"]

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


MIN_CAPTION_WIDTH = 256  # narrower images get a wider canvas so the caption stays readable
MIN_FONT, MAX_FONT = 11, 22
LEGEND = "pruned"


@dataclass(frozen=True)
class CaptionLayout:
    """Where the caption bar's parts go. Boxes are ``(left, top, right, bottom)`` in pixels, relative
    to the bar's top-left corner, right/bottom exclusive."""

    width: int  # of the bar (and the canvas): max(image width, MIN_CAPTION_WIDTH)
    height: int
    font_size: int
    meter: tuple[int, int, int, int]
    swatch: tuple[int, int, int, int]  # the legend's pruned-token sample
    legend_text: tuple[int, int, int, int]
    lines: tuple[str, ...]  # the caption, word-wrapped; " ".join(lines) is the whole caption
    line_boxes: tuple[tuple[int, int, int, int], ...]


def _text_box(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> tuple[int, int]:
    """Width and height of ``text`` drawn with its top-left anchor at (0, 0), ink included."""
    left, top, right, bottom = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), text, font=font, anchor="lt")
    return math.ceil(right), math.ceil(bottom)


def _wrap(words: list[str], font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: int) -> list[str]:
    """Greedy word wrap; a single word wider than ``width`` gets a line of its own."""
    lines: list[str] = []
    for word in words:
        if lines and _text_box(f"{lines[-1]} {word}", font)[0] <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def caption_layout(image_width: int, caption: str) -> CaptionLayout:
    """Lay out the caption bar for an image ``image_width`` pixels wide: meter, caption text and
    legend on one row when they fit, else the meter and the legend on the first row and the caption
    word-wrapped below. Nothing is ever cut off: the bar grows with the text, and the canvas is at
    least :data:`MIN_CAPTION_WIDTH` wide."""
    width = max(image_width, MIN_CAPTION_WIDTH)
    size = max(MIN_FONT, min(MAX_FONT, round(width / 64)))
    font = _font(size)
    pad = max(4, size // 2)
    row = _text_box("Ag", font)[1] + pad  # one text row (ascender to descender) plus breathing room
    meter_w = max(48, min(160, width // 8))
    legend_w, _ = _text_box(LEGEND, font)
    swatch_side = row - pad // 2
    legend_total = swatch_side + pad // 2 + legend_w
    caption_w, _ = _text_box(caption, font)
    one_row = pad + meter_w + 2 * pad + caption_w + 2 * pad + legend_total + pad <= width
    top = pad
    meter = (pad, top, pad + meter_w, top + row)
    legend_left = width - pad - legend_total
    swatch = (legend_left, top + (row - swatch_side) // 2, legend_left + swatch_side, top + (row - swatch_side) // 2 + swatch_side)
    legend_text = (swatch[2] + pad // 2, top, swatch[2] + pad // 2 + legend_w, top + row)
    if one_row:
        lines = [caption]
        boxes = [(meter[2] + 2 * pad, top, meter[2] + 2 * pad + caption_w, top + row)]
        height = top + row + pad
    else:
        lines = _wrap(caption.split(), font, width - 2 * pad)
        boxes = []
        y = top + row + pad // 2
        for line in lines:
            boxes.append((pad, y, pad + _text_box(line, font)[0], y + row))
            y += row
        height = y + pad
    return CaptionLayout(
        width=width, height=height, font_size=size, meter=meter, swatch=swatch, legend_text=legend_text,
        lines=tuple(lines), line_boxes=tuple(boxes),
    )


def caption_height(width: int, caption: str) -> int:
    """Height in pixels of the caption bar drawn under an overlay of ``width`` pixels."""
    return caption_layout(width, caption).height


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
        An RGB image of ``W x H`` pixels; with a caption, :func:`caption_layout` rows are added below
        and the canvas is ``max(W, MIN_CAPTION_WIDTH)`` wide.
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
    layout = caption_layout(width, caption)
    canvas = Image.new("RGB", (layout.width, height + layout.height), CAPTION_BACKGROUND)
    canvas.paste(picture, (0, 0))
    _draw_caption(canvas, layout, top=height, kept_fraction=float(keep.mean()))
    return canvas


def _text_anchor(box: tuple[int, int, int, int], top: int) -> tuple[float, float]:
    """Where a text is drawn with anchor ``"lm"`` (left, vertical middle) to sit centred in ``box``."""
    return box[0], top + (box[1] + box[3]) / 2


def _shift(box: tuple[int, int, int, int], top: int) -> tuple[int, int, int, int]:
    return box[0], box[1] + top, box[2], box[3] + top


def _draw_caption(canvas: Image.Image, layout: CaptionLayout, *, top: int, kept_fraction: float) -> None:
    """Caption bar: a kept-share meter, the text, and a legend swatch for pruned tokens."""
    draw = ImageDraw.Draw(canvas)
    font = _font(layout.font_size)
    left, y0, right, y1 = _shift(layout.meter, top)
    draw.rectangle((left, y0, right - 1, y1 - 1), fill=_PRUNED_WHITE, outline=CAPTION_TEXT)
    if kept_fraction > 0:
        draw.rectangle((left, y0, left + round((right - 1 - left) * kept_fraction), y1 - 1), fill=CAPTION_ACCENT)
    for line, box in zip(layout.lines, layout.line_boxes):
        draw.text(_text_anchor(box, top), line, fill=CAPTION_TEXT, font=font, anchor="lm")
    sl, st, sr, sb = _shift(layout.swatch, top)
    white = np.full((sb - st, sr - sl, 3), 255, dtype=np.uint8)
    canvas.paste(render_overlay(white, np.zeros((1, 1), dtype=bool), token_size=sb - st), (sl, st))
    draw.rectangle((sl, st, sr - 1, sb - 1), outline=CAPTION_TEXT)
    draw.text(_text_anchor(layout.legend_text, top), LEGEND, fill=CAPTION_TEXT, font=font, anchor="lm")
