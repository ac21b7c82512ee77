"""The video retention benchmark's core (``benchmarks/bench_video_retention.clip_retention``) on a
tiny synthetic clip, against an oracle: the stock video processor and ``select_video_keep_mask``
run directly on the known frames, sampled at the processor's default 2 fps."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

av = pytest.importorskip("av", reason="PyAV (pip install av) decodes the clips, as transformers' load_video does")
pytest.importorskip("torchvision", reason="the stock Qwen3-VL video processor needs torchvision")

import pixelprune  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH_DIR))

import bench_video_retention as bvr  # noqa: E402

FPS = 4  # source rate: the processor samples 2 fps of it, i.e. about every other frame
N_FRAMES = 12
H, W = 128, 192  # 4 x 6 merged tokens per slice, above the processor's 4096-pixel minimum


def synthetic_frames() -> np.ndarray:
    """A static block-coloured background (spatially prunable) with one noisy 32x32 token that
    moves every frame (never prunable), plus a frame-wide change in the last frames."""
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 4, size=(H // 32, W // 32, 1)) * 60
    base = np.repeat(np.repeat(blocks, 32, 0), 32, 1).repeat(3, 2).astype(np.uint8)
    frames = []
    for i in range(N_FRAMES):
        f = base.copy()
        r, c = (i // 3) % (H // 32), i % (W // 32)
        f[r * 32 : r * 32 + 32, c * 32 : c * 32 + 32] = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
        if i >= 10:
            f[:, :, 0] = 255 - f[:, :, 0]  # a "slide switch": every pixel of the red channel changes
        frames.append(f)
    return np.stack(frames)


def write_lossless_mp4(path: Path, frames: np.ndarray, fps: int) -> None:
    """H.264 RGB at QP 0 (libx264rgb): lossless, so decoded frames equal ``frames`` exactly."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264rgb", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "rgb24"
        stream.options = {"qp": "0"}
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip")
    frames = synthetic_frames()
    path = folder / "clip.mp4"
    write_lossless_mp4(path, frames, FPS)
    png_dir = folder / "frames"
    png_dir.mkdir()
    from PIL import Image

    for i, f in enumerate(frames):
        Image.fromarray(f).save(png_dir / f"{i:04d}.png")
    return path, png_dir, frames


def test_clip_retention_matches_selector_on_known_frames(clip):
    path, png_dir, frames = clip
    proc = bvr.stock_video_processor()
    row = bvr.clip_retention(path, proc, repeats=1, frames_dir=png_dir)

    # stock sampling: 12 frames at 4 fps -> int(12 / 4 * 2) = 6 frames, linspace(0, 11, 6) rounded
    expected_idx = [0, 2, 4, 7, 9, 11]
    assert row["frame_indices"] == expected_idx
    assert (row["source_frames"], row["source_fps"], row["frames"]) == (N_FRAMES, FPS, 6)

    # the oracle: the same processor on the known frames (no file, no decoder), then the selector
    feats = proc(videos=[frames[expected_idx]], do_sample_frames=False, return_tensors="pt")
    pv, grid = feats["pixel_values_videos"], feats["video_grid_thw"]
    assert grid.tolist() == [[3, H // 16, W // 16]]
    tokens = 3 * (H // 32) * (W // 32)
    assert row["tokens"] == tokens and row["grid"] == [3, H // 32, W // 32]
    for name, kw in bvr.MODES.items():
        mask = pixelprune.select_video_keep_mask(pv, grid, merge_size=2, temporal_patch_size=2, patch_size=16,
                                                 image_mean=(0.5,) * 3, image_std=(0.5,) * 3, **kw)
        per_slice = mask.view(3, -1).sum(1)
        frac = (per_slice.double() / (tokens // 3)).tolist()
        assert row[f"{name}_kept"] == int(mask.sum()), name
        assert row[f"{name}_retention"] == pytest.approx(int(mask.sum()) / tokens), name
        assert row[f"{name}_per_slice_kept"] == per_slice.tolist(), name
        assert (row[f"{name}_slice_min"], row[f"{name}_slice_median"], row[f"{name}_slice_max"]) == pytest.approx(
            (min(frac), sorted(frac)[1], max(frac))), name
        # lossless codec: the PNG frames give the same masks
        assert row[f"lossless_{name}_kept"] == int(mask.sum()), name

    # the clip is neither all-kept nor all-pruned; the static background repeats from slice 0 into
    # slice 1, the switch slice (frames 9, 11) keeps much more
    assert 0 < row["t0_kept"] < tokens
    assert row["t0_per_slice_kept"][1] < tokens // 3
    assert row["t0_per_slice_kept"][2] > 2 * row["t0_per_slice_kept"][1]
    for key in ("decode_s", "processor_s", "t0_s", "a002_s"):
        assert row[key] > 0


def test_decoded_frames_are_the_sampled_source_frames(clip):
    """The benchmark decodes exactly the frames the processor samples (the oracle's premise)."""
    path, _, frames = clip
    decoded, metadata = bvr.decode_clip(path, bvr.stock_video_processor())
    assert list(metadata.frames_indices) == [0, 2, 4, 7, 9, 11]
    np.testing.assert_array_equal(decoded, frames[[0, 2, 4, 7, 9, 11]])


def test_summarize_totals_per_type():
    rows = [dict(type="scroll", resolution=r, tokens=n, t0_kept=k0, a002_kept=k2, lossless_t0_kept=kl)
            for r, n, k0, k2, kl in [("720p", 100, 60, 50, 55), ("1080p", 300, 150, 120, 140)]]
    rows.append(dict(type="natural", resolution="native", tokens=50, t0_kept=50, a002_kept=49))
    summary = bvr.summarize(rows)
    by = {(s["type"], s["resolution"]): s for s in summary}
    assert list(by) == [("scroll", "720p"), ("scroll", "1080p"), ("scroll", "all"), ("natural", "native"),
                        ("screen (all)", "all")]
    assert by[("screen (all)", "all")]["t0_retention"] == pytest.approx(210 / 400)
    assert by[("scroll", "all")]["t0_retention"] == pytest.approx(210 / 400)
    assert by[("scroll", "all")]["a002_retention"] == pytest.approx(170 / 400)
    assert by[("scroll", "all")]["lossless_t0_retention"] == pytest.approx(195 / 400)
    assert "lossless_t0_retention" not in by[("natural", "native")]
    assert by[("natural", "native")]["t0_retention"] == 1.0
