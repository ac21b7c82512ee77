"""Prefill speed-up in transformers: stock Qwen3-VL vs PixelPrune on the same images.

The model has Qwen3-VL-2B's real widths (ViT: hidden 1024, MLP 4096, 16 heads, patch 16, merge 2;
LLM: hidden 2048, MLP 6144, 16 query / 8 KV heads of dim 128, vocab 151936) with random weights.
On CPU the depth is reduced (``--vit-depth``, ``--llm-layers``; default 2 and 2 instead of 24 and 28):
every layer of a stack costs the same, so per-layer times scale, but fixed costs (patch embedding,
mergers, embeddings) weigh a little more than at full depth. Deepstack mergers sit after the first
``min(3, depth)`` ViT layers.

Per image: the stock image processor (timed), the selector (timed), then the ViT
(``get_image_features``: all patches for stock, kept patches for PixelPrune) and the LLM prefill
(the model's ``forward`` on precomputed image features, ``logits_to_keep=1`` as ``generate`` does)
are timed separately, best of ``--repeats``. "Stock" is the same model object called without
``image_keep_mask``, which runs the stock transformers code path unchanged.

The FLOP-ideal speed-up counts matrix-product FLOPs (ViT: ``pixelprune.vit_flops``; LLM: projections,
MLP and causal attention per layer) of the measured (reduced-depth) model, stock vs kept tokens.
Targets (issue 7): measured speed-up >= 80% of the FLOP-ideal on documents; on photos (nothing to
prune) the PixelPrune path at most 2% slower than stock.

    python benchmarks/bench_prefill.py [--quick] [--max-pixels N] [--vit-depth D] [--llm-layers L]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    finish, load_images, machine_info, median, open_rgb, pick_per_type, stock_image_processor, time_call,
)

import pixelprune  # noqa: E402
from pixelprune.vit_flops import VisionTowerConfig  # noqa: E402

IMAGE_TOKEN, VISION_START, VISION_END = 151655, 151652, 151653
PROMPT_TOKENS = 24  # text before the image (system + user turn) and after it (question)

# Qwen3-VL-2B-Instruct config.json (text_config / vision_config), depth overridden by the CLI.
QWEN3_VL_2B_TEXT = dict(
    vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_attention_heads=16,
    num_key_value_heads=8, head_dim=128, max_position_embeddings=262144, rms_norm_eps=1e-6,
    tie_word_embeddings=True,
    rope_parameters={"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [24, 20, 20],
                     "mrope_interleaved": True},
)
QWEN3_VL_2B_VISION = dict(
    hidden_size=1024, intermediate_size=4096, num_heads=16, patch_size=16, spatial_merge_size=2,
    temporal_patch_size=2, out_hidden_size=2048, num_position_embeddings=2304, in_channels=3,
)


def build_model(vit_depth: int, llm_layers: int, attn: str):
    import transformers

    from pixelprune.modeling import PixelPruneQwen3VLForConditionalGeneration

    config = transformers.Qwen3VLConfig(
        text_config=dict(QWEN3_VL_2B_TEXT, num_hidden_layers=llm_layers),
        vision_config=dict(QWEN3_VL_2B_VISION, depth=vit_depth,
                           deepstack_visual_indexes=list(range(min(3, vit_depth)))),
        image_token_id=IMAGE_TOKEN, vision_start_token_id=VISION_START, vision_end_token_id=VISION_END,
        tie_word_embeddings=True,
    )
    config._attn_implementation = attn
    torch.manual_seed(0)
    model = PixelPruneQwen3VLForConditionalGeneration(config).eval()
    return model, config


def llm_flops(config, seq_len: int) -> float:
    """Matrix-product FLOPs of an LLM prefill over ``seq_len`` tokens (all layers, no lm_head)."""
    t = config.text_config
    d, f, hd = t.hidden_size, t.intermediate_size, t.head_dim
    q, kv = t.num_attention_heads * hd, t.num_key_value_heads * hd
    linear = 2 * d * (q + 2 * kv) + 2 * q * d + 3 * 2 * d * f  # qkv, o, gate/up/down
    attention = 2 * 2 * q * seq_len * (seq_len + 1) / 2  # causal scores + weighted sum
    return t.num_hidden_layers * (seq_len * linear + attention)


def make_inputs(grid: torch.Tensor, kept: int) -> dict:
    """Token ids of a one-image prompt with ``kept`` image placeholders (random text ids)."""
    g = torch.Generator().manual_seed(0)
    text = torch.randint(1000, 100000, (2 * PROMPT_TOKENS,), generator=g)
    ids = torch.cat([text[:PROMPT_TOKENS], torch.tensor([VISION_START]), torch.full((kept,), IMAGE_TOKEN),
                     torch.tensor([VISION_END]), text[PROMPT_TOKENS:]]).unsqueeze(0)
    return dict(input_ids=ids, attention_mask=torch.ones_like(ids),
                mm_token_type_ids=(ids == IMAGE_TOKEN).to(torch.int32), image_grid_thw=grid)


@torch.inference_mode()
def bench_image(rec: dict, model, config, proc, repeats: int, max_pixels: int, clock: str = "wall") -> dict:
    pick = 0 if clock == "wall" else 1

    def timed(fn, n):
        r = time_call(fn, n)
        return r[pick], r[2]

    image = open_rgb(rec["path"])
    proc_s, feats = timed(lambda: proc(images=image, return_tensors="pt",
                                              size={"shortest_edge": 65536, "longest_edge": max_pixels}), 1)
    pv, grid = feats["pixel_values"], feats["image_grid_thw"]
    sel_s, keep = timed(lambda: pixelprune.select_keep_mask(pv, grid), repeats)
    tokens, kept = keep.numel(), int(keep.sum())
    inner = model.model
    row = dict(image=Path(rec["path"]).name, type=rec["type"], resolution=rec["resolution"],
               grid=f"{int(grid[0, 1]) // 2}x{int(grid[0, 2]) // 2}", tokens=tokens, kept=kept,
               retention=kept / tokens, processor_ms=proc_s * 1e3, selector_ms=sel_s * 1e3)
    for name, mask in (("stock", None), ("pixelprune", keep)):
        extra = {} if mask is None else {"image_keep_mask": mask}
        vit_s, out = timed(lambda: inner.get_image_features(pv, grid, return_dict=True, **extra), repeats)
        n_img = tokens if mask is None else kept
        inputs = make_inputs(grid, n_img)
        llm_s, _ = timed(lambda: model(**inputs, mm_encoder_outputs={"image": out}, logits_to_keep=1,
                                              use_cache=True, **extra), repeats)
        row[f"{name}_vit_ms"], row[f"{name}_llm_ms"] = vit_s * 1e3, llm_s * 1e3
        row[f"{name}_seq"] = inputs["input_ids"].shape[1]
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
    vit = VisionTowerConfig.from_vision_config(config.vision_config)
    m2 = vit.spatial_merge_size**2
    vit_stock = tokens * m2 * vit.linear_flops_per_patch + vit.attention_flops(tokens * m2)
    vit_kept = kept * m2 * vit.linear_flops_per_patch + vit.attention_flops(kept * m2)
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
                  "ideal_model_speedup", "model_vs_ideal", "total_speedup"):
            s[k] = median([r[k] for r in rs])
        if kind == "documents":
            s["target"] = "yes" if s["model_vs_ideal"] >= 0.8 else "NO"
        elif kind == "photos":
            slow = median([(r["selector_ms"] + r["pixelprune_vit_ms"] + r["pixelprune_llm_ms"])
                           / (r["stock_vit_ms"] + r["stock_llm_ms"]) - 1 for r in rs])
            s["photo_overhead"] = slow
            s["target"] = "yes" if slow <= 0.02 else "NO"
        out.append(s)
    return out


COLUMNS = [
    ("type", "type", ""), ("images", "n", "d"), ("tokens", "tokens", ".0f"), ("retention", "kept", ".0%"),
    ("processor_ms", "processor ms", ".0f"), ("selector_ms", "selector ms", ".1f"),
    ("stock_vit_ms", "ViT stock ms", ".0f"), ("pixelprune_vit_ms", "ViT PP ms", ".0f"),
    ("stock_llm_ms", "LLM stock ms", ".0f"), ("pixelprune_llm_ms", "LLM PP ms", ".0f"),
    ("vit_speedup", "ViT x", ".2f"), ("llm_speedup", "LLM x", ".2f"), ("model_speedup", "sel+ViT+LLM x", ".2f"),
    ("ideal_model_speedup", "FLOP-ideal x", ".2f"), ("model_vs_ideal", "of ideal", ".0%"),
    ("total_speedup", "incl. processor x", ".2f"), ("target", "target", ""),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 image per type, 1 ViT + 1 LLM layer, 1 repeat")
    ap.add_argument("--per-type", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1, help="timed calls per stage (after one warm-up image)")
    ap.add_argument("--vit-depth", type=int, default=2)
    ap.add_argument("--llm-layers", type=int, default=2)
    ap.add_argument("--max-pixels", type=int, default=1024 * 1024,
                    help="image processor pixel budget (CPU: keeps a ViT forward in seconds)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall clock, or CPU time of the process (robust on a shared machine with --threads 1)")
    ap.add_argument("--attn", default="sdpa", help="attention implementation (sdpa, eager, flash_attention_2)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.per_type, args.repeats, args.vit_depth, args.llm_layers = 1, 1, 1, 1
    picked = pick_per_type(load_images(args.quick), args.per_type)
    model, config = build_model(args.vit_depth, args.llm_layers, args.attn)
    proc = stock_image_processor()
    info = machine_info()
    print(f"# prefill benchmark: {info['cpu']}, torch {info['torch']} ({info['torch_threads']} threads), "
          f"Qwen3-VL-2B widths, ViT depth {args.vit_depth}/24, LLM layers {args.llm_layers}/28, float32, "
          f"{args.attn}, max_pixels {args.max_pixels}, {args.clock} clock")
    # warm-up (lazy initialisation, allocator, oneDNN kernels) on the smallest image, not recorded
    bench_image(min(picked, key=lambda r: r["width"] * r["height"]), model, config, proc, 1, args.max_pixels)
    rows = []
    for i, rec in enumerate(picked):
        rows.append(bench_image(rec, model, config, proc, args.repeats, args.max_pixels, args.clock))
        r = rows[-1]
        print(f"[{i + 1}/{len(picked)}] {r['image']} {r['grid']} kept {r['retention']:.0%}: ViT {r['stock_vit_ms']:.0f} -> "
              f"{r['pixelprune_vit_ms']:.0f} ms, LLM {r['stock_llm_ms']:.0f} -> {r['pixelprune_llm_ms']:.0f} ms "
              f"(x{r['model_speedup']:.2f}, ideal x{r['ideal_model_speedup']:.2f})", flush=True)
    finish("bench_prefill", summarise(rows), COLUMNS, dict(
        machine=info, model="Qwen3-VL-2B widths, random weights", vit_depth=args.vit_depth,
        llm_layers=args.llm_layers, dtype="float32", clock=args.clock, attn=args.attn, max_pixels=args.max_pixels,
        repeats=args.repeats, images=rows), args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
