"""Prefill speed-up in transformers: stock vs PixelPrune on the same images, Qwen3-VL-2B or Qwen3.5-2B widths.

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

    python benchmarks/bench_prefill.py [--family qwen3_vl|qwen3_5] [--quick] [--repeats N] [--max-pixels N]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_models import (  # noqa: E402, F401 (the widths: bench_vllm_serve.py imports them from here)
    FULL_DEPTH, LABEL, QWEN3_VL_2B_TEXT, QWEN3_VL_2B_VISION, build_model, llm_flops,
    make_inputs,
)
from common import (  # noqa: E402
    benchmark_parser, finish, interleaved, load_images, machine_info, median, open_rgb, paired_ratios, parse_args, pick_per_type,
    spread, stock_image_processor, time_call,
)

import pixelprune  # noqa: E402
from pixelprune.vit_flops import VisionTowerConfig  # noqa: E402


@torch.inference_mode()
def bench_image(rec: dict, family: str, model, config, proc, repeats: int, max_pixels: int,
                clock: str = "wall") -> dict:
    image = open_rgb(rec["path"])
    proc_wall, proc_cpu, feats = time_call(lambda: proc(images=image, return_tensors="pt", size={
        "shortest_edge": 65536, "longest_edge": max_pixels}), 1)
    pv, grid = feats["pixel_values"], feats["image_grid_thw"]
    # the selector runs where the processor runs (CPU, float32 pixels); the model gets them on its device
    sel_wall, sel_cpu, keep = time_call(lambda: pixelprune.select_keep_mask(pv, grid), repeats)
    pv = pv.to(model.device, model.dtype)
    tokens, kept = keep.numel(), int(keep.sum())
    inner = model.model
    row = dict(image=Path(rec["path"]).name, type=rec["type"], resolution=rec["resolution"],
               grid=f"{int(grid[0, 1]) // 2}x{int(grid[0, 2]) // 2}", tokens=tokens, kept=kept,
               retention=kept / tokens, processor_ms=(proc_cpu if clock == "cpu" else proc_wall) * 1e3,
               selector_ms=(sel_cpu if clock == "cpu" else sel_wall) * 1e3)
    masks = {"stock": None, "pixelprune": keep}
    extra = {n: {} if m is None else {"image_keep_mask": m} for n, m in masks.items()}
    vit = interleaved({n: (lambda n=n: inner.get_image_features(pv, grid, return_dict=True, **extra[n]))
                       for n in masks}, repeats, device=model.device)
    inputs = {n: {k: v.to(model.device) for k, v in make_inputs(family, grid, tokens if m is None else kept).items()}
              for n, m in masks.items()}
    llm = interleaved({n: (lambda n=n: model(**inputs[n], mm_encoder_outputs={"image": vit[n]["out"]},
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
    # end to end from the image: processor (+ selector) + ViT + LLM prefill
    row["stock_total_ms"] = row["processor_ms"] + row["stock_vit_ms"] + row["stock_llm_ms"]
    row["pixelprune_total_ms"] = (row["processor_ms"] + row["selector_ms"] + row["pixelprune_vit_ms"]
                                  + row["pixelprune_llm_ms"])
    row["vit_speedup"] = row["stock_vit_ms"] / row["pixelprune_vit_ms"]
    row["llm_speedup"] = row["stock_llm_ms"] / row["pixelprune_llm_ms"]
    row["model_speedup"] = ((row["stock_vit_ms"] + row["stock_llm_ms"])
                            / (row["selector_ms"] + row["pixelprune_vit_ms"] + row["pixelprune_llm_ms"]))
    row["total_speedup"] = row["stock_total_ms"] / row["pixelprune_total_ms"]
    # FLOP-ideal: ViT over patches (attention per image), LLM over the prompt
    vt = VisionTowerConfig.from_vision_config(config.vision_config)
    m2 = vt.spatial_merge_size**2
    vit_stock = tokens * m2 * vt.linear_flops_per_patch + vt.attention_flops(tokens * m2)
    vit_kept = kept * m2 * vt.linear_flops_per_patch + vt.attention_flops(kept * m2)
    llm_stock, llm_kept = llm_flops(config, row["stock_seq"]), llm_flops(config, row["pixelprune_seq"])
    row["ideal_vit_speedup"] = vit_stock / vit_kept
    row["ideal_llm_speedup"] = llm_stock / llm_kept
    row["ideal_model_speedup"] = (vit_stock + llm_stock) / (vit_kept + llm_kept)
    row["model_vs_ideal"] = row["model_speedup"] / row["ideal_model_speedup"]
    return row


def summarise(rows: list[dict]) -> list[dict]:
    out = []
    for kind in ("documents", "screenshots", "photos"):
        rs = [r for r in rows if r["type"] == kind]
        if not rs:
            continue
        s = dict(type=kind, images=len(rs))
        for k in ("tokens", "retention", "processor_ms", "selector_ms", "stock_vit_ms", "pixelprune_vit_ms",
                  "stock_llm_ms", "pixelprune_llm_ms", "vit_speedup", "llm_speedup", "model_speedup",
                  "ideal_model_speedup", "model_vs_ideal", "total_speedup", "model_noise"):
            s[k] = median([r[k] for r in rs])
        s["speedup_range"] = (f"{min(r['model_speedup_lo'] for r in rs):.2f}-"
                              f"{max(r['model_speedup_hi'] for r in rs):.2f}")
        if kind == "documents":
            s["target"] = "yes" if s["model_vs_ideal"] >= 0.8 else "NO"
        elif kind == "photos":
            # PixelPrune's extra time over stock, per image the median of its paired rounds
            s["photo_overhead"] = median([median(r["pp_overhead_rounds"]) for r in rs])
            noise = s["model_noise"]
            s["target"] = ("yes" if s["photo_overhead"] <= 0.02 else
                           "within noise" if s["photo_overhead"] <= noise else "NO")
            s["target"] += f" ({s['photo_overhead']:+.1%})"
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


def main(argv: list[str] | None = None) -> int:
    ap = benchmark_parser(__doc__, model=True, quick_help="1 image per type, 1 ViT block, fewest LLM layers, 2 rounds")
    args = parse_args(ap, argv)
    if args.quick:
        args.per_type, args.repeats, args.vit_depth = 1, 2, 1
        args.llm_layers = 2 if args.family == "qwen3_5" else 1
    picked = pick_per_type(load_images(args.quick), args.per_type)
    model, config = build_model(args.family, args.vit_depth, args.llm_layers, args.attn,
                                device=args.device, dtype=args.torch_dtype)
    proc = stock_image_processor()
    info = machine_info()
    full_vit, full_llm = FULL_DEPTH[args.family]
    layers = getattr(config.text_config, "layer_types", None) if args.family == "qwen3_5" else None
    model_label = (f"{LABEL[args.family]} widths, random weights, ViT depth {args.vit_depth}/{full_vit}, "
                   f"LLM layers {args.llm_layers}/{full_llm}" + (f" {layers}" if layers else ""))
    print(f"# prefill benchmark: {info['cpu']}, torch {info['torch']} ({info['torch_threads']} threads), "
          f"{model_label}, {args.dtype} on {args.device}, {args.attn}, max_pixels {args.max_pixels}, {args.clock} clock, "
          f"{args.repeats} interleaved rounds, load average {info['loadavg_start'][0]:.2f}", flush=True)
    # warm-up (lazy initialisation, allocator, oneDNN kernels) on the smallest image, not recorded
    bench_image(min(picked, key=lambda r: r["width"] * r["height"]), args.family, model, config, proc, 1,
                args.max_pixels)  # (the clock does not matter for the warm-up)
    rows = []
    for i, rec in enumerate(picked):
        rows.append(bench_image(rec, args.family, model, config, proc, args.repeats, args.max_pixels, args.clock))
        r = rows[-1]
        print(f"[{i + 1}/{len(picked)}] {r['image']} {r['grid']} kept {r['retention']:.0%}: ViT {r['stock_vit_ms']:.0f} "
              f"(noise {r['stock_vit_noise']:.0%}) -> {r['pixelprune_vit_ms']:.0f} ({r['pixelprune_vit_noise']:.0%}) ms, "
              f"LLM {r['stock_llm_ms']:.0f} ({r['stock_llm_noise']:.0%}) -> {r['pixelprune_llm_ms']:.0f} "
              f"({r['pixelprune_llm_noise']:.0%}) ms; x{r['model_speedup']:.2f} (rounds {r['model_speedup_lo']:.2f}-"
              f"{r['model_speedup_hi']:.2f}), ideal x{r['ideal_model_speedup']:.2f}", flush=True)
    name = args.out or ("bench_prefill" if args.family == "qwen3_vl" else f"bench_prefill_{args.family}")
    finish(name, summarise(rows), COLUMNS, dict(
        machine=info, family=args.family, model=model_label, vit_depth=args.vit_depth,
        llm_layers=args.llm_layers, dtype=args.dtype, device=str(args.device), clock=args.clock, attn=args.attn, max_pixels=args.max_pixels,
        repeats=args.repeats, timing="interleaved rounds (AB, BA, ...) after one warm-up call each; medians",
        images=rows), args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
