#!/usr/bin/env python3
"""Regenerate ``assets/sample_recording.mp4``: a screen recording of a bug-report form being typed into.

Headless Chromium renders the benchmark set's form page (``benchmarks/make_video_set.py``: same
page, same typing script, same DevTools driver) at 960 x 544 px, a multiple of the 32-px token, so
the stock video processor does not resize it; 12 frames, 3 characters typed per frame, stored at
2 fps (what Qwen3-VL samples, so every frame is used: 6 temporal slices of two frames). The frames
are encoded losslessly (H.264 RGB, ``-qp 0``), so decoding returns Chromium's pixels exactly and
what stays on screen stays pixel-identical, as on a real screen; ``pixelprune inspect`` then
writes ``assets/sample_recording_overlay.png`` (the contact sheet the README shows).

Needs Chromium, ffmpeg and fonts (Debian: ``apt-get install chromium ffmpeg fonts-dejavu-core``) and
``pixelprune[video]`` with torchvision. Run from the repository root:
``python assets/make_sample_video.py``. Chromium versions render text slightly differently, so a
rerun may change pixels (and kept-token counts) a little.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

ASSETS = Path(__file__).resolve().parent
sys.path.insert(0, str(ASSETS.parent / "benchmarks"))

from make_video_set import Browser, capture_typing, form_page  # noqa: E402

WIDTH, HEIGHT, FRAMES, FPS = 960, 544, 12, 2
CLIP = ASSETS / "sample_recording.mp4"


def main() -> int:
    for tool in ("chromium", "ffmpeg"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (Debian: apt-get install chromium ffmpeg)")
    with tempfile.TemporaryDirectory(prefix="pixelprune-sample-video-") as tmp:
        work = Path(tmp)
        page = work / "form.html"
        page.write_text(form_page())
        with Browser(WIDTH, HEIGHT) as browser:
            shots = capture_typing(browser, page, WIDTH, HEIGHT, FRAMES)
        for i, shot in enumerate(shots):
            Image.fromarray(shot).save(work / f"{i:04d}.png")
        subprocess.run(
            ["ffmpeg", "-loglevel", "error", "-y", "-framerate", str(FPS), "-i", str(work / "%04d.png"),
             "-c:v", "libx264rgb", "-qp", "0", "-preset", "veryslow", "-pix_fmt", "rgb24", str(CLIP)],
            check=True,
        )
    print(f"wrote {CLIP} ({CLIP.stat().st_size:,} bytes)")
    overlay_dir = Path(tempfile.mkdtemp(prefix="pixelprune-sample-overlay-"))
    subprocess.run([sys.executable, "-m", "pixelprune", "inspect", str(CLIP), "--overlay", str(overlay_dir)],
                   check=True)
    shutil.copyfile(overlay_dir / "sample_recording_overlay.png", ASSETS / "sample_recording_overlay.png")
    shutil.rmtree(overlay_dir)
    print(f"wrote {ASSETS / 'sample_recording_overlay.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
