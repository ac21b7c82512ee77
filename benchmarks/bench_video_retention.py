"""Video token retention: how many video tokens PixelPrune keeps, per clip and per type of video.

Every clip of the set built by ``make_video_set.py`` is decoded and preprocessed the way the stock
Qwen3-VL / Qwen3.5 video processor does it: ``transformers.video_utils.load_video`` through PyAV
(``pip install av``) with the processor's own frame sampling (``sample_frames``: 2 fps, at least
4 frames, as the checkpoints' ``video_preprocessor_config.json`` says), then the stock
``Qwen3VLVideoProcessor`` (checkpoint defaults: 16 px patches, 2 frames per temporal slice, 2x2
merge, 4096..25165824 pixels) on the decoded frames. ``pixelprune.select_video_keep_mask`` then
runs on its ``pixel_values_videos`` with the processor's geometry (``PatchGeometry`` of the video
processor: patch, merge and temporal sizes, ``image_mean`` / ``image_std``) at threshold 0 and at
anchored 0.02.

Printed: per clip the kept / total merged tokens (what reaches the LLM), per-slice retention
(min / median / max over the clip's temporal slices), decode, stock processor and selector times;
for screen recordings also the retention on the lossless PNG frames the clip was encoded from
(what H.264 costs); and per type the totals. JSON goes to ``benchmarks/results/``.
With matplotlib (``pip install pixelprune[plots]``) it also draws
``benchmarks/results/video_retention_per_slice.png``: each clip's kept share per temporal slice
at threshold 0 (``--replot`` redraws it from the saved JSON); without matplotlib it says so and
writes the JSON alone.

Usage::

    python benchmarks/make_video_set.py                 # once: the clips
    python benchmarks/bench_video_retention.py          # ~1 min on 2 cores
    python benchmarks/bench_video_retention.py --quick  # the 720p screen clips only
"""

from __future__ import annotations

import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(BENCH_DIR.parent / "tests"))

import pixelprune  # noqa: E402
from common import RESULTS_DIR, benchmark_parser, interleaved, median, parse_args, print_table, write_json  # noqa: E402
from pixelprune.core.selector import PatchGeometry  # noqa: E402

LOG = logging.getLogger("bench_video_retention")

# name -> select_video_keep_mask keyword arguments (method / metric: the defaults)
MODES: dict[str, dict[str, Any]] = {
    "t0": dict(threshold=0.0),
    "a002": dict(threshold=0.02, anchored=True),
}
TYPES = ("scroll", "typing", "slides", "natural")


def stock_video_processor(cap_pixels_per_frame: bool = False):
    """The stock ``Qwen3VLVideoProcessor`` with the Qwen3-VL / Qwen3.5 checkpoints' video config
    (needs torchvision). ``cap_pixels_per_frame`` is set explicitly (the checkpoints leave it unset,
    which transformers 5.19-5.24 treat as False with a warning)."""
    from tiny_models import video_processor_dict
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    config = {k: v for k, v in video_processor_dict().items() if k not in ("processor_class", "video_processor_type")}
    return Qwen3VLVideoProcessor(**config, cap_pixels_per_frame=cap_pixels_per_frame)


def decode_clip(path: str | Path, video_processor) -> tuple[np.ndarray, Any]:
    """Decode ``path`` with PyAV through ``transformers.video_utils.load_video``, sampling frames with
    the processor's own ``sample_frames`` (its default fps), as ``processor(videos=path)`` does.
    Returns the sampled frames ``(n, H, W, 3)`` uint8 and their ``VideoMetadata``."""
    from transformers.video_utils import load_video

    return load_video(str(path), backend="pyav", sample_indices_fn=video_processor.sample_frames)


def preprocess(frames: np.ndarray, metadata: Any, video_processor, device: torch.device | None = None,
               **kwargs: Any):
    """The stock video processor on already-sampled frames (``do_sample_frames=False``); ``kwargs``
    are processor call arguments (e.g. ``size``)."""
    kw = {"device": str(device)} if device is not None and device.type != "cpu" else {}
    return video_processor(videos=[frames], video_metadata=[metadata], do_sample_frames=False,
                           return_tensors="pt", **kw, **kwargs)


def selector_kwargs(geometry: PatchGeometry) -> dict[str, Any]:
    return dict(merge_size=geometry.merge_size, temporal_patch_size=geometry.temporal_patch_size,
                patch_size=geometry.patch_size, image_mean=geometry.image_mean, image_std=geometry.image_std)


def _slice_stats(mask: torch.Tensor, grid: torch.Tensor, merge_size: int) -> dict[str, Any]:
    per_slice = pixelprune.video_kept_per_slice(mask, grid, merge_size)[0]
    plane = pixelprune.video_tokens_per_slice(grid, merge_size)[0]
    frac = (per_slice.double() / plane).tolist()
    return dict(kept=int(mask.sum()), per_slice_kept=per_slice.tolist(), slice_min=min(frac),
                slice_median=statistics.median(frac), slice_max=max(frac))


def clip_retention(path: str | Path, video_processor, *, geometry: PatchGeometry | None = None,
                   modes: dict[str, dict[str, Any]] = MODES, device: torch.device = torch.device("cpu"),
                   dtype: torch.dtype = torch.float32, repeats: int = 3,
                   frames_dir: str | Path | None = None) -> dict[str, Any]:
    """Retention of one clip: decode (stock sampling), stock preprocessing, PixelPrune selection.

    Returns the sampled frame indices, the grid, total merged tokens, per mode the kept count,
    retention and per-slice statistics (kept per slice, min / median / max of the kept fraction),
    and the median wall / CPU seconds of decoding, the stock processor and each selector mode
    (interleaved rounds, one warm-up each). With ``frames_dir`` (the lossless PNG frames the clip
    was encoded from, ``0000.png``...), also ``lossless_*`` retention on the same sampled frames.
    """
    from PIL import Image

    geometry = geometry or PatchGeometry.from_image_processor(video_processor)
    kw = selector_kwargs(geometry)
    t0 = time.perf_counter()
    c0 = time.process_time()
    frames, metadata = decode_clip(path, video_processor)
    decode_wall, decode_cpu = time.perf_counter() - t0, time.process_time() - c0
    feats = preprocess(frames, metadata, video_processor, device)
    pv = feats["pixel_values_videos"].to(device=device, dtype=dtype)
    grid = feats["video_grid_thw"]
    t, gh, gw = (int(x) for x in grid[0])
    merge = geometry.merge_size
    tokens = t * (gh // merge) * (gw // merge)
    fns = {"processor": lambda: preprocess(frames, metadata, video_processor, device)}
    for name, mode_kw in modes.items():
        fns[name] = lambda mode_kw=mode_kw: pixelprune.select_video_keep_mask(pv, grid, **kw, **mode_kw)
    res = interleaved(fns, repeats, device=device)
    row: dict[str, Any] = dict(
        source_frames=int(metadata.total_num_frames), source_fps=float(metadata.fps),
        frame_indices=[int(i) for i in metadata.frames_indices], frames=int(len(frames)),
        frame_size=f"{frames.shape[2]}x{frames.shape[1]}", resized=f"{gw * geometry.patch_size}x{gh * geometry.patch_size}",
        grid=[t, gh // merge, gw // merge], tokens=tokens, dtype=str(dtype).removeprefix("torch."),
        decode_s=decode_wall, decode_cpu_s=decode_cpu,
        processor_s=median(res["processor"]["wall"]), processor_cpu_s=median(res["processor"]["cpu"]),
    )
    for name in modes:
        mask = res[name]["out"]
        stats = _slice_stats(mask, grid, merge)
        row.update({f"{name}_{k}": v for k, v in stats.items()})
        row[f"{name}_retention"] = stats["kept"] / tokens
        row[f"{name}_s"] = median(res[name]["wall"])
        row[f"{name}_cpu_s"] = median(res[name]["cpu"])
        row[f"{name}_share_of_processor"] = row[f"{name}_s"] / row["processor_s"]
    if frames_dir is not None:
        pngs = sorted(Path(frames_dir).glob("*.png"))
        if len(pngs) != metadata.total_num_frames:
            raise ValueError(f"{frames_dir} has {len(pngs)} PNG frames, the clip {path} has {metadata.total_num_frames}")
        lossless = np.stack([np.asarray(Image.open(pngs[i]).convert("RGB")) for i in metadata.frames_indices])
        lfeats = preprocess(lossless, metadata, video_processor)
        for name, mode_kw in modes.items():
            mask = pixelprune.select_video_keep_mask(lfeats["pixel_values_videos"].to(dtype=dtype),
                                                     lfeats["video_grid_thw"], **kw, **mode_kw)
            row[f"lossless_{name}_kept"] = int(mask.sum())
            row[f"lossless_{name}_retention"] = int(mask.sum()) / tokens
    return row


CLIP_COLUMNS = [
    ("clip", "clip", ""), ("type", "type", ""), ("resized", "processed WxH", ""), ("frames", "frames", "d"),
    ("grid_str", "t x gh x gw", ""), ("tokens", "tokens", "d"),
    ("t0_kept", "kept@0", "d"), ("t0_retention", "kept@0 %", ".1%"),
    ("t0_slices", "per slice @0 min/med/max", ""),
    ("a002_retention", "kept@0.02a %", ".1%"), ("a002_slices", "per slice @0.02a min/med/max", ""),
    ("lossless_t0_retention", "lossless kept@0 %", ".1%"),
    ("decode_ms", "decode ms", ".0f"), ("processor_ms", "processor ms", ".0f"),
    ("t0_ms", "selector t0 ms", ".1f"), ("a002_ms", "selector 0.02a ms", ".1f"),
    ("t0_share_of_processor", "t0/processor", ".1%"),
]
TYPE_COLUMNS = [
    ("type", "type", ""), ("resolution", "res", ""), ("clips", "clips", "d"), ("tokens", "tokens", "d"),
    ("t0_kept", "kept@0", "d"), ("t0_retention", "kept@0 %", ".1%"),
    ("a002_kept", "kept@0.02a", "d"), ("a002_retention", "kept@0.02a %", ".1%"),
    ("lossless_t0_retention", "lossless kept@0 %", ".1%"),
]


def _fmt_slices(row: dict, mode: str) -> str:
    return "/".join(f"{row[f'{mode}_slice_{k}']:.0%}" for k in ("min", "median", "max"))


def summarize(rows: list[dict]) -> list[dict]:
    """Totals per (type, resolution), per type over its resolutions (when it has several), and
    over all screen recordings (``screen (all)``), in a fixed order."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["type"], r["resolution"]), []).append(r)
    for kind in {r["type"] for r in rows}:
        if sum(1 for k, _ in list(groups) if k == kind) > 1:
            groups[(kind, "all")] = [r for r in rows if r["type"] == kind]
    screen = [r for r in rows if r["type"] != "natural"]
    if screen:
        groups[("screen (all)", "all")] = screen
    order = {k: i for i, k in enumerate((*TYPES, "screen (all)"))}
    res_order = {"720p": 0, "1080p": 1, "native": 2, "all": 3}
    out = []
    for (kind, res), members in sorted(groups.items(), key=lambda kv: (order.get(kv[0][0], len(order)), kv[0][0],
                                                                       res_order.get(kv[0][1], 2), kv[0][1])):
        tokens = sum(m["tokens"] for m in members)
        s = dict(type=kind, resolution=res, clips=len(members), tokens=tokens)
        for mode in MODES:
            s[f"{mode}_kept"] = sum(m[f"{mode}_kept"] for m in members)
            s[f"{mode}_retention"] = s[f"{mode}_kept"] / tokens
        if all("lossless_t0_kept" in m for m in members):
            s["lossless_t0_retention"] = sum(m["lossless_t0_kept"] for m in members) / tokens
        out.append(s)
    return out


def plot(rows: list[dict], suffix: str = "") -> Path | None:
    """Kept share per temporal slice at threshold 0, one line per clip (screen clips solid,
    natural ones dashed): slice 0 costs what an image costs, later slices what changed."""
    try:
        import matplotlib
    except ImportError:
        LOG.warning("matplotlib is not installed (pip install pixelprune[plots]): no plot written")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {kind: f"C{i}" for i, kind in enumerate(TYPES)}
    panels = [("screen recordings", [r for r in rows if r["type"] != "natural"]),
              ("natural video", [r for r in rows if r["type"] == "natural"])]
    panels = [(title, members) for title, members in panels if members]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.0 * len(panels), 4.2), squeeze=False)
    for ax, (title, members) in zip(axes[0], panels):
        for r in members:
            per_slice = r["t0_per_slice_kept"]
            slice_tokens = r["tokens"] / len(per_slice)
            ax.plot(range(len(per_slice)), [k / slice_tokens for k in per_slice], marker="o", markersize=3,
                    color=colours.get(r["type"], "C9"), linestyle="-" if r["resolution"] != "1080p" else ":",
                    label=f"{r['clip']} ({r['t0_retention']:.0%})")
        ax.set_xlabel("temporal slice (2 frames = 1 s at 2 fps)")
        ax.set_ylim(0, 1.05)
        ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2 if len(members) > 3 else 1)
    axes[0][0].set_ylabel("video tokens kept per slice (threshold 0)")
    fig.suptitle("PixelPrune video retention (Qwen3-VL video processor defaults)")
    fig.tight_layout()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"video_retention_per_slice{suffix}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = benchmark_parser(__doc__, quick_help="the 720p screen clips only", repeats=3)
    ap.add_argument("--videos", type=Path, default=None, help="video set folder (default benchmarks/data/videos)")
    ap.add_argument("--cap-pixels-per-frame", action="store_true",
                    help="the qwen-vl-utils per-frame pixel cap (transformers' cap_pixels_per_frame=True)")
    ap.add_argument("--replot", action="store_true", help="redraw the plot from the saved JSON only")
    args = parse_args(ap, argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    name = args.out or "bench_video_retention"
    if args.replot:
        saved = RESULTS_DIR / f"{name}{'_quick' if args.quick else ''}.json"
        path = plot(json.loads(saved.read_text())["clips"], "_quick" if args.quick else "")
        print(f"wrote {path}" if path else "no plot written")
        return 0 if path else 1
    from make_video_set import DEFAULT_OUT, load_manifest

    try:
        import av  # noqa: F401
    except ImportError:
        sys.exit("error: PyAV is needed to decode the clips: pip install av")
    clips = load_manifest(args.videos or DEFAULT_OUT)
    if args.quick:
        clips = [c for c in clips if c["resolution"] == "720p"]
    proc = stock_video_processor(args.cap_pixels_per_frame)
    geometry = PatchGeometry.from_image_processor(proc)
    rows = []
    for clip in clips:
        row = dict(clip=clip["name"], type=clip["type"], resolution=clip["resolution"],
                   size=f"{clip['width']}x{clip['height']}", codec=clip["codec"])
        row.update(clip_retention(clip["path"], proc, geometry=geometry, device=args.device, dtype=args.torch_dtype,
                                  repeats=args.repeats, frames_dir=clip.get("frames_dir")))
        row["grid_str"] = "x".join(str(g) for g in row["grid"])
        for mode in MODES:
            row[f"{mode}_slices"] = _fmt_slices(row, mode)
            row[f"{mode}_ms"] = row[f"{mode}_s"] * 1e3
        row["decode_ms"], row["processor_ms"] = row["decode_s"] * 1e3, row["processor_s"] * 1e3
        rows.append(row)
        print(f"[{row['clip']}] {row['grid_str']} {row['tokens']} tokens: kept@0 {row['t0_retention']:.1%}, "
              f"kept@0.02a {row['a002_retention']:.1%}; per slice @0 {row['t0_per_slice_kept']}", flush=True)
    print()
    clip_table = print_table(rows, CLIP_COLUMNS)
    print()
    summary = summarize(rows)
    type_table = print_table(summary, TYPE_COLUMNS)
    payload = dict(
        settings=dict(modes=MODES, device=str(args.device), dtype=args.dtype, repeats=args.repeats,
                      cap_pixels_per_frame=args.cap_pixels_per_frame, geometry=geometry.__dict__ | {},
                      video_processor={k: v for k, v in proc.to_dict().items()
                                       if k in ("fps", "min_frames", "max_frames", "size", "patch_size", "merge_size",
                                                "temporal_patch_size", "image_mean", "image_std")}),
        clips=rows, summary=summary, table_markdown=clip_table + "\n\n" + type_table,
    )
    path = write_json(name, payload, args.quick)
    print(f"\nwrote {path}")
    plot_path = plot(rows, "_quick" if args.quick else "")
    if plot_path:
        print(f"wrote {plot_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
