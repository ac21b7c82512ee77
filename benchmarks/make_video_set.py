"""Build the video benchmark set: screen recordings made with headless Chromium, plus natural video.

**Screen recordings** (``type`` = the kind of recording), made from local generated HTML (no network):

* ``scroll``: a long documentation page (fixed top bar and sidebar, headings, paragraphs, code blocks,
  tables, notes) scrolled by a constant 30% of the viewport height every frame, top to bottom.
* ``typing``: a bug-report form filled in at 3 characters per frame (6 characters/s at 2 fps, a
  typist's pace), field after field (name, e-mail, subject, then the description).
* ``slides``: a 16:9 slide deck (title, bullets, bar chart, code, table) switching to the next slide
  every 4 frames (2 s at 2 fps).

Each is captured at 1280x720 (``720p``) and 1920x1080 (``1080p``), device scale factor 1: one
screenshot per state through the Chrome DevTools Protocol (``--remote-debugging-pipe``: no Python
package and no chromedriver needed), at ``--fps`` frames per second of clip time (2: what Qwen3-VL's
video processor samples, so it keeps every frame), and encoded with ffmpeg as H.264 (libx264, CRF 18,
``yuv420p``, a keyframe every 8 s as screen recorders' 250-frame GOP at 30 fps gives). The lossless
PNG frames are kept next to the clip, so benchmarks can tell what the codec costs.

The script checks what it captured and **fails loudly** when a clip does not move as intended:
the page's ``scrollY`` must advance by exactly one step every frame (never clamped at the bottom)
and every frame must differ from the one before; every typing frame must hold 3 more characters
and differ from the one before; slide frames must change exactly at the switch points and nowhere
else. The encoded clips are decoded again (ffmpeg) and checked for frame count and the same change
pattern.

**Natural video** (``type`` = ``natural``): the camera clips Debian's ``opencv-doc`` ships in
``/usr/share/doc/opencv-doc/examples/data/``: ``vtest.avi`` (fixed camera, pedestrians, 768x576,
10 fps, 79.5 s, MS-MPEG4v3) and ``Megamind.avi`` (film trailer, 720x528, 24 fps, 11 s, MPEG-4),
copied as they are (native resolution, original codec: upscaling would invent redundancy). The
package is fetched with ``apt-get download`` and unpacked with ``dpkg-deb`` (not installed).

Apt packages needed (Debian 12): ``chromium`` (renderer) and ``ffmpeg`` (encoder, ``ffprobe``),
plus ``apt-get download opencv-doc`` access for the natural clips (``--no-natural`` skips them)::

    apt-get install chromium ffmpeg            # or: python benchmarks/make_video_set.py --install-tools

Python: only numpy and Pillow (already pixelprune dependencies).

Output (ignored by git): ``benchmarks/data/videos/{screen,natural}/*.{mp4,avi}``, the PNG frames in
``benchmarks/data/videos/frames/<clip>/``, and ``benchmarks/data/videos/manifest.json`` (one record
per clip). Idempotent: a clip whose recorded spec (page, size, fps, encoder settings, script
version) is unchanged and whose files exist is not made again (a rerun takes about a second).

Usage::

    python benchmarks/make_video_set.py              # 6 screen clips + 2 natural clips (~2 min)
    python benchmarks/make_video_set.py --quick      # 720p only, no natural clips
    python benchmarks/make_video_set.py --force      # remake everything
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import io
import json
import logging
import os
import random
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

LOG = logging.getLogger("make_video_set")
BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from common import download_deb, ensure_debian_tools  # noqa: E402

DEFAULT_OUT = BENCH_DIR / "data" / "videos"

# Bump when a page, the capture or the encoding changes: clips made by another version are remade.
VERSION = 1

RESOLUTIONS: dict[str, tuple[int, int]] = {"720p": (1280, 720), "1080p": (1920, 1080)}
SCREEN_KINDS = ("scroll", "typing", "slides")
FRAMES = 24  # 12 s at 2 fps
SCROLL_FRACTION = 0.3  # of the viewport height, per frame
TYPE_CHARS_PER_FRAME = 3
SLIDE_HOLD = 4  # frames per slide
CRF = 18
KEYINT_SECONDS = 8  # libx264's default GOP (250 frames) at 30 fps

OPENCV_PACKAGE = "opencv-doc"
OPENCV_DATA = "usr/share/doc/opencv-doc/examples/data"
NATURAL = [
    ("vtest", "vtest.avi", "fixed camera: pedestrians in a hall (768x576, 10 fps, 79.5 s)"),
    ("megamind", "Megamind.avi", "film trailer: moving camera, cuts (720x528, 24 fps, 11 s)"),
]

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--remote-debugging-pipe", "--mute-audio", "--font-render-hinting=none"]


class ClipCheckError(RuntimeError):
    """A captured or encoded clip does not change from frame to frame as it was meant to."""


@dataclass
class ClipRecord:
    name: str  # e.g. scroll_720p
    type: str  # scroll | typing | slides | natural
    category: str  # screen | natural
    resolution: str  # 720p | 1080p | native
    path: str  # relative to the video folder
    width: int
    height: int
    frames: int
    fps: float
    duration: float
    bytes: int
    codec: str
    source: str
    frames_dir: str | None = None  # lossless PNG frames (screen recordings), relative
    spec: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- tools

def _run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess:
    LOG.debug("$ %s", " ".join(cmd))
    return subprocess.run(cmd, check=True, capture_output=True, **kw)


def ensure_tools(install: bool, natural: bool) -> None:
    """Fail early (or install with apt-get) when Chromium or ffmpeg is missing."""
    ensure_debian_tools({"chromium": "chromium", "ffmpeg": "ffmpeg", "ffprobe": "ffmpeg"}, install=install,
                        apt_reason="the natural clips need a Debian machine (or pass --no-natural)." if natural else None)


class Browser:
    """Headless Chromium driven through the DevTools protocol over ``--remote-debugging-pipe``
    (fd 3: commands in, fd 4: replies out, NUL-separated JSON), one page, fixed viewport."""

    def __init__(self, width: int, height: int) -> None:
        self._profile = tempfile.TemporaryDirectory(prefix="pixelprune-chromium-")
        cmd_r, self._cmd_w = os.pipe()
        self._out_r, out_w = os.pipe()

        def child_fds() -> None:  # in the child: our pipe ends become its fds 3 and 4
            os.dup2(cmd_r, 3)
            os.dup2(out_w, 4)

        self._proc = subprocess.Popen(
            ["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={self._profile.name}", "about:blank"],
            pass_fds=(3, 4), preexec_fn=child_fds, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(cmd_r)
        os.close(out_w)
        self._buf, self._id = b"", 0
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self._session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.page("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        self.page("Page.enable")

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + 60
        while True:
            while b"\0" not in self._buf:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self._out_r], [], [], left)[0]:
                    raise TimeoutError(f"Chromium did not answer {method} within 60 s")
                chunk = os.read(self._out_r, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"Chromium closed the DevTools pipe during {method}")
                self._buf += chunk
            raw, self._buf = self._buf.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:  # events (no id) are skipped
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def page(self, method: str, params: dict | None = None) -> dict:
        return self.send(method, params, self._session)

    def load(self, path: Path) -> None:
        self.page("Page.navigate", {"url": path.as_uri()})
        # wait until the document and its fonts are ready, then two frames
        self.js("new Promise(r => { const go = () => document.fonts.ready.then(() => "
                "requestAnimationFrame(() => requestAnimationFrame(r)));"
                " if (document.readyState === 'complete') go(); else addEventListener('load', go); })")

    def js(self, expression: str) -> Any:
        """Evaluate ``expression`` in the page (awaiting a promise) and return its JSON value."""
        res = self.page("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in res:
            raise RuntimeError(f"page script failed: {res['exceptionDetails'].get('text')} in {expression[:80]!r}")
        return res["result"].get("value")

    def settle(self) -> None:
        """Let layout and paint catch up with the last change (two animation frames)."""
        self.js("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")

    def screenshot(self) -> np.ndarray:
        data = self.page("Page.captureScreenshot", {"format": "png"})["data"]
        with Image.open(io.BytesIO(base64.b64decode(data))) as im:
            return np.asarray(im.convert("RGB"))

    def close(self) -> None:
        try:
            self.send("Browser.close")
            self._proc.wait(timeout=20)
        except Exception:  # already gone or hung: make sure it is
            self._proc.kill()
            self._proc.wait()
        finally:
            os.close(self._cmd_w)
            os.close(self._out_r)
            self._profile.cleanup()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- pages

WORDS = ("the a processor token image video frame slice patch merge kept pruned value returns "
         "default config model layer attention encoder decoder tensor shape batch grid pixel "
         "threshold anchored sliding mask position index cache request server response stream "
         "argument keyword optional function method class module package install version").split()


def _sentence(rng: random.Random, n: int | None = None) -> str:
    words = [rng.choice(WORDS) for _ in range(n or rng.randint(7, 16))]
    if rng.random() < 0.3:
        words[rng.randrange(len(words))] = f"<code>{rng.choice(WORDS)}_{rng.choice(WORDS)}()</code>"
    return " ".join(words).capitalize() + "."


def docs_page(sections: int = 24) -> str:
    """A long, Sphinx-like documentation page (deterministic)."""
    rng = random.Random(14)
    nav = "".join(f"<li{' class=cur' if i == 3 else ''}>{i + 1}. {rng.choice(WORDS).title()} "
                  f"{rng.choice(WORDS)}</li>" for i in range(sections))
    body = []
    for s in range(sections):
        body.append(f"<h2 id=s{s}>{s + 1}. {rng.choice(WORDS).title()} {rng.choice(WORDS)} {rng.choice(WORDS)}</h2>")
        for _ in range(rng.randint(1, 3)):
            body.append("<p>" + " ".join(_sentence(rng) for _ in range(rng.randint(2, 5))) + "</p>")
        pick = s % 4
        if pick == 0:
            lines = [f"{rng.choice(WORDS)}_{rng.choice(WORDS)} = {rng.choice(WORDS)}.{rng.choice(WORDS)}("
                     f"{rng.choice(WORDS)}={rng.randint(0, 99)})" for _ in range(rng.randint(3, 8))]
            body.append("<pre>" + html.escape("\n".join(lines)) + "</pre>")
        elif pick == 1:
            rows = "".join("<tr>" + "".join(f"<td>{rng.choice(WORDS)}</td>" if c else f"<td><code>{rng.choice(WORDS)}"
                                            f"</code></td>" for c in range(4)) + "</tr>" for _ in range(rng.randint(3, 7)))
            body.append(f"<table><tr><th>name</th><th>type</th><th>default</th><th>meaning</th></tr>{rows}</table>")
        elif pick == 2:
            body.append("<div class=note><b>Note</b><p>" + _sentence(rng) + " " + _sentence(rng) + "</p></div>")
        else:
            body.append("<ul>" + "".join(f"<li>{_sentence(rng, 8)}</li>" for _ in range(rng.randint(3, 6))) + "</ul>")
    return f"""<!doctype html><html><head><meta charset=utf-8><style>
html {{ scroll-behavior: auto; }}
body {{ margin: 0; font: 16px/1.6 'DejaVu Sans', sans-serif; color: #222; background: #fff; }}
header {{ position: fixed; top: 0; left: 0; right: 0; height: 48px; background: #2b3a4a; color: #fff;
  font-size: 18px; line-height: 48px; padding-left: 24px; z-index: 2; }}
header span {{ float: right; margin-right: 24px; background: #fff; color: #888; height: 28px; line-height: 28px;
  margin-top: 10px; padding: 0 12px; width: 220px; border-radius: 4px; font-size: 14px; }}
nav {{ position: fixed; top: 48px; bottom: 0; left: 0; width: 260px; background: #f3f5f7; border-right: 1px solid #dde;
  font-size: 14px; overflow: hidden; }}
nav ul {{ list-style: none; padding: 16px 20px; margin: 0; }} nav li {{ padding: 3px 0; color: #2b5c8a; }}
nav li.cur {{ font-weight: bold; color: #111; }}
main {{ margin-left: 300px; padding: 72px 48px 48px 0; max-width: 1100px; }}
h1 {{ font-size: 34px; margin: 0 0 12px; }} h2 {{ font-size: 24px; margin: 32px 0 8px; border-bottom: 1px solid #ddd; }}
pre {{ background: #f6f8fa; border: 1px solid #e1e4e8; padding: 12px; font: 14px/1.45 'DejaVu Sans Mono', monospace; }}
code {{ font: 14px 'DejaVu Sans Mono', monospace; background: #f0f0f0; padding: 1px 3px; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccd; padding: 4px 12px; text-align: left; }}
th {{ background: #e9eef3; }}
.note {{ background: #e7f2fa; border-left: 4px solid #6ab0de; padding: 4px 16px; }}
</style></head><body><header>pixelprune documentation <span>Search docs</span></header>
<nav><ul>{nav}</ul></nav><main><h1>Video processing guide</h1>{''.join(body)}</main></body></html>"""


def form_page() -> str:
    """A bug-report form; the capture types into its fields."""
    text_field = "<label>{label}</label><input id={id} type=text placeholder='{ph}'>"
    return f"""<!doctype html><html><head><meta charset=utf-8><style>
body {{ margin: 0; font: 15px 'DejaVu Sans', sans-serif; background: #eef1f4; color: #222; }}
header {{ background: #24292f; color: #fff; height: 56px; line-height: 56px; padding-left: 32px; font-size: 18px; }}
.card {{ background: #fff; width: 720px; margin: 32px auto; padding: 24px 32px; border: 1px solid #d0d7de;
  border-radius: 8px; }}
h1 {{ font-size: 24px; margin: 0 0 16px; }}
label {{ display: block; font-weight: bold; margin: 12px 0 4px; }}
input, textarea, select {{ width: 100%; box-sizing: border-box; font: 15px 'DejaVu Sans', sans-serif;
  padding: 7px 10px; border: 1px solid #b8c0c8; border-radius: 6px; background: #fafbfc; }}
input:focus, textarea:focus {{ outline: 2px solid #0969da; background: #fff; }}
textarea {{ height: 140px; resize: none; }}
.row {{ margin-top: 14px; }} button {{ margin-top: 18px; background: #2da44e; color: #fff; border: 0;
  padding: 9px 18px; border-radius: 6px; font: bold 15px 'DejaVu Sans', sans-serif; }}
</style></head><body><header>Issue tracker &rsaquo; New issue</header><div class=card><h1>Report a bug</h1>
{text_field.format(label='Your name', id='name', ph='Jane Doe')}
{text_field.format(label='E-mail', id='email', ph='jane@example.org')}
{text_field.format(label='Subject', id='subject', ph='One line summary')}
<label>Component</label><select><option>processor</option><option>model</option></select>
<label>Description</label><textarea id=desc placeholder='What happened? What did you expect?'></textarea>
<div class=row><input type=checkbox style='width:auto' checked> I searched the open issues first</div>
<button>Submit new issue</button></div></body></html>"""


TYPING_SCRIPT = [  # (field id, text) typed in order
    ("name", "Ada Lovelace"),
    ("email", "ada@example.org"),
    ("subject", "Video pad runs too long"),
    ("desc", "Steps: load a clip at 2 fps, call the processor, compare the counts. "
             "Expected the kept count per slice, got the full count."),
]


def slides_page(n: int) -> str:
    """A 16:9 deck sized in viewport units (the same slides at every resolution)."""
    rng = random.Random(7)
    slides = []
    for i in range(n):
        title = f"{rng.choice(WORDS).title()} {rng.choice(WORDS)} {rng.choice(WORDS)}"
        kind = i % 4
        if i == 0:
            inner = ("<div class=cover><h1>Pruning video tokens before the encoder</h1>"
                     "<p>Training-free, pixel-exact, for Qwen3-VL</p></div>")
        elif kind == 1:
            inner = f"<h2>{title}</h2><ul>" + "".join(f"<li>{_sentence(rng, 7)}</li>" for _ in range(5)) + "</ul>"
        elif kind == 2:
            bars = "".join(f"<rect x='{40 + 90 * b}' y='{300 - h}' width='60' height='{h}' fill='#{c}'/>"
                           for b, (h, c) in enumerate(zip([rng.randint(40, 260) for _ in range(6)],
                                                          ["4e79a7", "f28e2b", "e15759", "76b7b2", "59a14f", "edc948"])))
            inner = (f"<h2>{title}</h2><svg viewBox='0 0 600 320' class=chart><line x1=30 y1=300 x2=590 y2=300 "
                     f"stroke='#333'/>{bars}</svg>")
        elif kind == 3:
            code = "\n".join(f"{rng.choice(WORDS)} = {rng.choice(WORDS)}({rng.choice(WORDS)}, {rng.randint(0, 9)})"
                             for _ in range(6))
            inner = f"<h2>{title}</h2><pre>{html.escape(code)}</pre>"
        else:
            rows = "".join("<tr>" + "".join(f"<td>{rng.randint(1, 999)}</td>" for _ in range(4)) + "</tr>"
                           for _ in range(5))
            inner = f"<h2>{title}</h2><table><tr><th>clip</th><th>tokens</th><th>kept</th><th>ms</th></tr>{rows}</table>"
        slides.append(f"<section id=s{i}>{inner}<footer>PixelPrune &middot; video <span>{i + 1} / {n}</span>"
                      f"</footer></section>")
    return f"""<!doctype html><html><head><meta charset=utf-8><style>
html, body {{ margin: 0; height: 100%; overflow: hidden; background: #fff; font-family: 'DejaVu Sans', sans-serif; }}
section {{ display: none; position: absolute; inset: 0; padding: 5vh 7vw; box-sizing: border-box; color: #1d2b3a; }}
section.on {{ display: block; }}
h2 {{ font-size: 5vh; margin: 0 0 4vh; padding-bottom: 1.5vh; border-bottom: 0.6vh solid #e15759; }}
li {{ font-size: 3.4vh; margin: 1.6vh 0; }}
.cover {{ margin-top: 22vh; }} .cover h1 {{ font-size: 7vh; }} .cover p {{ font-size: 4vh; color: #667; }}
.chart {{ height: 55vh; }}
pre {{ font: 3vh/1.5 'DejaVu Sans Mono', monospace; background: #f4f6f8; padding: 3vh; }}
table {{ border-collapse: collapse; font-size: 3.2vh; }} td, th {{ border: 1px solid #bbc; padding: 1vh 3vw; }}
footer {{ position: absolute; bottom: 3vh; left: 7vw; right: 7vw; font-size: 2.2vh; color: #889;
  border-top: 1px solid #dde; padding-top: 1vh; }} footer span {{ float: right; }}
</style></head><body>{''.join(slides)}
<script>function show(k) {{ document.querySelectorAll('section').forEach((s, i) => s.classList.toggle('on', i === k)); }}
show(0);</script></body></html>"""


# --------------------------------------------------------------------------- capture

def _changed(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.any(a != b))


def capture_scroll(browser: Browser, page: Path, width: int, height: int, frames: int) -> list[np.ndarray]:
    browser.load(page)
    step = round(SCROLL_FRACTION * height)
    need = (frames - 1) * step
    max_scroll = browser.js("document.documentElement.scrollHeight - innerHeight")
    if max_scroll < need:
        raise ClipCheckError(f"scroll {width}x{height}: the page scrolls only {max_scroll} px but {frames} frames "
                             f"of {step} px need {need}: make the page longer")
    shots = []
    for f in range(frames):
        y = browser.js(f"window.scrollTo({{top: {f * step}, behavior: 'instant'}}); "
                       "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(scrollY))))")
        if y != f * step:
            raise ClipCheckError(f"scroll {width}x{height} frame {f}: scrollY is {y}, expected {f * step}")
        shots.append(browser.screenshot())
    for f in range(1, frames):
        if not _changed(shots[f - 1], shots[f]):
            raise ClipCheckError(f"scroll {width}x{height}: frame {f} is identical to frame {f - 1} "
                                 "(the page did not move on screen)")
    return shots


def capture_typing(browser: Browser, page: Path, width: int, height: int, frames: int) -> list[np.ndarray]:
    browser.load(page)
    queue = [(fid, ch) for fid, text in TYPING_SCRIPT for ch in text]
    if len(queue) < (frames - 1) * TYPE_CHARS_PER_FRAME:
        raise ClipCheckError(f"typing: the script has {len(queue)} characters, {frames} frames need "
                             f"{(frames - 1) * TYPE_CHARS_PER_FRAME}")
    typed_js = "[" + ",".join(f"document.getElementById('{fid}').value.length" for fid, _ in TYPING_SCRIPT) + "]"
    shots, focused, pos = [], None, 0
    browser.js(f"document.getElementById('{queue[0][0]}').focus()")
    browser.settle()
    shots.append(browser.screenshot())
    for f in range(1, frames):
        for fid, ch in queue[pos : pos + TYPE_CHARS_PER_FRAME]:
            if fid != focused:
                browser.js(f"document.getElementById('{fid}').focus()")
                focused = fid
            browser.page("Input.insertText", {"text": ch})
        pos += TYPE_CHARS_PER_FRAME
        browser.settle()
        typed = sum(browser.js(typed_js))
        if typed != pos:
            raise ClipCheckError(f"typing {width}x{height} frame {f}: {typed} characters in the form, expected {pos}")
        shots.append(browser.screenshot())
        if not _changed(shots[-2], shots[-1]):
            raise ClipCheckError(f"typing {width}x{height}: frame {f} is identical to frame {f - 1}")
    return shots


def capture_slides(browser: Browser, page: Path, width: int, height: int, frames: int) -> list[np.ndarray]:
    browser.load(page)
    shots = []
    for f in range(frames):
        if f % SLIDE_HOLD == 0:
            browser.js(f"show({f // SLIDE_HOLD})")
            browser.settle()
        shots.append(browser.screenshot())
    for f in range(1, frames):
        switch = f % SLIDE_HOLD == 0
        if _changed(shots[f - 1], shots[f]) != switch:
            raise ClipCheckError(f"slides {width}x{height} frame {f}: expected {'a new slide' if switch else 'the same slide'}"
                                 f" (switch every {SLIDE_HOLD} frames) but the frame {'did not change' if switch else 'changed'}")
    return shots


CAPTURE: dict[str, tuple[Callable[[], str], Callable[..., list[np.ndarray]]]] = {
    "scroll": (docs_page, capture_scroll),
    "typing": (form_page, capture_typing),
    "slides": (lambda: slides_page(-(-FRAMES // SLIDE_HOLD)), capture_slides),
}


# --------------------------------------------------------------------------- encode + check

def encode(frames_dir: Path, target: Path, fps: float) -> None:
    tmp = target.with_suffix(".tmp.mp4")
    _run(["ffmpeg", "-y", "-loglevel", "error", "-framerate", str(fps), "-i", str(frames_dir / "%04d.png"),
          "-c:v", "libx264", "-preset", "medium", "-crf", str(CRF), "-g", str(max(1, round(KEYINT_SECONDS * fps))),
          "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(tmp)])
    tmp.replace(target)


def probe(path: Path) -> dict[str, Any]:
    out = _run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_frames", "-show_entries",
                "stream=codec_name,width,height,avg_frame_rate,nb_read_frames:format=duration", "-of", "json",
                str(path)], text=True).stdout
    data = json.loads(out)
    s = data["streams"][0]
    num, den = (int(x) for x in s["avg_frame_rate"].split("/"))
    return dict(codec=s["codec_name"], width=int(s["width"]), height=int(s["height"]), fps=num / den if den else 0.0,
                frames=int(s["nb_read_frames"]), duration=float(data["format"].get("duration", 0.0)))


def decode_frames(path: Path, width: int, height: int) -> np.ndarray:
    """All frames of ``path`` as (n, h, w, 3) uint8, decoded by ffmpeg (independent of PyAV)."""
    raw = _run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


def check_encoded(kind: str, name: str, path: Path, source: list[np.ndarray]) -> None:
    """The encoded clip has every frame and changes where the source changes (H.264 is lossy, so
    'unchanged' is judged against the change of real switches, not as exact equality)."""
    h, w = source[0].shape[:2]
    dec = decode_frames(path, w, h)
    if len(dec) != len(source):
        raise ClipCheckError(f"{name}: {len(dec)} frames decoded, {len(source)} captured")
    diff = np.array([np.abs(dec[f].astype(np.int16) - dec[f - 1]).mean() for f in range(1, len(dec))])
    src_changed = np.array([_changed(source[f - 1], source[f]) for f in range(1, len(source))])
    if src_changed.all():
        if (diff == 0).any():
            f = int(np.flatnonzero(diff == 0)[0]) + 1
            raise ClipCheckError(f"{name}: decoded frame {f} is identical to frame {f - 1}; the source changed")
    elif src_changed.any():  # slides: switches must stand out above any codec flicker of held frames
        if diff[src_changed].min() <= 10 * max(diff[~src_changed].max(), 1e-3):
            raise ClipCheckError(f"{name}: decoded slide switches (mean |diff| >= {diff[src_changed].min():.3f}) do not "
                                 f"stand out from held frames (<= {diff[~src_changed].max():.3f})")
    # PSNR of the encoding (a sanity check that the codec did not wreck the frames)
    mse = np.mean([np.mean((dec[f].astype(np.float32) - source[f]) ** 2) for f in range(len(dec))])
    psnr = 10 * np.log10(255**2 / max(float(mse), 1e-9))
    if psnr < 30:
        raise ClipCheckError(f"{name}: encoded PSNR {psnr:.1f} dB is below 30 dB")
    LOG.info("%s: decoded %d frames, PSNR %.1f dB", name, len(dec), psnr)


def _spec(kind: str, res: str, fps: float, frames: int, page_html: str) -> dict[str, Any]:
    w, h = RESOLUTIONS[res]
    return dict(version=VERSION, kind=kind, page_sha256=hashlib.sha256(page_html.encode()).hexdigest()[:16],
                width=w, height=h, fps=fps, frames=frames, crf=CRF,
                keyint_seconds=KEYINT_SECONDS, scroll_fraction=SCROLL_FRACTION,
                chars_per_frame=TYPE_CHARS_PER_FRAME, slide_hold=SLIDE_HOLD)


def _load_previous(out: Path) -> dict[str, dict]:
    manifest = out / "manifest.json"
    if not manifest.exists():
        return {}
    return {r["name"]: r for r in json.loads(manifest.read_text())["clips"]}


def make_screen_clip(out: Path, kind: str, res: str, fps: float, frames: int, previous: dict[str, dict],
                     force: bool) -> ClipRecord:
    name = f"{kind}_{res}"
    target = out / "screen" / f"{name}.mp4"
    frames_dir = out / "frames" / name
    make_page, capture = CAPTURE[kind]
    page_html = make_page()
    spec = _spec(kind, res, fps, frames, page_html)
    old = previous.get(name)
    if (not force and old and old.get("spec") == spec and target.exists()
            and len(list(frames_dir.glob("*.png"))) == frames):
        LOG.info("%s: up to date", name)
        return ClipRecord(**old)
    w, h = RESOLUTIONS[res]
    pages = out / "pages"
    pages.mkdir(parents=True, exist_ok=True)
    page = pages / f"{kind}.html"
    page.write_text(page_html)
    t0 = time.perf_counter()
    with Browser(w, h) as browser:
        shots = capture(browser, page, w, h, frames)
    for s in shots:
        if s.shape != (h, w, 3):
            raise ClipCheckError(f"{name}: screenshot is {s.shape[1]}x{s.shape[0]}, expected {w}x{h}")
    shutil.rmtree(frames_dir, ignore_errors=True)
    frames_dir.mkdir(parents=True)
    for i, s in enumerate(shots):
        Image.fromarray(s).save(frames_dir / f"{i:04d}.png", compress_level=1)
    target.parent.mkdir(parents=True, exist_ok=True)
    encode(frames_dir, target, fps)
    check_encoded(kind, name, target, shots)
    info = probe(target)
    LOG.info("%s: captured and encoded in %.1f s", name, time.perf_counter() - t0)
    return ClipRecord(name=name, type=kind, category="screen", resolution=res, path=str(target.relative_to(out)),
                      width=info["width"], height=info["height"], frames=info["frames"], fps=info["fps"],
                      duration=info["duration"], bytes=target.stat().st_size, codec=info["codec"],
                      source=f"headless Chromium, generated page {page.name}",
                      frames_dir=str(frames_dir.relative_to(out)), spec=spec)


def fetch_opencv_doc(out: Path) -> Path:
    """``apt-get download opencv-doc`` (not installed) and unpack only its example videos."""
    root = out / "pkgs" / OPENCV_PACKAGE
    if all((root / OPENCV_DATA / f).exists() for _, f, _ in NATURAL):
        return root
    deb = download_deb(OPENCV_PACKAGE, out / "debs")  # ~96 MB
    root.mkdir(parents=True, exist_ok=True)
    members = [f"./{OPENCV_DATA}/{f}" for _, f, _ in NATURAL]
    tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    _run(["tar", "-x", "-C", str(root), *members], stdin=tar.stdout)
    if tar.wait() != 0:
        raise RuntimeError(f"dpkg-deb could not read {deb}")
    return root


def make_natural_clips(out: Path, previous: dict[str, dict], force: bool) -> list[ClipRecord]:
    records = []
    root = None
    for name, fname, desc in NATURAL:
        target = out / "natural" / fname
        spec = dict(version=VERSION, package=OPENCV_PACKAGE, file=fname)
        old = previous.get(name)
        if not force and old and old.get("spec") == spec and target.exists():
            records.append(ClipRecord(**old))
            continue
        root = root or fetch_opencv_doc(out)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / OPENCV_DATA / fname, target)
        info = probe(target)
        records.append(ClipRecord(name=name, type="natural", category="natural", resolution="native",
                                  path=str(target.relative_to(out)), width=info["width"], height=info["height"],
                                  frames=info["frames"], fps=info["fps"], duration=info["duration"],
                                  bytes=target.stat().st_size, codec=info["codec"],
                                  source=f"Debian {OPENCV_PACKAGE}: /{OPENCV_DATA}/{fname} ({desc})", spec=spec))
    return records


def load_manifest(video_dir: Path = DEFAULT_OUT) -> list[dict]:
    """The clip records of a built set, with absolute ``path`` (and ``frames_dir``)."""
    manifest = video_dir / "manifest.json"
    if not manifest.exists():
        sys.exit(f"error: no video set at {video_dir}; run `python benchmarks/make_video_set.py` first")
    records = json.loads(manifest.read_text())["clips"]
    for r in records:
        r["path"] = str(video_dir / r["path"])
        if r.get("frames_dir"):
            r["frames_dir"] = str(video_dir / r["frames_dir"])
    return records


def print_clips(records: list[ClipRecord]) -> str:
    lines = ["| clip | type | resolution | size | frames | fps | duration | file | codec |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        lines.append(f"| {r.name} | {r.type} | {r.resolution} | {r.width}x{r.height} | {r.frames} | {r.fps:g} | "
                     f"{r.duration:.1f} s | {r.bytes / 1024:.0f} KiB | {r.codec} |")
    text = "\n".join(lines)
    print(text)
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    ap.add_argument("--quick", action="store_true", help="720p screen clips only, no natural clips")
    ap.add_argument("--fps", type=float, default=2.0, help="frames per second of clip time (default 2)")
    ap.add_argument("--frames", type=int, default=FRAMES, help=f"frames per screen clip (default {FRAMES})")
    ap.add_argument("--kinds", default=",".join(SCREEN_KINDS), help="screen clip kinds (comma-separated)")
    ap.add_argument("--no-natural", action="store_true", help="skip the natural clips (opencv-doc)")
    ap.add_argument("--force", action="store_true", help="remake clips that are up to date")
    ap.add_argument("--install-tools", action="store_true", help="apt-get install chromium ffmpeg when missing")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    bad = sorted(set(kinds) - set(SCREEN_KINDS))
    if bad:
        ap.error(f"--kinds {bad}: allowed {list(SCREEN_KINDS)}")
    if args.frames < 2 or args.fps <= 0:
        ap.error(f"--frames {args.frames} must be >= 2 and --fps {args.fps} > 0")
    natural = not (args.quick or args.no_natural)
    ensure_tools(args.install_tools, natural)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    previous = _load_previous(out)
    resolutions = ["720p"] if args.quick else list(RESOLUTIONS)
    t0 = time.perf_counter()
    records = [make_screen_clip(out, kind, res, args.fps, args.frames, previous, args.force)
               for kind in kinds for res in resolutions]
    if natural:
        records += make_natural_clips(out, previous, args.force)
    # keep records of clips not made this time (e.g. a --quick run after a full one)
    made = {r.name for r in records}
    kept = [ClipRecord(**r) for n, r in previous.items() if n not in made and (out / r["path"]).exists()]
    all_records = records + kept
    (out / "manifest.json").write_text(json.dumps({"version": VERSION, "clips": [asdict(r) for r in all_records]},
                                                  indent=1))
    print()
    print_clips(records)
    print(f"\n{len(records)} clips in {out} ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ClipCheckError as error:
        sys.exit(f"error: {error}")
