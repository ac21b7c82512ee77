"""Training-step (forward + backward) speed-up: stock Qwen3-VL vs PixelPrune on the same images.

Same models as ``bench_prefill.py`` (Qwen3-VL-2B or Qwen3.5-2B widths, random weights, reduced depth on CPU, float32)
and the same inputs: one image plus a short prompt; labels on the text tokens after the image (image
placeholders are ``-100``, as in supervised fine-tuning). One step is ``model(**batch).loss.backward()``
with every parameter trainable (ViT included); the time of the best of ``--repeats`` steps after a
warm-up step. The FLOP-ideal speed-up counts forward matrix-product FLOPs (backward is ~2x forward
for every term, so the ratio is the same), including the LM head over every position.

Stock and PixelPrune steps are interleaved (a warm-up step each, then ``--repeats`` rounds
alternating AB, BA, ...: ``common.interleaved``) so that drift and order effects cancel; times are
medians over rounds, "noise" is the spread (max - min) / median of a variant's rounds and the range
next to a speed-up that of the round-by-round paired ratios.

    python benchmarks/bench_train_step.py [--family qwen3_vl|qwen3_5] [--quick] [--clock cpu --threads 1]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_models import (  # noqa: E402
    FULL_DEPTH, LABEL, PROMPT_TOKENS, build_model, head_flops, llm_flops, make_inputs,
)
from common import (  # noqa: E402
    benchmark_parser, finish, interleaved, load_images, machine_info, median, open_rgb, paired_ratios, parse_args,
    pick_per_type, spread, stock_image_processor,
)

import pixelprune  # noqa: E402
from pixelprune.vit_flops import VisionTowerConfig  # noqa: E402


def step_fn(model, batch: dict):
    def step():
        model.zero_grad(set_to_none=True)
        loss = model(**batch).loss
        loss.backward()
        return float(loss.detach())

    return step


def bench_image(rec: dict, family: str, model, config, proc, repeats: int, max_pixels: int, clock: str) -> dict:
    feats = proc(images=open_rgb(rec["path"]), return_tensors="pt",
                 size={"shortest_edge": 65536, "longest_edge": max_pixels})
    pv, grid = feats["pixel_values"], feats["image_grid_thw"]
    keep = pixelprune.select_keep_mask(pv, grid)  # on the processor's CPU float32 pixels
    pv = pv.to(model.device, model.dtype)
    tokens, kept = keep.numel(), int(keep.sum())
    row = dict(image=Path(rec["path"]).name, type=rec["type"], grid=f"{int(grid[0, 1]) // 2}x{int(grid[0, 2]) // 2}",
               tokens=tokens, kept=kept, retention=kept / tokens)
    batches = {}
    for name, mask in (("stock", None), ("pixelprune", keep)):
        batch = {k: v.to(model.device) for k, v in make_inputs(family, grid, tokens if mask is None else kept).items()}
        # supervise only the text after the image: the same tokens in both runs
        labels = batch["input_ids"].clone()
        labels[:, :-PROMPT_TOKENS] = -100
        batch.update(pixel_values=pv, labels=labels)
        if mask is not None:
            batch["image_keep_mask"] = mask
        batches[name] = batch
        row[f"{name}_seq"] = batch["input_ids"].shape[1]
    res = interleaved({n: step_fn(model, b) for n, b in batches.items()}, repeats, device=model.device)
    for n in batches:
        row[f"{n}_step_ms"] = median(res[n][clock]) * 1e3
        row[f"{n}_step_min_ms"] = min(res[n][clock]) * 1e3
        row[f"{n}_noise"] = spread(res[n][clock])
        row[f"{n}_rounds_ms"] = [t * 1e3 for t in res[n][clock]]
    ratios = paired_ratios(res["stock"][clock], res["pixelprune"][clock])
    row["speedup"] = row["stock_step_ms"] / row["pixelprune_step_ms"]
    row["speedup_lo"], row["speedup_hi"] = min(ratios), max(ratios)
    row["noise"] = max(row["stock_noise"], row["pixelprune_noise"])
    vit = VisionTowerConfig.from_vision_config(config.vision_config)
    m2 = vit.spatial_merge_size**2
    head = head_flops(config)
    stock = (tokens * m2 * vit.linear_flops_per_patch + vit.attention_flops(tokens * m2)
             + llm_flops(config, row["stock_seq"]) + head * row["stock_seq"])
    pruned = (kept * m2 * vit.linear_flops_per_patch + vit.attention_flops(kept * m2)
              + llm_flops(config, row["pixelprune_seq"]) + head * row["pixelprune_seq"])
    row["ideal_speedup"] = stock / pruned
    row["of_ideal"] = row["speedup"] / row["ideal_speedup"]
    return row


def main(argv: list[str] | None = None) -> int:
    ap = benchmark_parser(__doc__, model=True, per_type=1, max_pixels=768 * 768,
                          quick_help="1 image per type, 1 ViT block, fewest LLM layers, 512^2 pixels")
    args = parse_args(ap, argv)
    if args.quick:
        args.per_type, args.vit_depth, args.max_pixels, args.repeats = 1, 1, 512 * 512, 2
        args.llm_layers = 2 if args.family == "qwen3_5" else 1
    picked = pick_per_type(load_images(args.quick), args.per_type)
    model, config = build_model(args.family, args.vit_depth, args.llm_layers, args.attn,
                                device=args.device, dtype=args.torch_dtype)
    model.train()
    proc = stock_image_processor()
    info = machine_info()
    full_vit, full_llm = FULL_DEPTH[args.family]
    model_label = (f"{LABEL[args.family]} widths, random weights, ViT depth {args.vit_depth}/{full_vit}, "
                   f"LLM layers {args.llm_layers}/{full_llm}")
    print(f"# train-step benchmark: {info['cpu']}, torch {info['torch']} ({info['torch_threads']} threads), "
          f"{model_label}, {args.dtype} on {args.device}, max_pixels {args.max_pixels}, {args.clock} clock, {args.repeats} interleaved "
          f"rounds, load average {info['loadavg_start'][0]:.2f}", flush=True)
    rows = []
    for i, rec in enumerate(picked):
        rows.append(bench_image(rec, args.family, model, config, proc, args.repeats, args.max_pixels, args.clock))
        r = rows[-1]
        print(f"[{i + 1}/{len(picked)}] {r['image']} {r['grid']} kept {r['retention']:.0%}: "
              f"{r['stock_step_ms']:.0f} (noise {r['stock_noise']:.0%}) -> {r['pixelprune_step_ms']:.0f} "
              f"({r['pixelprune_noise']:.0%}) ms; x{r['speedup']:.2f} (rounds {r['speedup_lo']:.2f}-"
              f"{r['speedup_hi']:.2f}), ideal x{r['ideal_speedup']:.2f}", flush=True)
    summary = []
    for kind in ("documents", "screenshots", "photos"):
        rs = [r for r in rows if r["type"] == kind]
        if rs:
            summary.append(dict(type=kind, images=len(rs), **{k: median([r[k] for r in rs]) for k in (
                "tokens", "retention", "stock_step_ms", "pixelprune_step_ms", "speedup", "noise", "ideal_speedup",
                "of_ideal")}, speedup_range=f"{min(r['speedup_lo'] for r in rs):.2f}-"
                                            f"{max(r['speedup_hi'] for r in rs):.2f}"))
    name = args.out or ("bench_train_step" if args.family == "qwen3_vl" else f"bench_train_step_{args.family}")
    finish(name, summary, [
        ("type", "type", ""), ("images", "n", "d"), ("tokens", "tokens", ".0f"), ("retention", "kept", ".0%"),
        ("stock_step_ms", "stock step ms", ".0f"), ("pixelprune_step_ms", "PixelPrune step ms", ".0f"),
        ("speedup", "speed-up x", ".2f"), ("speedup_range", "paired rounds x", ""), ("noise", "noise", ".1%"),
        ("ideal_speedup", "FLOP-ideal x", ".2f"), ("of_ideal", "of ideal", ".0%")],
        dict(machine=info, family=args.family, model=model_label, vit_depth=args.vit_depth,
             llm_layers=args.llm_layers, dtype=args.dtype, device=str(args.device), clock=args.clock, max_pixels=args.max_pixels,
             repeats=args.repeats, timing="interleaved rounds (AB, BA, ...) after one warm-up step each; medians",
             images=rows), args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
