"""Training-step (forward + backward) speed-up: stock Qwen3-VL vs PixelPrune on the same images.

Same model as ``bench_prefill.py`` (Qwen3-VL-2B widths, random weights, reduced depth on CPU, float32)
and the same inputs: one image plus a short prompt; labels on the text tokens after the image (image
placeholders are ``-100``, as in supervised fine-tuning). One step is ``model(**batch).loss.backward()``
with every parameter trainable (ViT included); the time of the best of ``--repeats`` steps after a
warm-up step. The FLOP-ideal speed-up counts forward matrix-product FLOPs (backward is ~2x forward
for every term, so the ratio is the same), including the LM head over every position.

    python benchmarks/bench_train_step.py [--quick] [--clock cpu --threads 1]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_prefill import PROMPT_TOKENS, build_model, llm_flops, make_inputs  # noqa: E402
from common import (  # noqa: E402
    finish, load_images, machine_info, median, open_rgb, pick_per_type, stock_image_processor, time_call,
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


def bench_image(rec: dict, model, config, proc, repeats: int, max_pixels: int, clock: str) -> dict:
    feats = proc(images=open_rgb(rec["path"]), return_tensors="pt",
                 size={"shortest_edge": 65536, "longest_edge": max_pixels})
    pv, grid = feats["pixel_values"], feats["image_grid_thw"]
    keep = pixelprune.select_keep_mask(pv, grid)
    tokens, kept = keep.numel(), int(keep.sum())
    row = dict(image=Path(rec["path"]).name, type=rec["type"], grid=f"{int(grid[0, 1]) // 2}x{int(grid[0, 2]) // 2}",
               tokens=tokens, kept=kept, retention=kept / tokens)
    pick = 0 if clock == "wall" else 1
    for name, mask in (("stock", None), ("pixelprune", keep)):
        batch = make_inputs(grid, tokens if mask is None else kept)
        # supervise only the text after the image: the same tokens in both runs
        labels = batch["input_ids"].clone()
        labels[:, :-PROMPT_TOKENS] = -100
        batch.update(pixel_values=pv, labels=labels)
        if mask is not None:
            batch["image_keep_mask"] = mask
        row[f"{name}_step_ms"] = time_call(step_fn(model, batch), repeats)[pick] * 1e3
        row[f"{name}_seq"] = batch["input_ids"].shape[1]
    row["speedup"] = row["stock_step_ms"] / row["pixelprune_step_ms"]
    vit = VisionTowerConfig.from_vision_config(config.vision_config)
    m2 = vit.spatial_merge_size**2
    head = 2 * config.text_config.hidden_size * config.text_config.vocab_size
    stock = (tokens * m2 * vit.linear_flops_per_patch + vit.attention_flops(tokens * m2)
             + llm_flops(config, row["stock_seq"]) + head * row["stock_seq"])
    pruned = (kept * m2 * vit.linear_flops_per_patch + vit.attention_flops(kept * m2)
              + llm_flops(config, row["pixelprune_seq"]) + head * row["pixelprune_seq"])
    row["ideal_speedup"] = stock / pruned
    row["of_ideal"] = row["speedup"] / row["ideal_speedup"]
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 image per type, 1 ViT + 1 LLM layer, 512^2 pixels")
    ap.add_argument("--per-type", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--vit-depth", type=int, default=2)
    ap.add_argument("--llm-layers", type=int, default=2)
    ap.add_argument("--max-pixels", type=int, default=768 * 768)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    ap.add_argument("--attn", default="sdpa")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.per_type, args.vit_depth, args.llm_layers, args.max_pixels = 1, 1, 1, 512 * 512
    picked = pick_per_type(load_images(args.quick), args.per_type)
    model, config = build_model(args.vit_depth, args.llm_layers, args.attn)
    model.train()
    proc = stock_image_processor()
    info = machine_info()
    print(f"# train-step benchmark: {info['cpu']}, torch {info['torch']} ({info['torch_threads']} threads), "
          f"Qwen3-VL-2B widths, ViT depth {args.vit_depth}/24, LLM layers {args.llm_layers}/28, float32, "
          f"max_pixels {args.max_pixels}, {args.clock} clock")
    bench_image(min(picked, key=lambda r: r["width"] * r["height"]), model, config, proc, 1, args.max_pixels,
                args.clock)  # warm-up
    rows = []
    for i, rec in enumerate(picked):
        rows.append(bench_image(rec, model, config, proc, args.repeats, args.max_pixels, args.clock))
        r = rows[-1]
        print(f"[{i + 1}/{len(picked)}] {r['image']} {r['grid']} kept {r['retention']:.0%}: "
              f"{r['stock_step_ms']:.0f} -> {r['pixelprune_step_ms']:.0f} ms (x{r['speedup']:.2f}, "
              f"ideal x{r['ideal_speedup']:.2f})", flush=True)
    summary = []
    for kind in ("documents", "screenshots", "photos"):
        rs = [r for r in rows if r["type"] == kind]
        if rs:
            summary.append(dict(type=kind, images=len(rs), **{k: median([r[k] for r in rs]) for k in (
                "tokens", "retention", "stock_step_ms", "pixelprune_step_ms", "speedup", "ideal_speedup",
                "of_ideal")}))
    finish("bench_train_step", summary, [
        ("type", "type", ""), ("images", "n", "d"), ("tokens", "tokens", ".0f"), ("retention", "kept", ".0%"),
        ("stock_step_ms", "stock step ms", ".0f"), ("pixelprune_step_ms", "PixelPrune step ms", ".0f"),
        ("speedup", "speed-up x", ".2f"), ("ideal_speedup", "FLOP-ideal x", ".2f"), ("of_ideal", "of ideal", ".0%")],
        dict(machine=info, model="Qwen3-VL-2B widths, random weights", vit_depth=args.vit_depth,
             llm_layers=args.llm_layers, dtype="float32", clock=args.clock, max_pixels=args.max_pixels,
             images=rows), args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
