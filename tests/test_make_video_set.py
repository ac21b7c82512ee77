"""``benchmarks/make_video_set.py`` refuses clips that do not move as intended (a scroll that stops,
a frame that repeats, a slide that changes between switches), with a fake browser: no Chromium."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import make_video_set as mvs  # noqa: E402

W, H = 64, 40


class FakeBrowser:
    """Answers the page scripts the capture functions send; ``screen(state)`` draws a frame."""

    def __init__(self, *, max_scroll: int = 10_000, stuck_after: int | None = None, frozen_frames=(),
                 slide_glitch: int | None = None) -> None:
        self.max_scroll, self.stuck_after = max_scroll, stuck_after
        self.frozen_frames, self.slide_glitch = set(frozen_frames), slide_glitch
        self.y, self.slide, self.typed, self.shots = 0, 0, 0, 0

    def load(self, path: Path) -> None:
        pass

    def settle(self) -> None:
        pass

    def page(self, method: str, params: dict | None = None) -> dict:
        if method == "Input.insertText":
            self.typed += len(params["text"])
        return {}

    def js(self, expr: str):
        if "scrollHeight" in expr:
            return self.max_scroll
        if m := re.search(r"scrollTo\(\{top: (\d+)", expr):
            want = int(m.group(1))
            limit = self.max_scroll if self.stuck_after is None else self.stuck_after
            self.y = min(want, limit)  # a page that stops scrolling clamps scrollY
            return self.y
        if m := re.match(r"show\((\d+)\)", expr):
            self.slide = int(m.group(1))
            return None
        if expr.startswith("["):  # the typed lengths of the form fields
            return [self.typed]
        return None

    def screenshot(self) -> np.ndarray:
        n = self.shots
        self.shots += 1
        frame = np.zeros((H, W, 3), np.uint8)
        state = (self.y, self.slide, self.typed)
        if n in self.frozen_frames:  # the screen did not repaint: same picture as before
            state = self._last
        self._last = state
        frame[0, 0] = [state[0] % 256, state[1], state[2] % 256]
        frame[0, 1] = [state[0] // 256, 0, 0]
        if self.slide_glitch is not None and n == self.slide_glitch:
            frame[1, 1] = 255  # something changed between two slide switches
        return frame


PAGE = Path("/nonexistent.html")


def test_scroll_that_moves_every_frame_passes():
    shots = mvs.capture_scroll(FakeBrowser(), PAGE, W, H, 6)
    assert len(shots) == 6


def test_scroll_that_stops_after_three_frames_fails():
    step = round(mvs.SCROLL_FRACTION * H)
    with pytest.raises(mvs.ClipCheckError, match=r"frame 3: scrollY is 24, expected 36"):
        mvs.capture_scroll(FakeBrowser(stuck_after=2 * step), PAGE, W, H, 6)


def test_scroll_page_too_short_fails():
    with pytest.raises(mvs.ClipCheckError, match="make the page longer"):
        mvs.capture_scroll(FakeBrowser(max_scroll=20), PAGE, W, H, 6)


def test_scroll_frame_that_does_not_repaint_fails():
    with pytest.raises(mvs.ClipCheckError, match="frame 4 is identical to frame 3"):
        mvs.capture_scroll(FakeBrowser(frozen_frames={4}), PAGE, W, H, 6)


def test_typing_checks_characters_and_frames():
    assert len(mvs.capture_typing(FakeBrowser(), PAGE, W, H, 5)) == 5
    with pytest.raises(mvs.ClipCheckError, match="frame 2 is identical to frame 1"):
        mvs.capture_typing(FakeBrowser(frozen_frames={2}), PAGE, W, H, 5)


def test_slides_change_exactly_at_switches():
    frames = 3 * mvs.SLIDE_HOLD
    shots = mvs.capture_slides(FakeBrowser(), PAGE, W, H, frames)
    changed = [bool(np.any(shots[f] != shots[f - 1])) for f in range(1, frames)]
    assert changed == [f % mvs.SLIDE_HOLD == 0 for f in range(1, frames)]
    with pytest.raises(mvs.ClipCheckError, match="frame 2: expected the same slide"):
        mvs.capture_slides(FakeBrowser(slide_glitch=2), PAGE, W, H, frames)
    with pytest.raises(mvs.ClipCheckError, match=f"frame {mvs.SLIDE_HOLD}: expected a new slide"):
        mvs.capture_slides(FakeBrowser(frozen_frames={mvs.SLIDE_HOLD}), PAGE, W, H, frames)


def test_generated_pages_are_deterministic_and_long_enough():
    assert mvs.docs_page() == mvs.docs_page()
    assert mvs.slides_page(6).count("<section") == 6
    chars = sum(len(t) for _, t in mvs.TYPING_SCRIPT)
    assert chars >= (mvs.FRAMES - 1) * mvs.TYPE_CHARS_PER_FRAME
