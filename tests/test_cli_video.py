"""``pixelprune inspect`` on video files (issue #14 section 4).

Clips are written in a temporary folder with PyAV and lossless codecs (:mod:`tests.videos`). The
expected values come from the stock transformers video processor run here on frames decoded by the
test itself, sampled by the processor's own ``sample_frames``, then ``select_video_keep_mask``;
structure oracles from docs/ALGORITHM.md section 7 (a static clip keeps exactly one token per slice
beyond slice 0's image result; a noise clip keeps everything).

Needs PyAV, transformers and torchvision (the stock video processor); skipped otherwise, except
the error messages for what is missing, which are checked wherever they can be (for real where the
package is absent, simulated elsewhere).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixelprune import select_tokens, select_video_keep_mask
from pixelprune.cli import main

from images import document_image  # noqa: E402
from tiny_models import video_processor_dict  # noqa: E402

HAS_AV = importlib.util.find_spec("av") is not None
HAS_PROCESSOR = all(importlib.util.find_spec(name) is not None for name in ("transformers", "torchvision"))
needs_av = pytest.mark.skipif(not HAS_AV, reason="PyAV (`av`, the `video` extra) is not installed: clips cannot be written")
needs_processor = pytest.mark.skipif(
    not (HAS_AV and HAS_PROCESSOR),
    reason="needs PyAV (`av`) and the stock Qwen3-VL video processor (transformers and torchvision)",
)
if HAS_AV:
    import av

    from videos import decode_all, typing_frames, write_clip
FPS = 4  # clips are written at 4 fps; the processor samples 2 per second


@pytest.fixture(autouse=True)
def _no_pixelprune_env(monkeypatch):
    for name in ("THRESHOLD", "METRIC", "METHOD", "ANCHORED", "ENABLED", "VIDEO", "VERBOSE"):
        monkeypatch.delenv(f"PIXELPRUNE_{name}", raising=False)


def page(width: int = 160, height: int = 128) -> np.ndarray:
    return np.array(document_image(width, height, aligned=False, seed=3))


def noise_frames(n: int, width: int = 128, height: int = 96, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, height, width, 3), dtype=np.uint8)


def stock(path: Path, *, fps: float | None = None, **settings):
    """The stock processor on the test's own decode: (sampled indices, processor output, keep mask)."""
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor
    from transformers.video_utils import VideoMetadata

    frames = decode_all(path)
    with av.open(str(path)) as container:
        rate = float(container.streams.video[0].average_rate)
    config = {**video_processor_dict(), **({} if fps is None else {"fps": fps})}
    processor = Qwen3VLVideoProcessor(**config, cap_pixels_per_frame=False)
    indices = processor.sample_frames(VideoMetadata(total_num_frames=len(frames), fps=rate), fps=processor.fps)
    out = processor(videos=[frames[indices]], do_sample_frames=False, return_tensors="pt")
    mask = select_video_keep_mask(out["pixel_values_videos"], out["video_grid_thw"], **settings)
    return indices.tolist(), out, mask


def run_json(args: list[str], capsys) -> tuple[int, list[dict], str]:
    code = main(["inspect", "--json", *args])
    captured = capsys.readouterr()
    return code, [json.loads(line) for line in captured.out.splitlines()], captured.err


def per_slice(row: dict) -> list[int]:
    return [entry["kept"] for entry in row["slices"]]


@needs_processor
def test_static_clip_keeps_one_token_per_later_slice(tmp_path, capsys):
    """ALGORITHM.md section 7: a static video keeps slice 0's image result plus token (s, 0, 0) per slice."""
    clip = write_clip(tmp_path / "static.mp4", np.repeat(page()[None], 12, axis=0), FPS)
    code, (row,), _ = run_json([str(clip)], capsys)
    assert code == 0
    t, gh, gw = row["grid_thw"]
    assert t == 3 and row["token_grid"] == [3, gh // 2, gw // 2]
    _, out, _ = stock(clip)
    pv = out["pixel_values_videos"]
    image_kept = select_tokens(pv[: gh * gw], [[1, gh, gw]])[0].tolist()  # slice 0 as a still image
    plane = gh * gw // 4
    assert 1 < len(image_kept) < plane
    assert per_slice(row) == [len(image_kept), 1, 1]
    assert row["kept_indices"] == image_kept + [plane, 2 * plane]
    assert row["kept"] == len(image_kept) + 2 and row["tokens"] == 3 * plane


@needs_processor
def test_noise_clip_keeps_everything(tmp_path, capsys):
    clip = write_clip(tmp_path / "noise.mp4", noise_frames(12), FPS)
    code, (row,), _ = run_json([str(clip)], capsys)
    assert code == 0
    assert row["kept"] == row["tokens"] == 36 and row["pruned"] == 0
    assert row["vit_flops_saved"] == 0 and row["vit_flops_kept"] == row["vit_flops_full"] > 0


@needs_processor
@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".webm", ".avi", ".mov"])
def test_json_equals_the_selector_on_the_stock_processor_output(tmp_path, capsys, suffix):
    """Every container; Matroska and WebM report no frame count, which is counted by decoding."""
    clip = write_clip(tmp_path / f"typing{suffix}", typing_frames(page(), 12), FPS)
    indices, out, mask = stock(clip)
    code, (row,), _ = run_json([str(clip)], capsys)
    assert code == 0
    assert row["video"] == str(clip) and row["total_frames"] == 12 and row["fps"] == FPS
    assert row["frame_indices"] == indices == [0, 2, 4, 7, 9, 11]
    assert row["grid_thw"] == out["video_grid_thw"][0].tolist()
    assert row["kept_indices"] == np.flatnonzero(mask.numpy()).tolist()
    assert per_slice(row) == mask.view(len(row["slices"]), -1).sum(1).tolist()
    assert row["kept"] == int(mask.sum()) and row["tokens"] == mask.numel() and row["pruned"] == mask.numel() - row["kept"]
    assert 0 < row["kept"] < row["tokens"]
    assert [e["frames"] for e in row["slices"]] == [[0, 2], [4, 7], [9, 11]]
    assert [e["timestamp"] for e in row["slices"]] == pytest.approx([0.25, 1.375, 2.5])  # mean time of the first and last frame, as Qwen3-VL
    assert (row["width"], row["height"], row["resized_width"], row["resized_height"]) == (160, 128, 160, 128)
    assert 0 < row["vit_flops_saved"] < 1 and row["selector_ms"] >= 0 and row["preprocess_ms"] > 0


@needs_processor
@pytest.mark.parametrize(
    ("flags", "settings"),
    [
        (["--threshold", "0.3", "--metric", "mae"], dict(threshold=0.3, metric="mae")),  # anchored by default
        (["--threshold", "0.3", "--metric", "rmse", "--sliding"], dict(threshold=0.3, metric="rmse", anchored=False)),
        (["--method", "raster"], dict(method="raster")),
        (["--method", "serpentine", "--threshold", "0.2", "--anchored"],
         dict(method="serpentine", threshold=0.2, anchored=True)),
    ],
)
def test_settings_reach_the_video_selector(tmp_path, capsys, monkeypatch, flags, settings):
    monkeypatch.setenv("PIXELPRUNE_VIDEO", "0")  # the models' switch: inspect prunes the video regardless
    clip = write_clip(tmp_path / "typing.mkv", typing_frames(page(), 12), FPS)
    _, _, mask = stock(clip, **settings)
    code, (row,), _ = run_json([str(clip), *flags], capsys)
    assert code == 0 and row["kept_indices"] == np.flatnonzero(mask.numpy()).tolist()
    assert row["settings"]["method"] == settings.get("method", "pred_2d")


@needs_processor
def test_odd_sample_count_pads_the_last_slice_and_fps_flag(tmp_path, capsys):
    clip = write_clip(tmp_path / "ten.mp4", typing_frames(page(), 10), FPS)
    code, (row,), _ = run_json([str(clip)], capsys)
    assert code == 0
    assert row["frame_indices"] == stock(clip)[0] == [0, 2, 4, 7, 9]  # 2.5 s at 2 fps: 5 frames, padded to 6
    assert [e["frames"] for e in row["slices"]] == [[0, 2], [4, 7], [9, 9]]
    indices, out, mask = stock(clip, fps=4)
    code, (row,), _ = run_json([str(clip), "--fps", "4"], capsys)
    assert row["frame_indices"] == indices == list(range(10)) and row["grid_thw"][0] == 5
    assert row["kept_indices"] == np.flatnonzero(mask.numpy()).tolist()


@needs_processor
def test_table_reports_slices_and_totals(tmp_path, capsys):
    clip = write_clip(tmp_path / "static.webm", np.repeat(page()[None], 12, axis=0), FPS)
    image = tmp_path / "page.png"
    Image.fromarray(page()).save(image)
    assert main(["inspect", str(clip), str(image)]) == 0
    out = capsys.readouterr().out
    code, rows, _ = run_json([str(clip), str(image)], capsys)
    video, still = rows
    k0 = video["slices"][0]["kept"]
    assert "160 x 128 px, 12 frames at 4 fps (3.0 s); 6 frames sampled, resized to 160 x 128 px" in out
    assert "3 slices x 4 x 5 tokens of 32 x 32 px x 2 frames (grid_thw [3, 8, 10])" in out
    assert f"tokens kept      {k0 + 2} / 60 ({100 * (k0 + 2) / 60:.1f} %), {58 - k0} pruned" in out
    for s, (time, kept) in enumerate([(0.2, k0), (1.4, 1), (2.5, 1)]):
        assert f"{s:>5}  {time:>5.1f} s  {kept:>2} / 20" in out
    assert "attention per slice" in out
    total = video["kept"] + still["kept"]
    assert f"Total: {total} / {video['tokens'] + still['tokens']} tokens kept" in out and "in 1 image and 1 video" in out


@needs_processor
def test_overlay_contact_sheet_and_animation(tmp_path, capsys):
    from pixelprune.overlay import render_overlay

    frames = typing_frames(page(), 12)
    clip = write_clip(tmp_path / "typing.avi", frames, FPS)
    out_dir = tmp_path / "out"
    code, (row,), _ = run_json([str(clip), "--overlay", str(out_dir)], capsys)
    assert code == 0
    assert sorted(p.name for p in out_dir.iterdir()) == ["typing_overlay.gif", "typing_overlay.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "typing.avi"]  # nothing written beside the clip
    assert (row["overlay"], row["animation"]) == (str(out_dir / "typing_overlay.png"), str(out_dir / "typing_overlay.gif"))
    sheet = np.array(Image.open(row["overlay"]).convert("RGB"))
    t, rows, cols = row["token_grid"]
    keep = np.zeros(t * rows * cols, dtype=bool)
    keep[row["kept_indices"]] = True
    keep = keep.reshape(t, rows, cols)
    assert keep[1:].sum() < keep[0].sum()  # later slices mostly pruned
    height, width = rows * 32, cols * 32
    for s, entry in enumerate(row["slices"]):
        frame = frames[entry["frames"][0]]  # the slice's first frame, as the sheet shows it (no resize here)
        tile = np.array(render_overlay(frame, keep[s]))
        found = [y for y in range(sheet.shape[0] - height + 1)
                 for x in [s * (width + 4)] if np.array_equal(sheet[y : y + height, x : x + width], tile)]
        assert len(found) == 1, s
        y, x = found[0], s * (width + 4)
        pic = sheet[y : y + height, x : x + width].reshape(rows, 32, cols, 32, 3)[:, 1:, :, 1:]
        ref = frame.reshape(rows, 32, cols, 32, 3)[:, 1:, :, 1:]
        same = (pic == ref).all(axis=-1).all(axis=(1, 3))
        assert np.array_equal(same, keep[s])  # kept tokens unchanged, pruned ones marked
    gif = Image.open(row["animation"])
    assert gif.n_frames == 6 and gif.info["duration"] == 500 and gif.info.get("loop") == 0
    assert gif.size[0] >= width and gif.size[1] > height


@needs_processor
def test_overlay_refuses_existing_targets_and_symlinks(tmp_path, capsys):
    clip = write_clip(tmp_path / "clip.mp4", noise_frames(8), FPS)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    victim = tmp_path / "victim.gif"
    victim.write_bytes(b"mine")
    (out_dir / "clip_overlay.gif").symlink_to(victim)
    code, rows, err = run_json([str(clip), "--overlay", str(out_dir), "--force"], capsys)
    assert code == 1 and rows == [] and "is a symbolic link (never written through or replaced)" in err
    assert victim.read_bytes() == b"mine" and sorted(p.name for p in out_dir.iterdir()) == ["clip_overlay.gif"]
    (out_dir / "clip_overlay.gif").unlink()
    (out_dir / "clip_overlay.png").write_bytes(b"mine")
    code, rows, err = run_json([str(clip), "--overlay", str(out_dir)], capsys)
    assert code == 1 and "clip_overlay.png exists (pass --force to replace it)" in err
    assert (out_dir / "clip_overlay.png").read_bytes() == b"mine" and not (out_dir / "clip_overlay.gif").exists()
    code, rows, _ = run_json([str(clip), "--overlay", str(out_dir), "--force"], capsys)
    assert code == 0 and Image.open(out_dir / "clip_overlay.png").format == "PNG"


@needs_processor
def test_names_of_images_and_videos_with_one_stem_do_not_collide(tmp_path, capsys):
    clip = write_clip(tmp_path / "a.mp4", noise_frames(8), FPS)
    image = tmp_path / "a.png"
    Image.fromarray(page()).save(image)
    code, rows, _ = run_json([str(image), str(clip), "--overlay", str(tmp_path / "o")], capsys)
    assert code == 0
    assert Path(rows[0]["overlay"]).name == "a_overlay.png"
    assert (Path(rows[1]["overlay"]).name, Path(rows[1]["animation"]).name) == ("a_overlay-2.png", "a_overlay-2.gif")


@needs_processor
def test_video_recognised_by_content_without_a_video_extension(tmp_path, capsys):
    clip = write_clip(tmp_path / "clip.mp4", noise_frames(8), FPS)
    renamed = tmp_path / "recording.bin"
    clip.rename(renamed)
    code, (row,), _ = run_json([str(renamed)], capsys)
    assert code == 0 and row["video"] == str(renamed) and row["kept"] == row["tokens"]


@needs_processor
def test_bad_video_files_are_reported_and_others_still_processed(tmp_path, capsys):
    good = write_clip(tmp_path / "good.mp4", noise_frames(8), FPS)
    missing = tmp_path / "missing.mp4"
    garbage = tmp_path / "garbage.mkv"
    garbage.write_bytes(b"\x1aE\xdf\xa3 not really matroska" * 10)
    unknown = tmp_path / "notes.xyz"
    unknown.write_text("neither an image nor a video\n")
    one_frame = write_clip(tmp_path / "one.mp4", noise_frames(1), FPS)  # the stock processor needs 2 frames
    code, rows, err = run_json([str(missing), str(garbage), str(unknown), str(one_frame), str(good)], capsys)
    assert code == 1 and [r["video"] for r in rows] == [str(good)]
    lines = err.strip().splitlines()
    assert len(lines) == 4
    assert lines[3].startswith(f"pixelprune inspect: error: {one_frame}: cannot decode or preprocess video (ValueError: ")
    assert lines[0] == f"pixelprune inspect: error: {missing}: no such file"
    assert lines[1].startswith(f"pixelprune inspect: error: {garbage}: cannot decode video")
    assert lines[2].startswith(f"pixelprune inspect: error: {unknown}: not an image")
    assert "nor a video" in lines[2] and ".mp4" in lines[2]


@pytest.mark.parametrize("missing", ["av", "transformers"])
def test_missing_extra_is_named(tmp_path, capsys, monkeypatch, missing):
    """Real where the package is absent, else simulated (``sys.modules[name] = None``, this test only).
    The file's content does not matter: nothing is decoded without the packages."""
    if missing == "transformers" and not HAS_AV:
        pytest.skip("PyAV is not installed (its absence is reported first)")
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\0" * 64)
    image = tmp_path / "page.png"
    Image.fromarray(page()).save(image)
    monkeypatch.setitem(sys.modules, missing, None)
    code, rows, err = run_json([str(clip), str(image)], capsys)
    assert code == 1 and [r.get("image") for r in rows] == [str(image)]  # images still work
    assert f"{clip}: " in err and 'pip install "pixelprune[video]"' in err
    assert ("PyAV" if missing == "av" else "transformers") in err


@needs_av
def test_missing_torchvision_is_named(tmp_path, capsys, monkeypatch):
    """Real where torchvision is absent (hf-lo), simulated elsewhere."""
    if importlib.util.find_spec("transformers") is None:
        pytest.skip("transformers is not installed (its absence is reported first)")
    if importlib.util.find_spec("torchvision") is not None:
        monkeypatch.setitem(sys.modules, "torchvision", None)
    clip = write_clip(tmp_path / "clip.webm", noise_frames(8), FPS)
    code, rows, err = run_json([str(clip)], capsys)
    assert code == 1 and rows == []
    assert f"{clip}: the stock Qwen3-VL video processor needs torchvision, which is not installed" in err
    assert "pip install torchvision" in err


def test_invalid_video_options_are_usage_errors(tmp_path, capsys):
    for flags, message in [(["--fps", "0"], "fps=0.0 must be > 0"),
                           (["--video-min-pixels", "9000", "--video-max-pixels", "100"],
                            "video min_pixels=9000 is larger than video max_pixels=100")]:
        with pytest.raises(SystemExit) as exc:
            main(["inspect", str(tmp_path / "clip.mp4"), *flags])
        assert exc.value.code == 2 and message in capsys.readouterr().err


@needs_processor
def test_options_for_the_other_kind_of_file_are_not_dropped_silently(tmp_path, capsys):
    clip = write_clip(tmp_path / "clip.mp4", noise_frames(8), FPS)
    image = tmp_path / "page.png"
    Image.fromarray(page()).save(image)
    code, _, err = run_json([str(clip), "--max-pixels", "70000"], capsys)
    assert code == 0 and "--max-pixels only apply to images, and there are none among the files" in err
    code, _, err = run_json([str(image), "--fps", "1", "--video-max-pixels", "99999"], capsys)
    assert code == 0 and "--fps, --video-max-pixels only apply to videos, and there are none among the files" in err
    code, _, err = run_json([str(image), str(clip), "--fps", "1", "--max-pixels", "70000"], capsys)
    assert code == 0 and "only apply" not in err
