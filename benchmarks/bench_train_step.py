"""Training-step (forward + backward) speed: stock Qwen3-VL vs PixelPrune vs the FLOP-ideal, padded and packed.

Same models as ``bench_prefill.py`` (Qwen3-VL-2B or Qwen3.5-2B widths, random weights, reduced depth on CPU, float32).
A batch holds ``--batch`` images of one type, each a one-image prompt whose last ``PROMPT_TOKENS`` text tokens
are the supervised answer. Batches are built by ``pixelprune.training`` exactly as the fine-tuning collator
builds them: **padded** (right-padded rows, ``pad_samples``) or **packed** (one padding-free row with per-sample
positions, ``pack_samples``). One step is the fine-tuning recipe's loss (``answer_logits`` +
``answer_cross_entropy``: the LM head projects the answer positions only) and ``backward`` with every
parameter trainable (ViT included), for the stock model (full image-token sequences, no keep mask) and for
PixelPrune (pruned sequences, keep mask) alike.

The FLOP-ideal speed-up counts forward matrix-product FLOPs of the real (unpadded) tokens: ViT (kept
patches, attention per image), LLM (per sample: packing keeps samples apart) and the LM head at the answer
positions (backward is ~2x forward for every term, so the ratio is the same). "Fixed" is the step time of a
batch of ``--batch`` text-only answers (no image, no prompt): costs that do not scale with tokens (at these
widths mostly the dense gradient of the 151,936 x 2,048 tied embedding), reported so that the share of the
ideal can be read at full depth, where they weigh ~14x less.

Variants are interleaved (a warm-up step each, then ``--repeats`` rounds in rotating order:
``common.interleaved``); times are medians over rounds (``--clock cpu`` for CPU time).

    python benchmarks/bench_train_step.py [--family qwen3_vl|qwen3_5] [--batch 4] [--quick] [--clock cpu --threads 1]
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
from pixelprune.training import answer_cross_entropy, answer_logits, pack_samples, pad_samples  # noqa: E402
from pixelprune.vit_flops import VisionTowerConfig  # noqa: E402


def step_fn(model, batch: dict):
    inputs = {k: v for k, v in batch.items() if k != "labels"}

    def step():
        model.zero_grad(set_to_none=True)
        logits, targets, _ = answer_logits(model, inputs, batch["labels"])
        loss = answer_cross_entropy(logits, targets)
        loss.backward()
        return float(loss.detach())

    return step


def sample_for(family: str, grid: torch.Tensor, pixel_values: torch.Tensor, keep: torch.Tensor | None,
               tokens: int) -> dict:
    """One sample's encoding (batch dimension 1) with labels on its last PROMPT_TOKENS tokens; ``keep=None``
    is the stock input (``tokens`` placeholders, no keep mask)."""
    sample = make_inputs(family, grid, tokens if keep is None else int(keep.sum()))
    labels = torch.full_like(sample["input_ids"], -100)
    labels[:, -PROMPT_TOKENS:] = sample["input_ids"][:, -PROMPT_TOKENS:]
    sample.update(pixel_values=pixel_values, labels=labels)
    if keep is not None:
        sample["image_keep_mask"] = keep
    return sample


def text_only_sample(family: str) -> dict:
    ids = make_inputs(family, torch.tensor([[1, 2, 2]]), 1)["input_ids"][:, -PROMPT_TOKENS:]
    return dict(input_ids=ids, attention_mask=torch.ones_like(ids), mm_token_type_ids=torch.zeros_like(ids, dtype=torch.int32),
                labels=ids.clone())


def sample_flops(config, vit, grid_tokens: int, kept: int, seq: int) -> float:
    m2 = vit.spatial_merge_size**2
    return (kept * m2 * vit.linear_flops_per_patch + vit.attention_flops(kept * m2) + llm_flops(config, seq)
            + head_flops(config) * PROMPT_TOKENS)


def bench_batch(kind: str, recs: list[dict], family: str, model, config, proc, args) -> dict:
    samples = {"stock": [], "pixelprune": []}
    tokens = kept = 0
    ideal = {"stock": 0.0, "pixelprune": 0.0}
    vit = VisionTowerConfig.from_vision_config(config.vision_config)
    for rec in recs:
        feats = proc(images=open_rgb(rec["path"]), return_tensors="pt",
                     size={"shortest_edge": 65536, "longest_edge": args.max_pixels})
        pv, grid = feats["pixel_values"], feats["image_grid_thw"]
        keep = pixelprune.select_keep_mask(pv, grid)  # on the processor's CPU float32 pixels
        pv = pv.to(model.dtype)
        tokens, kept = tokens + keep.numel(), kept + int(keep.sum())
        for name, mask in (("stock", None), ("pixelprune", keep)):
            s = sample_for(family, grid, pv, mask, keep.numel())
            samples[name].append(s)
            n_kept = keep.numel() if mask is None else int(mask.sum())
            ideal[name] += sample_flops(config, vit, keep.numel(), n_kept, s["input_ids"].shape[1])
    merge = config.vision_config.spatial_merge_size
    batches = {}
    for name in samples:
        batches[f"{name}_padded"] = pad_samples(samples[name], 0)
        batches[f"{name}_packed"] = pack_samples(samples[name], merge)
    batches["fixed"] = pack_samples([text_only_sample(family) for _ in recs], merge)
    row = dict(type=kind, images=len(recs), tokens=tokens / len(recs), kept=kept / len(recs), retention=kept / tokens,
               names=[Path(r["path"]).name for r in recs],
               pad_waste_stock=1 - batches["stock_packed"]["input_ids"].shape[1] / batches["stock_padded"]["input_ids"].numel(),
               pad_waste_pixelprune=1 - batches["pixelprune_packed"]["input_ids"].shape[1]
               / batches["pixelprune_padded"]["input_ids"].numel())
    batches = {n: {k: v.to(model.device) if isinstance(v, torch.Tensor) else v for k, v in b.items()}
               for n, b in batches.items()}
    res = interleaved({n: step_fn(model, b) for n, b in batches.items()}, args.repeats, device=model.device)
    for n in batches:
        row[f"{n}_ms"] = median(res[n][args.clock]) * 1e3
        row[f"{n}_noise"] = spread(res[n][args.clock])
        row[f"{n}_rounds_ms"] = [t * 1e3 for t in res[n][args.clock]]
    # same answers, same weights: the layouts must give the same loss (a cheap correctness check)
    for name in samples:
        a, b = res[f"{name}_padded"]["out"], res[f"{name}_packed"]["out"]
        if abs(a - b) > 1e-3 * max(1.0, abs(a)):
            raise RuntimeError(f"{name}: padded loss {a} != packed loss {b}")
    row["ideal_speedup"] = ideal["stock"] / ideal["pixelprune"]
    for layout in ("padded", "packed"):
        ratios = paired_ratios(res[f"stock_{layout}"][args.clock], res[f"pixelprune_{layout}"][args.clock])
        row[f"speedup_{layout}"] = row[f"stock_{layout}_ms"] / row[f"pixelprune_{layout}_ms"]
        row[f"speedup_{layout}_range"] = f"{min(ratios):.2f}-{max(ratios):.2f}"
        row[f"of_ideal_{layout}"] = row[f"speedup_{layout}"] / row["ideal_speedup"]
        # the same with the fixed per-step cost taken out of both times
        fixed = row["fixed_ms"]
        row[f"of_ideal_{layout}_net"] = ((row[f"stock_{layout}_ms"] - fixed) / (row[f"pixelprune_{layout}_ms"] - fixed)
                                         / row["ideal_speedup"])
    row["speedup_packed_vs_stock_padded"] = row["stock_padded_ms"] / row["pixelprune_packed_ms"]
    return row


def main(argv: list[str] | None = None) -> int:
    ap = benchmark_parser(__doc__, model=True, per_type=4, max_pixels=768 * 768,
                          quick_help="2 images per batch, 1 ViT block, fewest LLM layers, 512^2 pixels")
    ap.add_argument("--batch", dest="per_type", type=int, help="images per batch, one batch per type (= --per-type)")
    ap.add_argument("--types", default="documents,screenshots,photos")
    ap.add_argument("--image-dir", type=Path, default=None, help="an image set folder (default: the built set)")
    args = parse_args(ap, argv)
    args.batch = args.per_type
    if args.quick:
        args.batch, args.vit_depth, args.max_pixels, args.repeats = 2, 1, 512 * 512, 2
        args.llm_layers = 2 if args.family == "qwen3_5" else 1
    picked = pick_per_type(load_images(args.quick, args.image_dir), args.batch)
    model, config = build_model(args.family, args.vit_depth, args.llm_layers, args.attn,
                                device=args.device, dtype=args.torch_dtype)
    model.train()
    proc = stock_image_processor()
    info = machine_info()
    full_vit, full_llm = FULL_DEPTH[args.family]
    model_label = (f"{LABEL[args.family]} widths, random weights, ViT depth {args.vit_depth}/{full_vit}, "
                   f"LLM layers {args.llm_layers}/{full_llm}")
    print(f"# train-step benchmark: {info['cpu']}, torch {info['torch']} ({info['torch_threads']} threads), "
          f"{model_label}, {args.dtype} on {args.device}, max_pixels {args.max_pixels}, batches of {args.batch}, {args.clock} clock, "
          f"{args.repeats} interleaved rounds, load average {info['loadavg_start'][0]:.2f}", flush=True)
    rows = []
    for kind in args.types.split(","):
        recs = [r for r in picked if r["type"] == kind]
        if not recs:
            continue
        r = bench_batch(kind, recs, args.family, model, config, proc, args)
        rows.append(r)
        print(f"{kind}: {r['images']} images, kept {r['retention']:.0%}; padded {r['stock_padded_ms']:.0f} -> "
              f"{r['pixelprune_padded_ms']:.0f} ms (x{r['speedup_padded']:.2f}), packed {r['stock_packed_ms']:.0f} -> "
              f"{r['pixelprune_packed_ms']:.0f} ms (x{r['speedup_packed']:.2f}); ideal x{r['ideal_speedup']:.2f}; "
              f"fixed {r['fixed_ms']:.0f} ms", flush=True)
    name = args.out or ("bench_train_step" if args.family == "qwen3_vl" else f"bench_train_step_{args.family}")
    finish(name, rows, [
        ("type", "type", ""), ("images", "batch", "d"), ("retention", "kept", ".0%"),
        ("stock_padded_ms", "stock padded ms", ".0f"), ("pixelprune_padded_ms", "PixelPrune padded ms", ".0f"),
        ("stock_packed_ms", "stock packed ms", ".0f"), ("pixelprune_packed_ms", "PixelPrune packed ms", ".0f"),
        ("fixed_ms", "fixed ms", ".0f"), ("ideal_speedup", "FLOP-ideal x", ".2f"),
        ("speedup_padded", "padded x", ".2f"), ("of_ideal_padded", "padded of ideal", ".0%"),
        ("speedup_packed", "packed x", ".2f"), ("speedup_packed_range", "packed rounds x", ""),
        ("of_ideal_packed", "packed of ideal", ".0%"), ("of_ideal_packed_net", "packed of ideal, net of fixed", ".0%")],
        dict(machine=info, family=args.family, model=model_label, vit_depth=args.vit_depth,
             llm_layers=args.llm_layers, dtype=args.dtype, device=str(args.device), clock=args.clock, max_pixels=args.max_pixels,
             batch=args.batch, repeats=args.repeats, loss="answer positions only (pixelprune.training.answer_logits)",
             timing="interleaved rounds after one warm-up step each; medians", batches=rows), args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
