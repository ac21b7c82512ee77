"""Prefill speed-up in transformers: stock vs PixelPrune on the same images (or videos), Qwen3-VL-2B or Qwen3.5-2B widths.

The model (``bench_models.py``) has the real widths of Qwen3-VL-2B (``--family qwen3_vl``) or
Qwen3.5-2B (``--family qwen3_5``: hybrid gated delta-net / full-attention LLM) with random weights.
On CPU the depth is reduced (``--vit-depth``, ``--llm-layers``; default 2 ViT blocks, and 2 LLM
layers for Qwen3-VL, 4 for Qwen3.5 = one 3 linear + 1 full group): every layer of a stack costs the
same, so per-layer times scale, but fixed costs (patch embedding, mergers, embeddings) weigh a
little more than at full depth. Images are capped at ``--max-pixels`` (default 1024x1024) to keep a
run within ~10 minutes on 2 cores.

Per image: the stock image processor (timed), the selector, then the ViT (``get_image_features``:
all patches for stock, kept patches for PixelPrune) and the LLM prefill (the model's ``forward`` on
precomputed image features, ``logits_to_keep=1`` as ``generate`` does). Stock and PixelPrune calls of
each stage are **interleaved** (a warm-up each, then ``--repeats`` rounds alternating AB, BA, ...:
``common.interleaved``) so that drift and order effects cancel; times are medians over rounds,
"noise" is the spread (max - min) / median of a stage's rounds, and the range next to a speed-up is
that of the round-by-round paired ratios. "Stock" is the same model object called without
``image_keep_mask``, which runs the stock transformers code path unchanged.

The FLOP-ideal speed-up counts matrix-product FLOPs (ViT: ``pixelprune.vit_flops``; LLM:
``bench_models.llm_flops``) of the measured (reduced-depth) model, stock vs kept tokens.
Targets (issue 7): measured speed-up >= 80% of the FLOP-ideal on documents; on photos (nothing to
prune) the PixelPrune path at most 2% slower than stock.

**Videos** (``--videos [DIR]``, issue 14; the set built by ``make_video_set.py``): per clip the
stock Qwen3-VL video processor (checkpoint defaults: frames sampled at 2 fps, decoded through PyAV as
``bench_video_retention.py`` does), ``pixelprune.select_video_keep_mask`` (selector time), then
``get_video_features`` (all patches vs kept patches with ``video_keep_mask``; attention within each
temporal slice as stock) and the LLM prefill of a prompt laid out as the processor writes it (per
slice a 6-token timestamp, ``<|vision_start|>``, the slice's placeholders, ``<|vision_end|>``), stock
and PixelPrune interleaved as for images. The ViT FLOP-ideal counts attention per temporal slice, as
``pixelprune inspect`` does for a video. To fit ~10 minutes on 2 loaded cores, a clip is **capped**
to its first ``--max-frames`` sampled frames (default 8 = 4 temporal slices = 4 s at 2 fps; the
sampling interval is unchanged) and ``--max-pixels`` per frame (default 460,800 = half a 720p frame:
896x480 for 16:9 clips, which the stock processor would encode at up to ~1 Mpx per frame), one clip
per type (``--per-type``: the 720p screen recordings and ``vtest``). Targets (issue 14): screen
recordings (scroll, typing, slides) at >= 80% of the FLOP-ideal; natural video (little or nothing
to prune) at most 2% slower than stock. ``benchmarks/results/prefill_video.png`` plots measured vs
FLOP-ideal per type (needs matplotlib, ``pip install pixelprune[plots]``; skipped with a message without it).

    python benchmarks/bench_prefill.py [--family qwen3_vl|qwen3_5] [--quick] [--repeats N] [--max-pixels N]
    python benchmarks/bench_prefill.py --videos --threads 1 --clock cpu [--max-frames N] [--max-pixels N]
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_models import (  # noqa: E402, F401 (the widths: bench_vllm_serve.py imports them from here)
    FULL_DEPTH, LABEL, QWEN3_VL_2B_TEXT, QWEN3_VL_2B_VISION, build_model, llm_flops,
    make_inputs, make_video_inputs,
)
from bench_video_retention import TYPES as VIDEO_TYPES  # noqa: E402
from bench_video_retention import decode_clip, preprocess, selector_kwargs, stock_video_processor  # noqa: E402
from common import (  # noqa: E402
    REPO_ROOT, RESULTS_DIR, benchmark_parser, finish, interleaved, load_images, machine_info, median, open_rgb,
    paired_ratios, parse_args, pick_per_type, print_table, spread, stock_image_processor, time_call,
)
from make_video_set import DEFAULT_OUT as DEFAULT_VIDEO_DIR  # noqa: E402
from make_video_set import load_manifest  # noqa: E402

import pixelprune  # noqa: E402
from pixelprune.core.selector import PatchGeometry  # noqa: E402
from pixelprune.vit_flops import VisionTowerConfig, VitFlops, estimate_vit_flops  # noqa: E402

LOG = logging.getLogger("bench_prefill")
IMAGE_MAX_PIXELS, IMAGE_PER_TYPE = 1024 * 1024, 2
# videos: ~8 minutes of CPU time on one thread at 2 + 2 layers (a stock prefill of one 1,680-token clip ~15 s)
VIDEO_MAX_FRAMES, VIDEO_MAX_PIXELS, VIDEO_PER_TYPE = 8, 1280 * 720 // 2, 1


MODALITY_KEYS = {"image": ("get_image_features", "image_keep_mask"),
                 "video": ("get_video_features", "video_keep_mask")}


@torch.inference_mode()
def bench_image(rec: dict, family: str, model, config, proc, repeats: int, max_pixels: int,
                clock: str = "wall") -> dict:
    image = open_rgb(rec["path"])
    proc_wall, proc_cpu, feats = time_call(lambda: proc(images=image, return_tensors="pt", size={
        "shortest_edge": 65536, "longest_edge": max_pixels}), 1)
    pv, grid = feats["pixel_values"], feats["image_grid_thw"]
    # the selector runs where the processor runs (CPU, float32 pixels); the model gets them on its device
    sel_wall, sel_cpu, keep = time_call(lambda: pixelprune.select_keep_mask(pv, grid), repeats)
    tokens, kept = keep.numel(), int(keep.sum())
    row = dict(image=Path(rec["path"]).name, type=rec["type"], resolution=rec["resolution"],
               grid=f"{int(grid[0, 1]) // 2}x{int(grid[0, 2]) // 2}", tokens=tokens, kept=kept,
               retention=kept / tokens, processor_ms=(proc_cpu if clock == "cpu" else proc_wall) * 1e3,
               selector_ms=(sel_cpu if clock == "cpu" else sel_wall) * 1e3)
    m2 = config.vision_config.spatial_merge_size**2
    inputs = {"stock": make_inputs(family, grid, tokens), "pixelprune": make_inputs(family, grid, kept)}
    # ViT FLOPs: the image is one attention unit
    flops = estimate_vit_flops([tokens * m2], [kept * m2], VisionTowerConfig.from_vision_config(config.vision_config))
    time_prefill(row, model, config, "image", pv, grid, keep, inputs, flops, repeats, clock)
    return row


@torch.inference_mode()
def bench_video(clip: dict, family: str, model, config, proc, repeats: int, max_frames: int, max_pixels: int,
                clock: str = "wall", return_outputs: bool = False) -> dict | tuple[dict, dict]:
    """One clip: decode (stock 2 fps sampling), keep its first ``max_frames`` sampled frames, the
    stock video processor at most ``max_pixels`` per frame, the selector, then ViT and LLM prefill,
    stock vs PixelPrune. With ``return_outputs`` also the last LLM outputs of both (for tests)."""
    frames, metadata = decode_clip(clip["path"], proc)
    frames = frames[:max_frames]  # the first seconds at the stock rate: the sampling interval is unchanged
    metadata = dataclasses.replace(metadata, frames_indices=list(metadata.frames_indices)[:len(frames)])
    # the stock budget is over the whole clip (t * h * w): cap it at max_pixels per sampled frame
    size = {"shortest_edge": proc.size["shortest_edge"],
            "longest_edge": min(proc.size["longest_edge"], len(frames) * max_pixels)}
    proc_wall, proc_cpu, feats = time_call(lambda: preprocess(frames, metadata, proc, size=size), 1)
    pv, grid = feats["pixel_values_videos"], feats["video_grid_thw"]
    geometry = PatchGeometry.from_image_processor(proc)
    kw = selector_kwargs(geometry)
    sel_wall, sel_cpu, keep = time_call(lambda: pixelprune.select_video_keep_mask(pv, grid, **kw), repeats)
    merge = geometry.merge_size
    plane = int(pixelprune.video_tokens_per_slice(grid, merge)[0])
    per_slice = [int(k) for k in pixelprune.video_kept_per_slice(keep, grid, merge)[0]]
    t, gh, gw = (int(x) for x in grid[0])
    tokens, kept = keep.numel(), int(keep.sum())
    row = dict(clip=clip["name"], type=clip["type"], resolution=clip["resolution"], frames=len(frames),
               resized=f"{gw * geometry.patch_size}x{gh * geometry.patch_size}",
               grid=f"{t}x{gh // merge}x{gw // merge}", tokens=tokens, kept=kept, retention=kept / tokens,
               per_slice_kept=per_slice, processor_ms=(proc_cpu if clock == "cpu" else proc_wall) * 1e3,
               selector_ms=(sel_cpu if clock == "cpu" else sel_wall) * 1e3)
    inputs = {"stock": make_video_inputs(family, grid, [plane] * t),
              "pixelprune": make_video_inputs(family, grid, per_slice)}
    # ViT FLOPs as `pixelprune inspect` counts a video's: every temporal slice is one attention unit
    m2 = merge**2
    flops = estimate_vit_flops([plane * m2] * t, [k * m2 for k in per_slice],
                               VisionTowerConfig.from_vision_config(config.vision_config))
    outputs = time_prefill(row, model, config, "video", pv, grid, keep, inputs, flops, repeats, clock)
    return (row, outputs) if return_outputs else row


def time_prefill(row: dict, model, config, modality: str, pv: torch.Tensor, grid: torch.Tensor,
                 keep: torch.Tensor, inputs: dict[str, dict], flops: VitFlops, repeats: int, clock: str) -> dict:
    """Time the ViT and the LLM prefill of one image or video, stock vs PixelPrune (interleaved), and
    add times, speed-ups and the FLOP-ideal to ``row``. ``inputs``: the stock and the PixelPrune
    prompt (``make_inputs`` / ``make_video_inputs``); ``flops``: ViT FLOPs of all vs kept patches.
    Returns the last LLM outputs per variant."""
    encode_name, mask_key = MODALITY_KEYS[modality]
    encode = getattr(model.model, encode_name)
    pv = pv.to(model.device, model.dtype)
    masks = {"stock": None, "pixelprune": keep}
    extra = {n: {} if m is None else {mask_key: m} for n, m in masks.items()}
    vit = interleaved({n: (lambda n=n: encode(pv, grid, return_dict=True, **extra[n])) for n in masks},
                      repeats, device=model.device)
    inputs = {n: {k: v.to(model.device) for k, v in inputs[n].items()} for n in masks}
    llm = interleaved({n: (lambda n=n: model(**inputs[n], mm_encoder_outputs={modality: vit[n]["out"]},
                                             logits_to_keep=1, use_cache=True, **extra[n])) for n in masks},
                      repeats, device=model.device)
    for n in masks:
        vit_t, llm_t = vit[n][clock], llm[n][clock]
        row[f"{n}_vit_ms"], row[f"{n}_llm_ms"] = median(vit_t) * 1e3, median(llm_t) * 1e3
        row[f"{n}_vit_min_ms"], row[f"{n}_llm_min_ms"] = min(vit_t) * 1e3, min(llm_t) * 1e3
        row[f"{n}_vit_noise"], row[f"{n}_llm_noise"] = spread(vit_t), spread(llm_t)
        row[f"{n}_vit_rounds_ms"] = [t * 1e3 for t in vit_t]
        row[f"{n}_llm_rounds_ms"] = [t * 1e3 for t in llm_t]
        row[f"{n}_seq"] = inputs[n]["input_ids"].shape[1]
    sel_s = row["selector_ms"] / 1e3
    # per round: stock (ViT + LLM) / PixelPrune (selector + ViT + LLM), paired by round
    stock_rounds = [a + b for a, b in zip(vit["stock"][clock], llm["stock"][clock])]
    pp_rounds = [sel_s + a + b for a, b in zip(vit["pixelprune"][clock], llm["pixelprune"][clock])]
    model_ratios = paired_ratios(stock_rounds, pp_rounds)
    row["model_noise"] = max(spread(stock_rounds), spread(pp_rounds))
    row["model_speedup_lo"], row["model_speedup_hi"] = min(model_ratios), max(model_ratios)
    row["pp_overhead_rounds"] = [1 / r - 1 for r in model_ratios]
    # end to end from the preprocessed pixels' source: processor (+ selector) + ViT + LLM prefill
    row["stock_total_ms"] = row["processor_ms"] + row["stock_vit_ms"] + row["stock_llm_ms"]
    row["pixelprune_total_ms"] = (row["processor_ms"] + row["selector_ms"] + row["pixelprune_vit_ms"]
                                  + row["pixelprune_llm_ms"])
    row["vit_speedup"] = row["stock_vit_ms"] / row["pixelprune_vit_ms"]
    row["llm_speedup"] = row["stock_llm_ms"] / row["pixelprune_llm_ms"]
    row["model_speedup"] = ((row["stock_vit_ms"] + row["stock_llm_ms"])
                            / (row["selector_ms"] + row["pixelprune_vit_ms"] + row["pixelprune_llm_ms"]))
    row["total_speedup"] = row["stock_total_ms"] / row["pixelprune_total_ms"]
    # FLOP-ideal: ViT over patches (attention per image / per temporal slice), LLM over the prompt
    llm_stock, llm_kept = llm_flops(config, row["stock_seq"]), llm_flops(config, row["pixelprune_seq"])
    row["vit_flops_stock"], row["vit_flops_kept"] = flops.full, flops.kept
    row["llm_flops_stock"], row["llm_flops_kept"] = llm_stock, llm_kept
    row["ideal_vit_speedup"] = flops.full / flops.kept
    row["ideal_llm_speedup"] = llm_stock / llm_kept
    row["ideal_model_speedup"] = (flops.full + llm_stock) / (flops.kept + llm_kept)
    row["model_vs_ideal"] = row["model_speedup"] / row["ideal_model_speedup"]
    return {n: llm[n]["out"] for n in masks}


# types whose target is a share of the FLOP-ideal, and those whose target is PixelPrune's overhead
# (nothing or little to prune), with the summary key of that overhead
IDEAL_TARGET = ("documents", "scroll", "typing", "slides", "screen (all)")
OVERHEAD_TARGET = {"photos": "photo_overhead", "natural": "natural_overhead"}
IMAGE_TYPES = ("documents", "screenshots", "photos")


def summarise(rows: list[dict], types: tuple[str, ...] = IMAGE_TYPES, count_key: str = "images") -> list[dict]:
    """Medians per type (and over all screen recordings when ``types`` are the video types), with
    the targets' verdicts."""
    groups = [(kind, [r for r in rows if r["type"] == kind]) for kind in types]
    if types == VIDEO_TYPES:
        groups.append(("screen (all)", [r for r in rows if r["type"] != "natural"]))
    out = []
    for kind, rs in groups:
        if not rs:
            continue
        s = {"type": kind, count_key: len(rs)}
        for k in ("tokens", "retention", "processor_ms", "selector_ms", "stock_vit_ms", "pixelprune_vit_ms",
                  "stock_llm_ms", "pixelprune_llm_ms", "vit_speedup", "llm_speedup", "model_speedup",
                  "ideal_model_speedup", "model_vs_ideal", "total_speedup", "model_noise"):
            s[k] = median([r[k] for r in rs])
        s["speedup_range"] = (f"{min(r['model_speedup_lo'] for r in rs):.2f}-"
                              f"{max(r['model_speedup_hi'] for r in rs):.2f}")
        if kind in IDEAL_TARGET:
            s["min_model_vs_ideal"] = min(r["model_vs_ideal"] for r in rs)
            s["target"] = "yes" if s["model_vs_ideal"] >= 0.8 else "NO"
        elif kind in OVERHEAD_TARGET:
            # PixelPrune's extra time over stock, per image / clip the median of its paired rounds
            key = OVERHEAD_TARGET[kind]
            s[key] = median([median(r["pp_overhead_rounds"]) for r in rs])
            noise = s["model_noise"]
            s["target"] = ("yes" if s[key] <= 0.02 else "within noise" if s[key] <= noise else "NO")
            s["target"] += f" ({s[key]:+.1%})"
        out.append(s)
    return out


COLUMNS = [
    ("type", "type", ""), ("images", "n", "d"), ("tokens", "tokens", ".0f"), ("retention", "kept", ".0%"),
    ("processor_ms", "processor ms", ".0f"), ("selector_ms", "selector ms", ".1f"),
    ("stock_vit_ms", "ViT stock ms", ".0f"), ("pixelprune_vit_ms", "ViT PP ms", ".0f"),
    ("stock_llm_ms", "LLM stock ms", ".0f"), ("pixelprune_llm_ms", "LLM PP ms", ".0f"),
    ("vit_speedup", "ViT x", ".2f"), ("llm_speedup", "LLM x", ".2f"), ("model_speedup", "sel+ViT+LLM x", ".2f"),
    ("speedup_range", "paired rounds x", ""), ("model_noise", "noise", ".1%"),
    ("ideal_model_speedup", "FLOP-ideal x", ".2f"), ("model_vs_ideal", "of ideal", ".0%"),
    ("total_speedup", "incl. processor x", ".2f"), ("target", "target", ""),
]
VIDEO_COLUMNS = [("clips", "n", "d") if key == "images" else (key, head, fmt) for key, head, fmt in COLUMNS]
CLIP_COLUMNS = [
    ("clip", "clip", ""), ("resized", "processed WxH", ""), ("frames", "frames", "d"), ("grid", "t x h x w", ""),
    ("tokens", "tokens", "d"), ("retention", "kept", ".1%"), ("model_speedup", "sel+ViT+LLM x", ".2f"),
    ("ideal_model_speedup", "FLOP-ideal x", ".2f"), ("model_vs_ideal", "of ideal", ".0%"),
]


def plot(rows: list[dict], summary: list[dict], title: str, filename: str) -> Path | None:
    """Bars of the measured (selector + ViT + LLM) and the FLOP-ideal speed-up per clip type, each
    clip a dot, to ``benchmarks/results/<filename>`` (``prefill_video.png`` for the default result
    name). Skipped (logged) without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        LOG.warning("matplotlib is not installed (pip install pixelprune[plots]): no plot written")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    kinds = [s for s in summary if s["type"] in VIDEO_TYPES]
    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    width = 0.38
    for i, s in enumerate(kinds):
        rs = [r for r in rows if r["type"] == s["type"]]
        for off, key, colour, label in ((-width / 2, "model_speedup", "tab:blue", "measured (selector + ViT + LLM)"),
                                        (width / 2, "ideal_model_speedup", "tab:gray", "FLOP-ideal")):
            ax.bar(i + off, s[key], width, color=colour, alpha=0.8, label=label if i == 0 else None)
            ax.scatter([i + off] * len(rs), [r[key] for r in rs], s=12, color="black", zorder=3)
        ax.annotate(f"{s['model_vs_ideal']:.0%} of ideal\n{s['retention']:.0%} kept",
                    (i, max(s["model_speedup"], s["ideal_model_speedup"])), textcoords="offset points",
                    xytext=(0, 4), ha="center", fontsize=7)
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks(range(len(kinds)), [s["type"] for s in kinds])
    ax.set_ylabel("prefill speed-up vs stock (x)")
    ax.set_title(title, fontsize=8)
    ax.set_ylim(0, 1.2 * max(max(s["model_speedup"], s["ideal_model_speedup"]) for s in kinds))
    ax.legend(fontsize=7, loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = RESULTS_DIR / filename
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = benchmark_parser(__doc__, model=True,
                          quick_help="1 image (clip) per type, 1 ViT block, fewest LLM layers, 2 rounds")
    ap.add_argument("--videos", nargs="?", const=DEFAULT_VIDEO_DIR, type=Path, default=None, metavar="DIR",
                    help="time video clips instead of images: the set built by make_video_set.py "
                         f"(default folder {DEFAULT_VIDEO_DIR.relative_to(REPO_ROOT)}); --max-pixels is then per frame")
    ap.add_argument("--max-frames", type=int, default=VIDEO_MAX_FRAMES,
                    help=f"videos: the first N frames of the stock 2 fps sampling (default {VIDEO_MAX_FRAMES})")
    ap.add_argument("--types", default=None,
                    help="comma-separated types to time (default: all; images: documents,screenshots,photos; "
                         "videos: scroll,typing,slides,natural)")
    ap.set_defaults(max_pixels=None, per_type=None)  # the defaults depend on --videos
    args = parse_args(ap, argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.max_pixels is None:
        args.max_pixels = VIDEO_MAX_PIXELS if args.videos else IMAGE_MAX_PIXELS
    if args.per_type is None:
        args.per_type = VIDEO_PER_TYPE if args.videos else IMAGE_PER_TYPE
    if args.max_frames < 2:
        ap.error(f"--max-frames {args.max_frames}: at least 2 (one temporal slice of 2 frames)")
    all_types = VIDEO_TYPES if args.videos else IMAGE_TYPES
    types = tuple(args.types.split(",")) if args.types else all_types
    if not set(types) <= set(all_types):
        ap.error(f"--types {args.types}: expected some of {','.join(all_types)}")
    if args.quick:
        args.per_type, args.repeats, args.vit_depth = 1, 2, 1
        args.llm_layers = 2 if args.family == "qwen3_5" else 1
    if args.videos:
        try:
            import av  # noqa: F401
        except ImportError:
            ap.error("--videos: PyAV is needed to decode the clips (pip install av)")
        picked = pick_per_type(load_manifest(args.videos), args.per_type, resolutions=("720p", "1080p", "native"),
                               types=types)
    else:
        picked = pick_per_type(load_images(args.quick), args.per_type, types=types)
    model, config = build_model(args.family, args.vit_depth, args.llm_layers, args.attn,
                                device=args.device, dtype=args.torch_dtype)
    info = machine_info()
    full_vit, full_llm = FULL_DEPTH[args.family]
    layers = getattr(config.text_config, "layer_types", None) if args.family == "qwen3_5" else None
    model_label = (f"{LABEL[args.family]} widths, random weights, ViT depth {args.vit_depth}/{full_vit}, "
                   f"LLM layers {args.llm_layers}/{full_llm}" + (f" {layers}" if layers else ""))
    cap = (f"first {args.max_frames} frames at 2 fps, max_pixels {args.max_pixels} per frame" if args.videos
           else f"max_pixels {args.max_pixels}")
    print(f"# prefill benchmark ({'videos' if args.videos else 'images'}): {info['cpu']}, torch {info['torch']} "
          f"({info['torch_threads']} threads), {model_label}, {args.dtype} on {args.device}, {args.attn}, {cap}, "
          f"{args.clock} clock, {args.repeats} interleaved rounds, load average {info['loadavg_start'][0]:.2f}",
          flush=True)
    settings = dict(machine=info, family=args.family, model=model_label, vit_depth=args.vit_depth,
                    llm_layers=args.llm_layers, dtype=args.dtype, device=str(args.device), clock=args.clock,
                    attn=args.attn, max_pixels=args.max_pixels, repeats=args.repeats,
                    types=list(types), timing="interleaved rounds (AB, BA, ...) after one warm-up call each; medians")
    if args.videos:
        return run_videos(args, picked, model, config, model_label, settings)
    proc = stock_image_processor()
    # warm-up (lazy initialisation, allocator, oneDNN kernels) on the smallest image, not recorded
    bench_image(min(picked, key=lambda r: r["width"] * r["height"]), args.family, model, config, proc, 1,
                args.max_pixels)  # (the clock does not matter for the warm-up)
    rows = []
    for i, rec in enumerate(picked):
        rows.append(bench_image(rec, args.family, model, config, proc, args.repeats, args.max_pixels, args.clock))
        r = rows[-1]
        print(f"[{i + 1}/{len(picked)}] {r['image']} {r['grid']} kept {r['retention']:.0%}: " + _progress(r), flush=True)
    name = args.out or ("bench_prefill" if args.family == "qwen3_vl" else f"bench_prefill_{args.family}")
    finish(name, summarise(rows), COLUMNS, dict(settings, images=rows), args.quick)
    return 0


def _progress(r: dict) -> str:
    return (f"ViT {r['stock_vit_ms']:.0f} (noise {r['stock_vit_noise']:.0%}) -> {r['pixelprune_vit_ms']:.0f} "
            f"({r['pixelprune_vit_noise']:.0%}) ms, LLM {r['stock_llm_ms']:.0f} ({r['stock_llm_noise']:.0%}) -> "
            f"{r['pixelprune_llm_ms']:.0f} ({r['pixelprune_llm_noise']:.0%}) ms; x{r['model_speedup']:.2f} "
            f"(rounds {r['model_speedup_lo']:.2f}-{r['model_speedup_hi']:.2f}), ideal x{r['ideal_model_speedup']:.2f}")


def run_videos(args, picked: list[dict], model, config, model_label: str, settings: dict) -> int:
    proc = stock_video_processor()
    # warm-up on the smallest clip, not recorded
    bench_video(min(picked, key=lambda r: r["width"] * r["height"]), args.family, model, config, proc, 1,
                args.max_frames, args.max_pixels)
    rows = []
    for i, clip in enumerate(picked):
        rows.append(bench_video(clip, args.family, model, config, proc, args.repeats, args.max_frames,
                                args.max_pixels, args.clock))
        r = rows[-1]
        print(f"[{i + 1}/{len(picked)}] {r['clip']} {r['resized']} {r['grid']} kept {r['retention']:.0%} "
              f"(per slice {r['per_slice_kept']}): " + _progress(r), flush=True)
    summary = summarise(rows, VIDEO_TYPES, "clips")
    print()
    clip_table = print_table(rows, CLIP_COLUMNS)
    screen = next((s for s in summary if s["type"] == "screen (all)"), None)
    natural = next((s for s in summary if s["type"] == "natural"), None)
    verdict = {"screen_ideal_share": screen and screen["model_vs_ideal"],
               "screen_target_met": screen and screen["model_vs_ideal"] >= 0.8,
               "natural_overhead": natural and natural["natural_overhead"],
               "natural_target_met": natural and natural["natural_overhead"] <= 0.02}
    print(f"\ntargets: screen recordings >= 80% of the FLOP-ideal: {verdict['screen_target_met']} "
          f"({verdict['screen_ideal_share']}); natural video <= 2% slower: {verdict['natural_target_met']} "
          f"({verdict['natural_overhead']})")
    name = args.out or ("bench_prefill_video" if args.family == "qwen3_vl" else f"bench_prefill_video_{args.family}")
    png = plot(rows, summary, f"{model_label}\n{args.dtype}, first {args.max_frames} frames at 2 fps, "
               f"<= {args.max_pixels} px per frame, {args.clock} clock", f"{name.removeprefix('bench_')}"
               f"{'_quick' if args.quick else ''}.png")
    finish(name, summary, VIDEO_COLUMNS, dict(
        settings, videos=str(args.videos), max_frames=args.max_frames, sampling="stock Qwen3-VL video processor: 2 fps",
        targets=verdict, plot=png and str(png.relative_to(REPO_ROOT)), clips_table_markdown=clip_table, clips=rows),
        args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
