"""The prefill benchmark's video mode (``benchmarks/bench_prefill.bench_video``, issue #14 section 5)
on tiny synthetic clips and a tiny-width model (``bench_models.build_model(tiny=True)``: the real
vocabularies and placeholder ids, small widths), against oracles: the kept counts are those of the
stock video processor + ``select_video_keep_mask`` run here on the test's own decode; the PixelPrune
prompt is the stock one less the pruned placeholders; on a clip with nothing to prune the stock and
PixelPrune prefills give the same logits (no timing is asserted)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("av", reason="PyAV (pip install av) decodes the clips, as transformers' load_video does")
pytest.importorskip("torchvision", reason="the stock Qwen3-VL video processor needs torchvision")

import pixelprune  # noqa: E402
from pixelprune.vit_flops import VisionTowerConfig, estimate_vit_flops  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_models  # noqa: E402
import bench_prefill as bp  # noqa: E402
from images import document_image  # noqa: E402
from videos import decode_all, typing_frames, write_clip  # noqa: E402

FPS = 4  # written at 4 fps; the processor samples 2 per second: every other frame
MAX_FRAMES = 4  # -> 2 temporal slices
MAX_PIXELS = 128 * 96


@pytest.fixture(scope="module", params=bench_models.FAMILIES)
def model_and_config(request):
    family = request.param
    return bench_models.build_model(family, 1, bench_models.DEFAULT_LLM_LAYERS[family] // 2, "sdpa", tiny=True) + (family,)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    page = np.array(document_image(128, 96, aligned=False, seed=3))
    noise = np.random.default_rng(0).integers(0, 256, (12, 96, 128, 3), dtype=np.uint8)
    out = {}
    for name, kind, frames in (("typing", "typing", typing_frames(page, 12)), ("noise", "natural", noise)):
        path = write_clip(folder / f"{name}.mp4", frames, fps=FPS)
        out[name] = dict(name=name, type=kind, resolution="native", path=str(path), width=128, height=96)
    return out


def run(clip, model_and_config, **kw):
    model, config, family = model_and_config
    proc = bp.stock_video_processor()
    return bp.bench_video(clip, family, model, config, proc, 1, MAX_FRAMES, MAX_PIXELS, "cpu",
                          return_outputs=True, **kw)


def oracle_mask(path: str):
    """The stock processor on the first MAX_FRAMES frames of the 2 fps sampling of the test's own
    decode, then the selector."""
    from transformers.video_utils import VideoMetadata

    frames = decode_all(Path(path))
    proc = bp.stock_video_processor()
    indices = proc.sample_frames(VideoMetadata(total_num_frames=len(frames), fps=FPS), fps=proc.fps)
    frames = frames[indices[:MAX_FRAMES]]
    out = proc(videos=[frames], do_sample_frames=False, return_tensors="pt")
    return select_video(out), out["video_grid_thw"]


def select_video(out):
    return pixelprune.select_video_keep_mask(out["pixel_values_videos"], out["video_grid_thw"])


def test_video_row_matches_the_selector_and_the_flop_counts(clips, model_and_config):
    row, _ = run(clips["typing"], model_and_config)
    mask, grid = oracle_mask(clips["typing"]["path"])
    t, gh, gw = (int(x) for x in grid[0])
    assert row["frames"] == MAX_FRAMES and t == MAX_FRAMES // 2
    assert row["grid"] == f"{t}x{gh // 2}x{gw // 2}" and row["tokens"] == mask.numel()
    assert row["kept"] == int(mask.sum()) < row["tokens"]  # something is pruned: the test can tell
    per_slice = pixelprune.video_kept_per_slice(mask, grid, 2)[0].tolist()
    assert row["per_slice_kept"] == per_slice
    # the PixelPrune prompt is the stock one less the pruned placeholders (timestamps, text unchanged)
    assert row["stock_seq"] - row["pixelprune_seq"] == row["tokens"] - row["kept"]
    plane = (gh // 2) * (gw // 2)
    assert row["stock_seq"] == 2 * bench_models.PROMPT_TOKENS + t * (bench_models.TIMESTAMP_TOKENS + 2 + plane)
    # ViT FLOPs: attention within each temporal slice, as `pixelprune inspect` counts them
    _, config, _ = model_and_config
    flops = estimate_vit_flops([plane * 4] * t, [k * 4 for k in per_slice],
                               VisionTowerConfig.from_vision_config(config.vision_config))
    assert row["vit_flops_stock"] == flops.full and row["vit_flops_kept"] == flops.kept
    assert row["ideal_vit_speedup"] == pytest.approx(flops.full / flops.kept)
    ideal = (flops.full + row["llm_flops_stock"]) / (flops.kept + row["llm_flops_kept"])
    assert row["ideal_model_speedup"] == pytest.approx(ideal) and ideal > 1
    assert row["model_vs_ideal"] == pytest.approx(row["model_speedup"] / ideal)


def test_nothing_to_prune_gives_the_stock_prefill(clips, model_and_config):
    row, outputs = run(clips["noise"], model_and_config)
    assert row["kept"] == row["tokens"] and row["stock_seq"] == row["pixelprune_seq"]
    assert row["ideal_model_speedup"] == 1.0
    stock, pruned = outputs["stock"].logits, outputs["pixelprune"].logits
    assert stock.shape == pruned.shape == (1, 1, model_and_config[1].text_config.vocab_size)
    torch.testing.assert_close(pruned, stock, rtol=0, atol=0)


def test_video_inputs_lay_out_each_slice():
    grid = torch.tensor([[3, 4, 6]])
    inputs = bench_models.make_video_inputs("qwen3_vl", grid, [6, 0, 2])
    ids = inputs["input_ids"][0]
    video = bench_models.VIDEO_TOKEN_ID["qwen3_vl"]
    _, start, end = bench_models.TOKEN_IDS["qwen3_vl"]
    assert int((ids == video).sum()) == 8 == int((inputs["mm_token_type_ids"] == 2).sum())
    assert int((ids == start).sum()) == int((ids == end).sum()) == 3  # one vision segment per slice
    starts = (ids == start).nonzero().flatten().tolist()
    ends = (ids == end).nonzero().flatten().tolist()
    assert [e - s - 1 for s, e in zip(starts, ends)] == [6, 0, 2]
    with pytest.raises(ValueError, match="2 slice token counts for a video of 3 slices"):
        bench_models.make_video_inputs("qwen3_vl", grid, [1, 2])


def test_video_summary_targets():
    def row(kind, ratio, ideal, overhead):
        return dict(type=kind, tokens=10, retention=0.5, processor_ms=1, selector_ms=1, stock_vit_ms=1,
                    pixelprune_vit_ms=1, stock_llm_ms=1, pixelprune_llm_ms=1, vit_speedup=1, llm_speedup=1,
                    model_speedup=ratio, ideal_model_speedup=ideal, model_vs_ideal=ratio / ideal, total_speedup=1,
                    model_noise=0.01, model_speedup_lo=ratio, model_speedup_hi=ratio, pp_overhead_rounds=[overhead])

    rows = [row("typing", 4.0, 4.4, 0), row("scroll", 1.3, 2.0, 0), row("natural", 0.97, 1.0, 0.03)]
    summary = {s["type"]: s for s in bp.summarise(rows, bp.VIDEO_TYPES, "clips")}
    assert list(summary) == ["scroll", "typing", "natural", "screen (all)"]
    assert summary["typing"]["target"] == "yes" and summary["scroll"]["target"] == "NO"
    assert summary["screen (all)"]["clips"] == 2 and summary["screen (all)"]["min_model_vs_ideal"] == 0.65
    assert summary["natural"]["target"] == "NO (+3.0%)" and summary["natural"]["natural_overhead"] == 0.03
