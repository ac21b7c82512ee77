"""Tiny video files for tests, written with PyAV (``av``; import this module only where it is installed).

Every container gets a lossless codec, so decoded frames equal the written ones and pixel-identical
regions stay pixel-identical (the selector's oracles rely on it):

========  ============  ========================================================================
suffix    codec         note
========  ============  ========================================================================
.mp4      libx264rgb    qp 0 (lossless RGB H.264)
.mkv      ffv1          Matroska: the header has no frame count (PyAV reports 0 frames)
.webm     libvpx-vp9    lossless; also no frame count in the header
.avi      ffv1
.mov      png
========  ============  ========================================================================
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

CODECS = {
    ".mp4": ("libx264rgb", "rgb24", {"qp": "0"}),
    ".mkv": ("ffv1", "bgr0", {}),
    ".webm": ("libvpx-vp9", "gbrp", {"lossless": "1"}),
    ".avi": ("ffv1", "bgr0", {}),
    ".mov": ("png", "rgb24", {}),
}


def write_clip(path: Path, frames: np.ndarray, fps: int = 4) -> Path:
    """Write ``frames`` ``(n, H, W, 3)`` uint8 to ``path`` at ``fps`` (codec by suffix, :data:`CODECS`)."""
    codec, pix_fmt, options = CODECS[path.suffix]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = pix_fmt
        stream.options = dict(options)
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def decode_all(path: Path) -> np.ndarray:
    """Every frame of ``path`` as ``(n, H, W, 3)`` uint8 RGB."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def typing_frames(page: np.ndarray, n: int, *, seed: int = 0) -> np.ndarray:
    """``page`` ``(H, W, 3)`` with a dark "word" typed per frame along one line (a screen recording)."""
    rng = np.random.default_rng(seed)
    frames = np.repeat(page[None], n, axis=0)
    height, width = page.shape[:2]
    y = height // 2
    for f in range(n):
        x = 8 + 12 * f
        if x + 10 > width:
            break
        glyph = np.where(rng.random((14, 10, 1)) < 0.45, 20, 255).astype(np.uint8)
        frames[f:, y : y + 14, x : x + 10] = glyph
    return frames
