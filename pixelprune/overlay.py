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

Videos, in the same visual language: :func:`render_contact_sheet` tiles one overlay per temporal
slice (its first frame, labelled with the slice's time and kept count) above one caption bar, and
:func:`render_animation` is an animated GIF of every frame the model sees with its slice's overlay.
Frames wider than :data:`MAX_TILE_WIDTH` are shrunk by a whole factor (box filter) after drawing;
smaller ones keep the exact property above.
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "GRID_ALPHA", "MAX_TILE_WIDTH", "PRUNED_ALPHA", "PRUNED_TINT", "CaptionLayout", "caption_height", "caption_layout",
    "render_animation", "render_contact_sheet", "render_overlay",
]

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
    return picture if caption is None else _captioned(picture, caption, float(keep.mean()))


def _captioned(picture: Image.Image, caption: str, kept_fraction: float) -> Image.Image:
    """``picture`` with the caption bar (:func:`caption_layout`) below it."""
    width, height = picture.size
    layout = caption_layout(width, caption)
    canvas = Image.new("RGB", (layout.width, height + layout.height), CAPTION_BACKGROUND)
    canvas.paste(picture, (0, 0))
    _draw_caption(canvas, layout, top=height, kept_fraction=kept_fraction)
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


MAX_TILE_WIDTH = 640  # video frames wider than this are shrunk (by a whole factor) in sheets and animations
SHEET_MAX_WIDTH = 2560  # the contact sheet adds columns up to this width
SHEET_GAP = 4
MIN_TILE_LABEL_WIDTH = 128


def _shrink(picture: Image.Image, factor: int) -> Image.Image:
    return picture if factor == 1 else picture.reduce(factor)


def _shrink_factor(width: int) -> int:
    return max(1, math.ceil(width / MAX_TILE_WIDTH))


def render_contact_sheet(
    frames: np.ndarray,
    keeps: np.ndarray,
    labels: list[str],
    *,
    token_size: int = 32,
    caption: str | None = None,
) -> Image.Image:
    """One overlay per temporal slice of a video, in rows, each under its label, and one caption bar
    (kept-share meter over all slices, text, legend) below.

    Args:
        frames: ``(t, H, W, 3)`` uint8, one frame per slice (as the model sees it).
        keeps: ``(t, H / token_size, W / token_size)`` bool keep grids.
        labels: one text per slice (word-wrapped to the tile's width, never cut off).
        token_size, caption: as for :func:`render_overlay`.
    """
    if len(frames) != len(keeps) or len(frames) != len(labels) or not len(frames):
        raise ValueError(f"Got {len(frames)} frames, {len(keeps)} keep grids and {len(labels)} labels; "
                         "need the same number (>= 1) of each.")
    factor = _shrink_factor(frames.shape[2])
    tiles = [_shrink(render_overlay(f, k, token_size=token_size), factor) for f, k in zip(frames, keeps)]
    tile_w, tile_h = tiles[0].size
    cell_w = max(tile_w, MIN_TILE_LABEL_WIDTH)
    size = max(MIN_FONT, min(14, round(cell_w / 24)))
    font = _font(size)
    pad = max(3, size // 3)
    line_h = _text_box("Ag", font)[1] + pad
    wrapped = [_wrap(label.split(), font, cell_w - 2 * pad) for label in labels]
    label_h = max(len(lines) for lines in wrapped) * line_h + pad
    columns = max(1, min(len(tiles), (SHEET_MAX_WIDTH + SHEET_GAP) // (cell_w + SHEET_GAP)))
    grid_rows = math.ceil(len(tiles) / columns)
    columns = math.ceil(len(tiles) / grid_rows)  # balanced rows: 6 tiles in 2 rows of 3, not 5 + 1
    cell_h = label_h + tile_h
    sheet_w = columns * cell_w + (columns - 1) * SHEET_GAP
    sheet_h = grid_rows * cell_h + (grid_rows - 1) * SHEET_GAP
    sheet = Image.new("RGB", (sheet_w, sheet_h), CAPTION_BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for i, (tile, lines) in enumerate(zip(tiles, wrapped)):
        x = (i % columns) * (cell_w + SHEET_GAP)
        y = (i // columns) * (cell_h + SHEET_GAP)
        for j, line in enumerate(lines):
            draw.text((x + pad, y + pad + j * line_h + line_h / 2), line, fill=CAPTION_TEXT, font=font, anchor="lm")
        sheet.paste(tile, (x, y + label_h))
    if caption is None:
        return sheet
    return _captioned(sheet, caption, float(np.asarray(keeps, dtype=bool).mean()))


def render_animation(
    frames: np.ndarray,
    keeps: np.ndarray,
    captions: list[str],
    *,
    token_size: int = 32,
    frame_ms: int = 500,
) -> bytes:
    """An animated GIF (looping) of ``frames`` ``(n, H, W, 3)`` uint8, each drawn as
    :func:`render_overlay` with its keep grid (``keeps[i]``) and caption, ``frame_ms`` per frame.
    Frames of different caption heights are padded to the tallest (caption background)."""
    if len(frames) != len(keeps) or len(frames) != len(captions) or not len(frames):
        raise ValueError(f"Got {len(frames)} frames, {len(keeps)} keep grids and {len(captions)} captions; "
                         "need the same number (>= 1) of each.")
    factor = _shrink_factor(frames.shape[2])
    pictures = [_captioned(_shrink(render_overlay(f, k, token_size=token_size), factor), c, float(np.mean(k)))
                for f, k, c in zip(frames, keeps, captions)]
    width = max(p.size[0] for p in pictures)
    height = max(p.size[1] for p in pictures)
    padded = []
    for picture in pictures:
        if picture.size != (width, height):
            canvas = Image.new("RGB", (width, height), CAPTION_BACKGROUND)
            canvas.paste(picture, (0, 0))
            picture = canvas
        padded.append(picture)
    buffer = io.BytesIO()
    padded[0].save(buffer, format="GIF", save_all=True, append_images=padded[1:], duration=max(20, int(frame_ms)),
                   loop=0, disposal=1)
    return buffer.getvalue()
