"""Build a realistic benchmark image set: documents, screenshots and photographs at native resolution.

Everything comes from Debian packages (fetched with ``apt-get download`` and unpacked with
``dpkg-deb -x``, so nothing is installed system-wide except the two renderers):

* **documents**: pages of the PDF manuals shipped by ``r-doc-pdf`` (R manuals), ``gnuplot-doc``
  and ``asymptote-doc`` (manual with many figures), rendered by ``pdftoppm`` at 150, 200 and 300 dpi.
  A US-letter page then has about the pixel count of a 1080p, 1440p and 4K screen (2.1, 3.7, 8.4 MP).
* **screenshots**: HTML pages of the Python 3.11 documentation (``python3.11-doc``) rendered by
  headless Chromium at 1280x800, 1920x1080, 2560x1440 and 3840x2160, plus 3840x2160 at device scale
  factor 2 (a HiDPI "4K" screenshot, which is how 4K displays are normally used).
* **photos**: the natural photographs shipped with scikit-image (``python3-skimage``), at their native
  (small) size: nothing in a photograph is pixel-identical, so they show what PixelPrune costs when it
  cannot prune.

Output (ignored by git): ``benchmarks/data/images/{documents,screenshots,photos}/*.png`` and
``benchmarks/data/images/manifest.json`` (one record per image: path, type, resolution class, size,
source). Renderers needed: ``apt-get install poppler-utils chromium`` (``--install-tools`` does it).

Usage::

    python benchmarks/make_image_set.py            # full set (~80 images, ~2 min)
    python benchmarks/make_image_set.py --quick    # a handful per type
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image

LOG = logging.getLogger("make_image_set")
BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from common import download_deb, ensure_debian_tools  # noqa: E402

DEFAULT_DATA = BENCH_DIR / "data"

PACKAGES = ["r-doc-pdf", "gnuplot-doc", "asymptote-doc", "python3.11-doc", "python3-skimage"]

# (package, path inside the package, 1-based pages). Pages picked to mix running text, code,
# tables, title pages and figures.
PDF_PAGES: list[tuple[str, str, list[int]]] = [
    ("r-doc-pdf", "usr/share/R/doc/manual/R-intro.pdf", [1, 8, 15, 42, 77]),
    ("r-doc-pdf", "usr/share/R/doc/manual/R-exts.pdf", [12, 60, 140]),
    ("r-doc-pdf", "usr/share/R/doc/manual/R-admin.pdf", [5, 30]),
    ("gnuplot-doc", "usr/share/doc/gnuplot/gnuplot.pdf", [1, 20, 45, 100]),
    ("asymptote-doc", "usr/share/doc/asymptote/asymptote.pdf", [1, 12, 30, 55, 90]),
]
QUICK_PDF_PAGES = [("r-doc-pdf", "usr/share/R/doc/manual/R-intro.pdf", [8]),
                   ("asymptote-doc", "usr/share/doc/asymptote/asymptote.pdf", [30])]
DPIS = {150: "1080p", 200: "1440p", 300: "4k"}

PY_DOC = "usr/share/doc/python3.11/html"
HTML_PAGES = [
    "index.html",
    "library/functions.html",
    "library/os.html",
    "library/stdtypes.html",
    "tutorial/controlflow.html",
    "reference/datamodel.html",
    "glossary.html",
    "whatsnew/3.11.html",
]
QUICK_HTML_PAGES = ["library/functions.html", "tutorial/controlflow.html"]
# (width, height, device scale factor, resolution class); pixel size is (w*s, h*s).
WINDOWS = [(1280, 800, 1, "800p"), (1920, 1080, 1, "1080p"), (2560, 1440, 1, "1440p"),
           (3840, 2160, 1, "4k"), (1920, 1080, 2, "4k-hidpi")]
QUICK_WINDOWS = [(1920, 1080, 1, "1080p"), (3840, 2160, 1, "4k")]

SKIMAGE_DATA = "usr/lib/python3/dist-packages/skimage/data"
PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png", "rocket.jpg",
          "hubble_deep_field.jpg"]
QUICK_PHOTOS = ["astronaut.png", "coffee.png"]

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]


@dataclass
class ImageRecord:
    path: str  # relative to the image folder
    type: str  # documents | screenshots | photos
    resolution: str  # resolution class (1080p, 1440p, 4k, ...) or "native"
    width: int
    height: int
    package: str
    source: str


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    LOG.debug("$ %s", " ".join(cmd))
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def ensure_tools(install: bool) -> None:
    """Fail early (or install with apt-get) when a renderer is missing."""
    ensure_debian_tools({"pdftoppm": "poppler-utils", "chromium": "chromium"}, install=install,
                        apt_reason="this script needs a Debian/Ubuntu machine.")


def fetch_packages(data: Path, packages: list[str]) -> dict[str, Path]:
    """``apt-get download`` each package (no dependencies, no install) and unpack it."""
    debs, roots = data / "debs", {}
    debs.mkdir(parents=True, exist_ok=True)
    for pkg in packages:
        root = data / "pkgs" / pkg
        roots[pkg] = root
        if root.is_dir():
            continue
        deb = download_deb(pkg, debs)
        tmp = root.with_suffix(".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        _run(["dpkg-deb", "-x", str(deb), str(tmp)])
        tmp.rename(root)
    return roots


def _record(out: Path, path: Path, kind: str, resolution: str, package: str, source: str) -> ImageRecord:
    with Image.open(path) as im:
        w, h = im.size
    return ImageRecord(str(path.relative_to(out)), kind, resolution, w, h, package, source)


def render_documents(roots: dict[str, Path], out: Path, pages: list, dpis: dict[int, str]) -> list[ImageRecord]:
    folder = out / "documents"
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(pkg, rel, page, dpi) for pkg, rel, pp in pages for page in pp for dpi in dpis]

    def one(job) -> ImageRecord:
        pkg, rel, page, dpi = job
        stem = f"{Path(rel).stem}_p{page:03d}_{dpi}dpi"
        target = folder / f"{stem}.png"
        if not target.exists():
            # -singlefile: no page-number suffix; -png output is lossless RGB.
            _run(["pdftoppm", "-png", "-r", str(dpi), "-f", str(page), "-l", str(page), "-singlefile",
                  str(roots[pkg] / rel), str(folder / stem)])
        return _record(out, target, "documents", dpis[dpi], pkg, f"{rel}#page={page}")

    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(one, jobs))


def render_screenshots(roots: dict[str, Path], out: Path, pages: list[str], windows: list) -> list[ImageRecord]:
    folder = out / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    html_root = roots["python3.11-doc"] / PY_DOC
    jobs = [(page, win) for page in pages for win in windows]

    def one(job) -> ImageRecord:
        page, (w, h, scale, res) = job
        stem = page.replace("/", "_").removesuffix(".html")
        target = folder / f"pydoc_{stem}_{res}.png"
        if not target.exists():
            with tempfile.TemporaryDirectory(prefix="pixelprune-chromium-") as profile:
                _run(["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={target}",
                      f"--window-size={w},{h}", f"--force-device-scale-factor={scale}",
                      (html_root / page).as_uri()], timeout=120)
        return _record(out, target, "screenshots", res, "python3.11-doc", f"{PY_DOC}/{page}")

    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(one, jobs))


def copy_photos(roots: dict[str, Path], out: Path, names: list[str]) -> list[ImageRecord]:
    folder = out / "photos"
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for name in names:
        target = folder / f"{Path(name).stem}.png"
        if not target.exists():
            with Image.open(roots["python3-skimage"] / SKIMAGE_DATA / name) as im:
                im.convert("RGB").save(target)
        records.append(_record(out, target, "photos", "native", "python3-skimage", f"{SKIMAGE_DATA}/{name}"))
    return records


def load_manifest(image_dir: Path) -> list[dict]:
    """Records of an image set built by this script (paths made absolute)."""
    manifest = image_dir / "manifest.json"
    if not manifest.exists():
        raise FileNotFoundError(
            f"{manifest} not found: build the image set first with `python benchmarks/make_image_set.py`."
        )
    records = json.loads(manifest.read_text())
    for r in records:
        r["path"] = str(image_dir / r["path"])
    return records


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="work folder (debs, unpacked packages, images)")
    ap.add_argument("--quick", action="store_true", help="a handful of images per type")
    ap.add_argument("--install-tools", action="store_true", help="apt-get install poppler-utils chromium if missing")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")

    ensure_tools(args.install_tools)
    roots = fetch_packages(args.data, PACKAGES)
    out = args.data / ("images-quick" if args.quick else "images")
    records = render_documents(roots, out, QUICK_PDF_PAGES if args.quick else PDF_PAGES,
                               {150: "1080p", 300: "4k"} if args.quick else DPIS)
    records += render_screenshots(roots, out, QUICK_HTML_PAGES if args.quick else HTML_PAGES,
                                  QUICK_WINDOWS if args.quick else WINDOWS)
    records += copy_photos(roots, out, QUICK_PHOTOS if args.quick else PHOTOS)
    (out / "manifest.json").write_text(json.dumps([asdict(r) for r in records], indent=1))

    print(f"{'type':<12} {'resolution':<10} {'images':>6}  sizes")
    groups: dict[tuple[str, str], list[ImageRecord]] = {}
    for r in records:
        groups.setdefault((r.type, r.resolution), []).append(r)
    for (kind, res), rs in groups.items():
        sizes = sorted({f"{r.width}x{r.height}" for r in rs})
        print(f"{kind:<12} {res:<10} {len(rs):>6}  {', '.join(sizes[:4])}{' ...' if len(sizes) > 4 else ''}")
    print(f"{len(records)} images in {out} (manifest.json lists them)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
