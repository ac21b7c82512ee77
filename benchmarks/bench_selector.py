"""Selector speed: microseconds per token on real documents and screenshots at 1080p, 1440p and 4K.

For each image: the stock Qwen3-VL image processor makes ``pixel_values`` (and is timed: the
selector's cost is shown as a share of it), then ``pixelprune.select_tokens`` is timed at
threshold 0, anchored threshold 0.02 (metric ``max``) and sliding threshold 0.02, next to the naive
per-token reference of the tests (``tests/reference_selector.py``) on the same input, all in one run.
Times are the best of ``--repeats`` calls (the machine is shared; disturbances only add), wall clock
with torch's default threads; CPU time of the process is recorded too.

Targets (issue 2, on the 2-core CPU machine): threshold 0 <= 2 us/token and <= 10% of the image
processor's time; anchored threshold > 0 <= 4 us/token.

Video rows (issue 14): ``pixelprune.select_video_tokens`` on screen-recording-like clips at 720p and
1080p, synthesized here (no committed video set exists yet) from the benchmark's screenshots, or,
without the image set (``--clips words``, the default when it is absent), from rendered word pages
(``tests/images.py``): a static screen, a page scrolled by ``SCROLL_PX`` px per frame (two pages
stacked into one long page) and typing (two glyphs more per frame and a blinking cursor on a
static page); ``CLIP_FRAMES`` frames each, as sampled at 2 fps (Qwen3-VL's default), so a
temporal slice is one second. The
stock Qwen3-VL video processor (checkpoint defaults, frames not sampled, per-frame pixels not
capped so frames keep their native size) makes ``pixel_values_videos`` and is timed; the video
selector (threshold 0 and anchored 0.02), the image selector on the clip's first slice taken as a
still image (same content, same run, interleaved round by round) and the naive reference
(``tests/reference_video_selector.py``, once, on the clip's first ``REF_SLICES`` slices) are timed
per token. Targets: video per token <= 1.5x
the image selector's at threshold 0, <= 2x anchored, and <= 10% of the stock video processor.

    python benchmarks/make_image_set.py        # once
    python benchmarks/bench_selector.py        # table + benchmarks/results/bench_selector.json
    python benchmarks/bench_selector.py --quick
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import (  # noqa: E402
    QWEN3_VL_PROCESSOR_KWARGS, finish, interleaved, load_images, machine_info, median, open_rgb, paired_ratios,
    stock_image_processor, time_call,
)

import pixelprune  # noqa: E402

TARGET_T0_US, TARGET_T0_SHARE, TARGET_ANCHORED_US = 2.0, 0.10, 4.0
THRESHOLD = 0.02
MODES = {  # name -> select_tokens kwargs
    "t0": dict(threshold=0.0),
    "anchored": dict(threshold=THRESHOLD, metric="max"),
    "sliding": dict(threshold=THRESHOLD, metric="max", anchored=False),
}
CLASSES = ["1080p", "1440p", "4k", "4k-hidpi"]
# video clips: size name -> (screenshot class they are cut from, width, height)
VIDEO_SIZES = {"720p": ("800p", 1280, 720), "1080p": ("1080p", 1920, 1080)}
CLIP_FRAMES, SCROLL_PX, REF_SLICES = 8, 60, 2
TARGET_VIDEO_T0, TARGET_VIDEO_ANCHORED, TARGET_VIDEO_SHARE = 1.5, 2.0, 0.10


def pick(records: list[dict], per_class: int, classes: list[str]) -> list[dict]:
    """Up to ``per_class`` images per (type, resolution), spread over the set (deterministic)."""
    out = []
    for kind in ("documents", "screenshots"):
        for res in classes:
            group = [r for r in records if r["type"] == kind and r["resolution"] == res]
            if group:
                step = max(1, len(group) // per_class)
                out += group[::step][:per_class]
    return out


def top_functions(fn, n: int = 8) -> list[tuple[str, float]]:
    """The ``n`` functions with the most own time (ms) in one profiled call: where the time goes."""
    import cProfile
    import pstats

    prof = cProfile.Profile()
    prof.runcall(fn)
    stats = pstats.Stats(prof).stats  # {(file, line, name): (cc, nc, tottime, cumtime, callers)}
    top = sorted(stats.items(), key=lambda kv: -kv[1][2])[:n]
    return [(f"{Path(k[0]).name}:{k[1]}({k[2]})", v[2] * 1e3) for k, v in top]


def bench_image(rec: dict, proc, repeats: int, reference, ref_modes: list[str], profile: bool) -> dict:
    image = open_rgb(rec["path"])
    proc_wall, proc_cpu, feats = time_call(lambda: proc(images=image, return_tensors="pt"), max(1, repeats // 2))
    pv, grid = feats["pixel_values"], feats["image_grid_thw"]
    tokens = int(grid[0, 1] * grid[0, 2]) // 4
    row = dict(image=Path(rec["path"]).name, type=rec["type"], resolution=rec["resolution"],
               size=f"{rec['width']}x{rec['height']}", grid=f"{int(grid[0, 1]) // 2}x{int(grid[0, 2]) // 2}",
               tokens=tokens, processor_us=proc_wall / tokens * 1e6, processor_cpu_us=proc_cpu / tokens * 1e6)
    for mode, kw in MODES.items():
        pixelprune.select_tokens(pv, grid, **kw)  # warm-up (allocator, lazy init)
        wall, cpu, kept = time_call(lambda: pixelprune.select_tokens(pv, grid, **kw), repeats)
        row[f"{mode}_us"] = wall / tokens * 1e6
        row[f"{mode}_cpu_us"] = cpu / tokens * 1e6
        row[f"{mode}_kept"] = int(kept[0].numel())
        if mode in ref_modes:
            ref_wall, _, ref = time_call(lambda: reference(pv, grid, **kw), 1)
            if ref[0] != kept[0].tolist():
                raise AssertionError(f"{rec['path']} {mode}: selector and reference disagree")
            row[f"ref_{mode}_us"] = ref_wall / tokens * 1e6
            row[f"ref_{mode}_speedup"] = ref_wall / wall
        if profile:
            row[f"{mode}_profile"] = top_functions(lambda: pixelprune.select_tokens(pv, grid, **kw))
    row["retention_t0"] = row["t0_kept"] / tokens
    row["t0_share_of_processor"] = row["t0_us"] / row["processor_us"]
    row["t0_cpu_share_of_processor"] = row["t0_cpu_us"] / row["processor_cpu_us"]
    return row


def summarise(rows: list[dict]) -> list[dict]:
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["type"], r["resolution"]), []).append(r)
    out = []
    keys = ["tokens", "retention_t0", "t0_us", "t0_cpu_us", "anchored_us", "anchored_cpu_us", "sliding_us",
            "ref_t0_us", "ref_t0_speedup", "processor_cpu_us", "ref_anchored_us", "ref_anchored_speedup", "processor_us",
            "t0_share_of_processor", "t0_cpu_share_of_processor"]
    for (kind, res), rs in groups.items():
        s = dict(type=kind, resolution=res, images=len(rs))
        for k in keys:
            vals = [r[k] for r in rs if k in r]
            s[k] = median(vals) if vals else None
        s["t0_ok"] = "yes" if s["t0_us"] <= TARGET_T0_US and s["t0_share_of_processor"] <= TARGET_T0_SHARE else "NO"
        s["anchored_ok"] = "yes" if s["anchored_us"] <= TARGET_ANCHORED_US else "NO"
        out.append(s)
    return out


COLUMNS = [
    ("type", "type", ""), ("resolution", "res", ""), ("images", "n", "d"), ("tokens", "tokens", ".0f"),
    ("retention_t0", "kept@0", ".0%"), ("t0_us", "t0 us/tok", ".2f"), ("anchored_us", "anch 0.02 us/tok", ".2f"),
    ("sliding_us", "slid 0.02 us/tok", ".2f"), ("t0_cpu_us", "t0 CPU us/tok", ".2f"),
    ("anchored_cpu_us", "anch CPU us/tok", ".2f"), ("ref_t0_us", "naive t0 us/tok", ".0f"),
    ("ref_t0_speedup", "naive/t0", ".0f"), ("ref_anchored_speedup", "naive/anch", ".0f"),
    ("processor_us", "processor us/tok", ".1f"), ("processor_cpu_us", "processor CPU us/tok", ".1f"), ("t0_share_of_processor", "t0/processor", ".1%"),
    ("t0_cpu_share_of_processor", "t0/processor CPU", ".1%"),
    ("t0_ok", "t0 target", ""), ("anchored_ok", "anch target", ""),
]


# --------------------------------------------------------------------------- video

def long_page(clips: str, size: str) -> "np.ndarray":
    """A ``(2H, W, 3)`` uint8 page to cut clips from: two screenshots of the image set stacked
    (``clips='screenshots'``), or two rendered word pages (``'words'``, no image set needed)."""
    import numpy as np

    cls, w, h = VIDEO_SIZES[size]
    if clips == "words":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from images import word_page_image

        return np.concatenate([np.asarray(word_page_image(w, h, seed=i)) for i in range(2)])
    shots = [r for r in load_images(False) if r["type"] == "screenshots" and r["resolution"] == cls][:2]
    if len(shots) < 2:
        sys.exit(f"error: the image set has no two {cls} screenshots; run benchmarks/make_image_set.py "
                 "or pass --clips words")
    return np.concatenate([np.asarray(open_rgb(r["path"]))[:h, :w] for r in shots])


def synth_clips(clips: str, size: str) -> dict[str, "np.ndarray"]:
    """Screen-recording-like clips ``(CLIP_FRAMES, H, W, 3)`` uint8 (see the module docstring)."""
    import numpy as np

    _, w, h = VIDEO_SIZES[size]
    page = long_page(clips, size)
    frames = [page[:h].copy()]
    rng = np.random.default_rng(0)
    x0, y = w // 6, h // 2
    for f in range(1, CLIP_FRAMES):  # typing: two more dark glyph-like 10x18 px blocks per frame
        frame = frames[-1].copy()
        for g in range(2):
            x = x0 + 12 * (2 * f + g)
            frame[y : y + 18, x : x + 10] = np.where(rng.random((18, 10, 1)) < 0.4, 30, frame[y : y + 18, x : x + 10])
        frames.append(frame)
    for f, frame in enumerate(frames):  # a 2x20 px cursor after the text, on in every other frame
        frames[f] = frame = frame.copy()
        if f % 2 == 0:
            x = x0 + 12 * (2 * f + 2)
            frame[y - 1 : y + 19, x : x + 2] = 0
    return {
        "static": np.stack([page[:h]] * CLIP_FRAMES),
        "scroll": np.stack([page[f * SCROLL_PX : f * SCROLL_PX + h] for f in range(CLIP_FRAMES)]),
        "typing": np.stack(frames),
    }


def stock_video_processor():
    """The stock transformers Qwen3-VL video processor with the checkpoints' defaults (needs torchvision)."""
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    kw = {k: v for k, v in QWEN3_VL_PROCESSOR_KWARGS.items() if k != "size"}
    return Qwen3VLVideoProcessor(**kw, size={"shortest_edge": 4096, "longest_edge": 25165824},
                                 do_sample_frames=False, cap_pixels_per_frame=False)


def bench_video(kind: str, size: str, frames, proc, repeats: int, reference, source: str) -> dict:
    import numpy as np

    feats = proc(videos=[frames], return_tensors="pt")
    pv, grid = feats["pixel_values_videos"], feats["video_grid_thw"]
    t, gh, gw = (int(x) for x in grid[0])
    plane = gh * gw // 4
    tokens = t * plane
    image_pv, image_grid = pv[: gh * gw], torch.tensor([[1, gh, gw]])  # the first slice as a still image
    row = dict(clip=kind, resolution=size, source=source, size=f"{frames.shape[2]}x{frames.shape[1]}x{len(frames)}",
               grid=f"{t}x{gh // 2}x{gw // 2}", tokens=tokens)
    fns = {"processor": lambda: proc(videos=[frames], return_tensors="pt")}
    for mode, kw in MODES.items():
        if mode == "sliding":
            continue
        fns[f"video_{mode}"] = (lambda kw=kw: pixelprune.select_video_tokens(pv, grid, **kw))
        fns[f"image_{mode}"] = (lambda kw=kw: pixelprune.select_tokens(image_pv, image_grid, **kw))
    res = interleaved(fns, repeats)
    per_token = {"processor": tokens, **{n: (tokens if n.startswith("video") else plane) for n in fns if n != "processor"}}
    for n in fns:
        row[f"{n}_us"] = median(res[n]["wall"]) / per_token[n] * 1e6
        row[f"{n}_cpu_us"] = median(res[n]["cpu"]) / per_token[n] * 1e6
    for mode in ("t0", "anchored"):
        kept = res[f"video_{mode}"]["out"][0]
        row[f"{mode}_kept"] = int(kept.numel())
        # paired per-token ratio video / image, round by round
        row[f"{mode}_vs_image"] = median(paired_ratios(
            [w / tokens for w in res[f"video_{mode}"]["wall"]], [w / plane for w in res[f"image_{mode}"]["wall"]]))
        row[f"{mode}_vs_image_cpu"] = median(paired_ratios(
            [c / tokens for c in res[f"video_{mode}"]["cpu"]], [c / plane for c in res[f"image_{mode}"]["cpu"]]))
        if reference is not None:  # on the clip's first REF_SLICES slices (a video too): it is slow
            kw, n_ref = MODES[mode], min(t, REF_SLICES)
            ref_pv, ref_grid = pv[: n_ref * gh * gw], torch.tensor([[n_ref, gh, gw]])
            ref_wall, _, ref = time_call(lambda: reference(ref_pv, ref_grid, **kw), 1)
            if ref[0] != pixelprune.select_video_tokens(ref_pv, ref_grid, **kw)[0].tolist():
                raise AssertionError(f"video {kind} {size} {mode}: selector and reference disagree")
            row[f"ref_{mode}_us"] = ref_wall / (n_ref * plane) * 1e6
            row[f"ref_{mode}_speedup"] = row[f"ref_{mode}_us"] / row[f"video_{mode}_us"]
    row["retention_t0"] = row["t0_kept"] / tokens
    row["retention_anchored"] = row["anchored_kept"] / tokens
    row["per_slice_kept_t0"] = np.bincount(res["video_t0"]["out"][0].numpy() // plane, minlength=t).tolist()
    row["t0_share_of_processor"] = median(paired_ratios(res["video_t0"]["wall"], res["processor"]["wall"]))
    row["t0_cpu_share_of_processor"] = median(paired_ratios(res["video_t0"]["cpu"], res["processor"]["cpu"]))
    row["t0_ok"] = "yes" if (row["t0_vs_image"] <= TARGET_VIDEO_T0
                             and row["t0_share_of_processor"] <= TARGET_VIDEO_SHARE) else "NO"
    row["anchored_ok"] = "yes" if row["anchored_vs_image"] <= TARGET_VIDEO_ANCHORED else "NO"
    return row


VIDEO_COLUMNS = [
    ("clip", "clip", ""), ("resolution", "res", ""), ("grid", "t x gh x gw", ""), ("tokens", "tokens", "d"),
    ("retention_t0", "kept@0", ".0%"), ("retention_anchored", "kept@0.02", ".0%"),
    ("video_t0_us", "video t0 us/tok", ".2f"), ("image_t0_us", "image t0 us/tok", ".2f"),
    ("t0_vs_image", "video/image t0", ".2f"), ("video_anchored_us", "video anch us/tok", ".2f"),
    ("image_anchored_us", "image anch us/tok", ".2f"), ("anchored_vs_image", "video/image anch", ".2f"),
    ("ref_t0_us", "naive t0 us/tok", ".0f"), ("ref_t0_speedup", "naive/t0", ".0f"),
    ("ref_anchored_speedup", "naive/anch", ".0f"), ("processor_us", "video processor us/tok", ".1f"),
    ("t0_share_of_processor", "t0/processor", ".1%"), ("t0_cpu_share_of_processor", "t0/processor CPU", ".1%"),
    ("video_t0_cpu_us", "video t0 CPU us/tok", ".2f"),
    ("t0_vs_image_cpu", "video/image t0 CPU", ".2f"), ("anchored_vs_image_cpu", "video/image anch CPU", ".2f"),
    ("t0_ok", "t0 target", ""), ("anchored_ok", "anch target", ""),
]


def default_clips() -> str:
    """``screenshots`` when the image set has been built, else ``words``."""
    try:
        return "screenshots" if load_images(False) else "words"
    except (FileNotFoundError, OSError):
        return "words"


def run_videos(args, repeats: int) -> list[dict]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # its sibling import
    from tests.reference_video_selector import reference_select_video

    proc = stock_video_processor()
    rows = []
    print(f"# video clips cut from: {args.clips}", flush=True)
    for size in VIDEO_SIZES:
        for kind, frames in synth_clips(args.clips, size).items():
            rows.append(bench_video(kind, size, frames, proc, repeats, None if args.no_reference else reference_select_video,
                                    args.clips))
            r = rows[-1]
            print(f"[video] {kind} {size} {r['grid']}: t0 {r['video_t0_us']:.2f} us/tok ({r['t0_vs_image']:.2f}x image), "
                  f"anchored {r['video_anchored_us']:.2f} ({r['anchored_vs_image']:.2f}x), processor "
                  f"{r['processor_us']:.1f}, kept@0 {r['retention_t0']:.0%} per slice {r['per_slice_kept_t0']}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 image per class, 1080p and 4K only, fewer repeats")
    ap.add_argument("--per-class", type=int, default=3, help="images per (type, resolution)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--out", default=None, help="result name (default bench_selector[_threadsN])")
    ap.add_argument("--profile", action="store_true", help="record each mode's top functions (cProfile) in the JSON")
    ap.add_argument("--no-reference", action="store_true", help="skip the naive per-token reference")
    ap.add_argument("--no-video", action="store_true", help="skip the video rows")
    ap.add_argument("--video-only", action="store_true", help="only the video rows")
    ap.add_argument("--clips", choices=["screenshots", "words"], default=None,
                    help="what the video clips are cut from: the image set's screenshots, or rendered word "
                         "pages (default: screenshots when the image set exists)")
    args = ap.parse_args(argv)
    args.clips = args.clips or default_clips()
    if args.threads:
        torch.set_num_threads(args.threads)
    classes = ["1080p", "4k"] if args.quick else CLASSES
    per_class, repeats = (1, 3) if args.quick else (args.per_class, args.repeats)

    from tests.reference_selector import reference_select  # the tests' oracle: one naive implementation

    proc = stock_image_processor()
    info = machine_info()
    print(f"# selector benchmark: {info['cpu']}, {info['cpu_count']} cores, torch {info['torch']} "
          f"({info['torch_threads']} threads), stock image processor backend: {proc.backend_name}")
    rows = []
    if not args.video_only:
        records = pick(load_images(args.quick), per_class, classes)
        if not records:
            sys.exit("error: no documents/screenshots in the image set; run benchmarks/make_image_set.py")
        for i, rec in enumerate(records):
            ref_modes = [] if args.no_reference else ["t0", "anchored"]
            rows.append(bench_image(rec, proc, repeats, reference_select, ref_modes, args.profile))
            r = rows[-1]
            print(f"[{i + 1}/{len(records)}] {r['image']} {r['grid']} t0 {r['t0_us']:.2f} us/tok, "
                  f"anchored {r['anchored_us']:.2f}, processor {r['processor_us']:.1f}", flush=True)
    video_rows = [] if args.no_video else run_videos(args, repeats)
    name = args.out or ("bench_selector" if not args.threads else f"bench_selector_threads{args.threads}")
    payload = dict(
        machine=info, processor_backend=proc.backend_name, threshold=THRESHOLD, repeats=repeats,
        targets=dict(t0_us=TARGET_T0_US, t0_share=TARGET_T0_SHARE, anchored_us=TARGET_ANCHORED_US,
                     video_t0_vs_image=TARGET_VIDEO_T0, video_anchored_vs_image=TARGET_VIDEO_ANCHORED,
                     video_t0_share=TARGET_VIDEO_SHARE),
        images=rows, videos=video_rows, clip_frames=CLIP_FRAMES, scroll_px=SCROLL_PX,
        clips=None if args.no_video else args.clips)
    if rows:
        finish(name, summarise(rows), COLUMNS, payload, args.quick)
    if video_rows:
        print("\n# video (per token; image = the image selector on the clip's first slice as a still image)")
        finish(f"{name}_video", video_rows, VIDEO_COLUMNS, payload, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
