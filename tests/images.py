"""Deterministic synthetic test images (PIL, RGB) with known redundancy.

Sides should be multiples of 32 (one merged token = 32x32 px) so that the stock image processor
keeps the native resolution and pixel-identical regions stay pixel-identical.

- :func:`document_image`: white page with dark text-like blocks; ``aligned=True`` starts every
  block on the 32 px token grid, ``aligned=False`` at arbitrary offsets (more tokens touched).
- :func:`ui_image`: flat-coloured header, sidebar, panels and buttons (a GUI screenshot).
- :func:`noise_image`: uniform random pixels: no two tokens are equal, nothing is prunable.
- :func:`gradient_image`: a smooth horizontal ramp: nothing is pixel-identical, but every token
  is close to its neighbour (exercises thresholds > 0 and anchored vs sliding).
- :func:`blank_image`: one flat colour: everything but token 0 is prunable.
- :func:`word_page_image`: white page with dark "words" on a few lines in the top 70 %, right
  margin blank (not token-aligned).
- :func:`sparse_blocks_image`: white page with three coloured, token-aligned 32 px blocks.
- :func:`color_gradient_image`: a 2-D colour gradient: no two tokens equal, neighbours close.
- :func:`uint8_noise_image`: uniform random pixels drawn directly as ``uint8`` (a different pixel
  stream from :func:`noise_image` for the same seed; both prune nothing).

Videos are lists of same-size frames (PIL), as a processor accepts them:

- :func:`typing_video`: a word page on which a few "words" appear frame by frame (a screen
  recording: slice 0 prunes like a page, later slices mostly repeat the previous one).
- :func:`noise_video`: every frame fresh uniform noise: nothing prunable.

Every factory is ``(width, height, *, seed)`` (no seed where the image is not random) and
deterministic; tests compare outputs against references computed on these exact pixels, so a
factory's pixels must never change (add a new factory instead).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

TOKEN_PX = 32


def _rgb(array: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8), mode="RGB")


def blank_image(width: int = 224, height: int = 224, color: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """A single flat colour."""
    return Image.new("RGB", (width, height), color)


def noise_image(width: int = 224, height: int = 224, *, seed: int = 0) -> Image.Image:
    """Uniform random pixels (nothing redundant)."""
    rng = np.random.default_rng(seed)
    return _rgb(rng.integers(0, 256, size=(height, width, 3)))


def gradient_image(width: int = 224, height: int = 224) -> Image.Image:
    """A horizontal grey ramp from black to white, identical on every row."""
    ramp = np.linspace(0, 255, width).round().astype(np.uint8)
    return _rgb(np.repeat(np.repeat(ramp[None, :, None], height, axis=0), 3, axis=2))


def _glyph_row(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A line of 'text': random dark glyph-sized strokes on white."""
    line = np.full((height, width), 255, dtype=np.uint8)
    x = 0
    while x < width:
        glyph = int(rng.integers(3, 8))
        if rng.random() < 0.15:  # word gap
            x += glyph
            continue
        strokes = rng.random((height - 2, glyph)) < 0.45
        line[1 : height - 1, x : x + glyph][strokes[:, : max(0, min(glyph, width - x))]] = int(rng.integers(0, 80))
        x += glyph + 1
    return line


def document_image(width: int = 320, height: int = 448, *, aligned: bool = True, seed: int = 0) -> Image.Image:
    """A white page with a title, paragraphs of text-like lines and a table-like grid.

    With ``aligned=True`` every block starts on the 32 px grid and the margins are whole tokens,
    so many tokens are pure white; with ``aligned=False`` blocks start at odd offsets.
    """
    rng = np.random.default_rng(seed)
    page = np.full((height, width), 255, dtype=np.uint8)
    margin = TOKEN_PX if aligned else 21
    y = margin
    line_h = 12 if not aligned else 16
    block = 0
    while y + line_h < height - margin:
        n_lines = int(rng.integers(2, 5))
        right = width - margin - (0 if aligned else int(rng.integers(0, 9)))
        for _ in range(n_lines):
            if y + line_h >= height - margin:
                break
            length = int(rng.integers((right - margin) // 2, right - margin + 1))
            if aligned:
                length = max(TOKEN_PX, length // TOKEN_PX * TOKEN_PX)
            page[y : y + line_h, margin : margin + length] = _glyph_row(rng, line_h, length)
            y += line_h + (0 if aligned else 5)
        block += 1
        # paragraph gap: one or two blank token rows when aligned, an odd gap otherwise
        y = ((y + TOKEN_PX - 1) // TOKEN_PX + int(rng.integers(1, 3))) * TOKEN_PX if aligned else y + int(rng.integers(9, 30))
    return _rgb(np.repeat(page[:, :, None], 3, axis=2))


def ui_image(width: int = 448, height: int = 320, *, seed: int = 0) -> Image.Image:
    """A GUI-like screenshot: header bar, sidebar, flat panels, buttons and a little text."""
    rng = np.random.default_rng(seed)
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[:] = (240, 242, 245)  # window background
    img[:40] = (33, 99, 200)  # header bar (not token-aligned on purpose)
    img[40:, :96] = (250, 250, 250)  # sidebar
    for i in range(int(rng.integers(3, 6))):  # sidebar menu items
        top = 56 + 28 * i
        img[top : top + 14, 12 : 12 + int(rng.integers(40, 76))] = (90, 90, 90)
    for k in range(2):  # content panels
        top, left = 64 + 128 * k, 128
        img[top : top + 96, left : width - 32] = (255, 255, 255)
        img[top + 12 : top + 24, left + 12 : left + 12 + int(rng.integers(80, 200))] = (20, 20, 20)
        bx = width - 32 - 96
        img[top + 60 : top + 84, bx : bx + 80] = (46, 160, 67)  # button
        img[top + 68 : top + 76, bx + 16 : bx + 64] = (255, 255, 255)
    return _rgb(img)


def word_page_image(width: int, height: int, *, seed: int = 0) -> Image.Image:
    """A white page with dark 'words' on a few text lines: blank margins and gaps are redundant."""
    rng = np.random.default_rng(seed)
    page = np.full((height, width, 3), 255, dtype=np.uint8)
    for top in range(8, int(height * 0.7), 24):  # text in the top 70%, right margin blank
        if rng.random() < 0.3:
            continue  # a blank line
        x = 8 + int(rng.integers(0, 24))
        while x < width * 0.55:
            w = int(rng.integers(6, 30))
            page[top : top + 9, x : x + w] = rng.integers(0, 90, 3, dtype=np.uint8)
            x += w + int(rng.integers(4, 12))
    return _rgb(page)


def sparse_blocks_image(width: int = 160, height: int = 128, *, seed: int = 0) -> Image.Image:
    """White page with three coloured, token-aligned 32 px blocks (most tokens prunable at tau = 0)."""
    rng = np.random.default_rng(seed)
    img = np.full((height, width, 3), 255, np.uint8)
    for _ in range(3):
        y, x = TOKEN_PX * rng.integers(0, height // TOKEN_PX), TOKEN_PX * rng.integers(0, width // TOKEN_PX)
        img[y : y + TOKEN_PX, x : x + TOKEN_PX] = rng.integers(0, 256, size=(TOKEN_PX, TOKEN_PX, 3))
    return _rgb(img)


def color_gradient_image(width: int = 128, height: int = 96) -> Image.Image:
    """A 2-D colour gradient: no two tokens identical, neighbours close (a threshold > 0 prunes)."""
    y, x = np.mgrid[0:height, 0:width]
    value = (x * 100 // width + y * 100 // height).astype(np.uint8)
    return _rgb(np.stack([value, value // 2 + 50, 200 - value], axis=-1))


def uint8_noise_image(width: int = 96, height: int = 64, *, seed: int = 0) -> Image.Image:
    """Uniform random pixels drawn as ``uint8`` (nothing redundant; not :func:`noise_image`'s pixels)."""
    rng = np.random.default_rng(seed)
    return _rgb(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8))


def typing_video(width: int = 192, height: int = 128, frames: int = 6, *, seed: int = 0) -> list[Image.Image]:
    """A word page (:func:`word_page_image`) on which one dark "word" appears every second frame,
    at a random place: the frames of a temporal slice (two frames) are identical except when a
    word lands between them, and each slice repeats the previous one except where words landed."""
    rng = np.random.default_rng(seed + 1000)
    page = np.array(word_page_image(width, height, seed=seed))
    out = []
    for index in range(frames):
        if index and index % 2 == 1:
            top, left = int(rng.integers(0, height - 10)), int(rng.integers(0, width - 24))
            page[top : top + 9, left : left + int(rng.integers(8, 24))] = rng.integers(0, 90, 3, dtype=np.uint8)
        out.append(_rgb(page.copy()))
    return out


def noise_video(width: int = 96, height: int = 64, frames: int = 4, *, seed: int = 0) -> list[Image.Image]:
    """Fresh uniform ``uint8`` noise in every frame: no token equals a neighbour or its predecessor."""
    rng = np.random.default_rng(seed + 2000)
    return [_rgb(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)) for _ in range(frames)]
