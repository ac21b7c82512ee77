"""The overlay picture's caption bar at any image size: nothing cut off, the legend always there."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pixelprune.overlay import (
    CAPTION_BACKGROUND,
    MIN_CAPTION_WIDTH,
    _font,
    _text_anchor,
    caption_layout,
    render_overlay,
)

CAPTION = "PixelPrune: 3 / 16 tokens kept (18.8 %), 16 x 1 grid, threshold 0.05 mae, pred_2d"


def _inside(box, width, height) -> bool:
    left, top, right, bottom = box
    return 0 <= left < right <= width and 0 <= top < bottom <= height


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@pytest.mark.parametrize(("width", "height"), [(32, 512), (64, 64), (512, 32), (320, 256), (1280, 800), (4096, 32)])
def test_caption_layout_keeps_every_part_inside_and_apart(width, height):
    layout = caption_layout(width, CAPTION)
    assert layout.width == max(width, MIN_CAPTION_WIDTH)
    assert " ".join(layout.lines) == CAPTION  # the whole caption, nothing cut off or elided
    boxes = [layout.meter, layout.swatch, layout.legend_text, *layout.line_boxes]
    for box in boxes:
        assert _inside(box, layout.width, layout.height), (box, layout)
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not _overlap(a, b), (a, b, layout)
    # Every text box holds its text's ink (measured with the font it is drawn in).
    probe = Image.new("RGB", (1, 1))
    from PIL import ImageDraw

    draw = ImageDraw.Draw(probe)
    font = _font(layout.font_size)
    for text, box in [*zip(layout.lines, layout.line_boxes), ("pruned", layout.legend_text)]:
        left, top, right, bottom = draw.textbbox(_text_anchor(box, 0), text, font=font, anchor="lm")
        assert box[0] <= left and right <= box[2] and box[1] <= top and bottom <= box[3], (text, box)


@pytest.mark.parametrize(("width", "height"), [(32, 512), (64, 64), (1280, 800)])
def test_rendered_caption_draws_text_meter_and_legend(width, height):
    image = np.full((height, width, 3), 255, dtype=np.uint8)
    keep = np.zeros((height // 32, width // 32), dtype=bool)
    keep.flat[0] = True
    picture = np.array(render_overlay(image, keep, caption=CAPTION))
    layout = caption_layout(width, CAPTION)
    assert picture.shape == (height + layout.height, layout.width, 3)
    bar = picture[height:]

    def region(box):
        return bar[box[1]:box[3], box[0]:box[2]]

    background = np.asarray(CAPTION_BACKGROUND, dtype=np.uint8)
    for box in (*layout.line_boxes, layout.legend_text, layout.meter):
        assert (region(box) != background).any(axis=-1).sum() > 5, box  # ink in every part
    # The legend swatch is a pruned token as the picture draws one (inside its outline).
    sl, st, sr, sb = layout.swatch
    side = sb - st
    expected = np.array(render_overlay(np.full((side, side, 3), 255, np.uint8), np.zeros((1, 1), bool), token_size=side))
    assert np.array_equal(region(layout.swatch)[2:-1, 2:-1], expected[2:-1, 2:-1])
    # Outside the image and outside the laid-out parts, the bar is plain background.
    mask = np.ones(bar.shape[:2], dtype=bool)
    for box in (layout.meter, layout.swatch, layout.legend_text, *layout.line_boxes):
        mask[box[1]:box[3], box[0]:box[2]] = False
    assert (bar[mask] == background).all()
    if width < MIN_CAPTION_WIDTH:  # the canvas right of a narrow image is background too
        assert (picture[:height, width:] == background).all()


def test_contact_sheet_tiles_slices_in_rows_and_shrinks_wide_frames():
    from pixelprune.overlay import MAX_TILE_WIDTH, SHEET_MAX_WIDTH, render_contact_sheet

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (9, 64, 1280, 3), dtype=np.uint8)  # 2x wider than MAX_TILE_WIDTH
    keeps = rng.random((9, 2, 40)) < 0.5
    sheet = render_contact_sheet(frames, keeps, [f"slice {s}: a label long enough to wrap twice" for s in range(9)],
                                 caption=CAPTION)
    assert MAX_TILE_WIDTH == 640 and sheet.size[0] <= SHEET_MAX_WIDTH
    columns = (SHEET_MAX_WIDTH + 4) // (640 + 4)
    assert sheet.size[0] == columns * 640 + (columns - 1) * 4
    assert sheet.size[1] > 3 * 32  # 9 tiles of 32 px (shrunk) in 3 rows, labels and a caption bar
    tile = np.array(render_overlay(frames[0], keeps[0]).reduce(2))
    pixels = np.array(sheet)
    assert any(np.array_equal(pixels[y : y + 32, :640], tile) for y in range(pixels.shape[0] - 31))
    with pytest.raises(ValueError, match="need the same number"):
        render_contact_sheet(frames, keeps[:3], ["x"] * 9)


@pytest.mark.parametrize("tiles,columns", [(1, 1), (5, 5), (6, 3), (7, 4), (11, 4), (12, 4)])
def test_contact_sheet_balances_its_rows(tiles, columns):
    from pixelprune.overlay import SHEET_MAX_WIDTH, render_contact_sheet

    # 480-px tiles: at most 5 fit in SHEET_MAX_WIDTH; the rows a sheet needs are filled evenly
    assert (SHEET_MAX_WIDTH + 4) // (480 + 4) == 5
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (tiles, 32, 480, 3), dtype=np.uint8)
    keeps = rng.random((tiles, 1, 15)) < 0.5
    sheet = render_contact_sheet(frames, keeps, [f"slice {s}" for s in range(tiles)], caption=CAPTION)
    assert sheet.size[0] == columns * 480 + (columns - 1) * 4


def test_animation_is_a_looping_gif_with_one_frame_per_input():
    import io

    from pixelprune.overlay import render_animation

    frames = np.full((4, 64, 96, 3), 255, dtype=np.uint8)
    keeps = np.zeros((4, 2, 3), dtype=bool)
    keeps[:, 0, 0] = True
    data = render_animation(frames, keeps, [f"frame {i}" + " wraps" * (10 * i) for i in range(4)], frame_ms=250)
    gif = Image.open(io.BytesIO(data))
    assert gif.format == "GIF" and gif.n_frames == 4 and gif.info["duration"] == 250 and gif.info["loop"] == 0
    assert gif.size[0] == MIN_CAPTION_WIDTH and gif.size[1] > 64  # longer captions: all frames padded to the tallest
