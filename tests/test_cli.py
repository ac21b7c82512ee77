"""``pixelprune inspect`` (and the ``pixelprune`` command's wiring).

The CLI runs in-process (``main([...])``) for speed; one test runs the installed console script.
Expected values come from ``select_tokens`` on the same preprocessed pixels.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixelprune import select_tokens
from pixelprune.cli import main
from pixelprune.overlay import MIN_CAPTION_WIDTH
from pixelprune.processing.image_preprocessing import ImagePreprocessConfig, preprocess_images

REPO = Path(__file__).resolve().parents[1]
JSON_KEYS = {"image", "width", "height", "grid_thw", "tokens", "kept", "retention", "kept_indices", "selector_ms"}


@pytest.fixture(autouse=True)
def _no_pixelprune_env(monkeypatch):
    for name in ("THRESHOLD", "METRIC", "METHOD", "ANCHORED", "ENABLED", "VERBOSE"):
        monkeypatch.delenv(f"PIXELPRUNE_{name}", raising=False)


@pytest.fixture()
def images(tmp_path: Path) -> dict[str, Path]:
    """A document-like page (white, a noisy block, a gradient strip) and a UI-like picture."""
    rng = np.random.default_rng(0)
    page = np.full((400, 300, 3), 255, dtype=np.uint8)
    page[100:164, 64:200] = rng.integers(0, 256, (64, 136, 3))
    page[250:270, 20:280] = np.linspace(0, 255, 260, dtype=np.uint8)[None, :, None]
    ui = np.full((256, 320, 3), (17, 24, 39), dtype=np.uint8)
    ui[:, 64:] = (245, 247, 251)
    ui[40:120, 96:288] = rng.integers(0, 256, (80, 192, 3))
    paths = {"page": tmp_path / "page.png", "ui": tmp_path / "ui.png"}
    Image.fromarray(page).save(paths["page"])
    Image.fromarray(ui).save(paths["ui"])
    return paths


def expected_selection(path: Path, **settings) -> tuple[list[int], list[int], ImagePreprocessConfig]:
    config = ImagePreprocessConfig()
    pixel_values, grid = preprocess_images([Image.open(path)], config)
    kept = select_tokens(pixel_values, grid, **settings)[0].tolist()
    return kept, grid[0].tolist(), config


def run_json(args: list[str], capsys) -> tuple[int, list[dict], str]:
    code = main(["inspect", "--json", *args])
    captured = capsys.readouterr()
    return code, [json.loads(line) for line in captured.out.splitlines()], captured.err


def test_table_reports_the_selection(images, capsys):
    assert main(["inspect", str(images["page"])]) == 0
    out = capsys.readouterr().out
    kept, grid, _ = expected_selection(images["page"])
    tokens = grid[1] * grid[2] // 4
    assert str(images["page"]) in out
    assert f"tokens kept      {len(kept)} / {tokens} ({100 * len(kept) / tokens:.1f} %)" in out
    assert f"{tokens - len(kept)} pruned" in out
    assert "image size       300 x 400 px, resized to 288 x 384 px" in out
    assert f"token grid       {grid[1] // 2} x {grid[2] // 2} tokens" in out
    assert re.search(r"ViT FLOPs saved  \d+\.\d %", out)
    assert re.search(r"selector time    \d+\.\d ms", out)
    assert "threshold 0 (lossless), metric max, method pred_2d" in out


def test_json_keys_and_values(images, capsys):
    code, rows, _ = run_json([str(images["page"]), str(images["ui"])], capsys)
    assert code == 0 and len(rows) == 2
    for row, name in zip(rows, ("page", "ui")):
        assert JSON_KEYS <= set(row)
        kept, grid, _ = expected_selection(images[name])
        assert row["image"] == str(images[name])
        assert row["grid_thw"] == grid
        assert row["tokens"] == grid[1] * grid[2] // 4
        assert row["kept_indices"] == kept and row["kept"] == len(kept)
        assert row["pruned"] == row["tokens"] - row["kept"]
        assert row["retention"] == pytest.approx(len(kept) / row["tokens"], abs=1e-6)
        assert row["selector_ms"] >= 0
        assert 0 < row["vit_flops_kept"] < row["vit_flops_full"]
        assert 0 < row["vit_flops_saved"] < 1
    assert (rows[0]["width"], rows[0]["height"]) == (300, 400)
    assert (rows[0]["resized_width"], rows[0]["resized_height"]) == (288, 384)
    assert (rows[1]["width"], rows[1]["height"]) == (320, 256)


@pytest.mark.parametrize(
    ("flags", "settings"),
    [
        (["--threshold", "0.05", "--metric", "mae", "--method", "raster"],
         dict(threshold=0.05, metric="mae", method="raster", anchored=None)),
        (["--threshold", "0.1", "--metric", "rmse", "--sliding"],
         dict(threshold=0.1, metric="rmse", anchored=False)),
        (["--method", "serpentine", "--anchored"], dict(method="serpentine", anchored=True)),
        (["--metric", "exact"], dict(metric="max")),
    ],
)
def test_settings_reach_the_selector(images, capsys, flags, settings):
    code, rows, _ = run_json([str(images["page"]), *flags], capsys)
    kept, _, _ = expected_selection(images["page"], **settings)
    assert code == 0 and rows[0]["kept_indices"] == kept


def test_environment_defaults_and_flag_precedence(images, capsys, monkeypatch):
    monkeypatch.setenv("PIXELPRUNE_METHOD", "raster")
    _, rows, _ = run_json([str(images["page"])], capsys)
    assert rows[0]["settings"]["method"] == "raster"
    assert rows[0]["kept_indices"] == expected_selection(images["page"], method="raster")[0]
    _, rows, _ = run_json([str(images["page"]), "--method", "pred_2d"], capsys)
    assert rows[0]["settings"]["method"] == "pred_2d"


def test_overlay_marks_kept_and_pruned_tokens(images, tmp_path, capsys):
    out_dir = tmp_path / "overlays"
    code, rows, _ = run_json([str(images["page"]), str(images["ui"]), "--overlay", str(out_dir)], capsys)
    assert code == 0
    for row, name in zip(rows, ("page", "ui")):
        overlay_path = Path(row["overlay"])
        assert overlay_path == out_dir / f"{name}_overlay.png"
        overlay = np.array(Image.open(overlay_path).convert("RGB"))
        width, height = row["resized_width"], row["resized_height"]
        assert overlay.shape[0] > height and overlay.shape[1:] == (max(width, MIN_CAPTION_WIDTH), 3)
        resized = np.array(Image.open(images[name]).convert("RGB").resize((width, height), Image.Resampling.BICUBIC))
        rows_, cols = height // 32, width // 32
        keep = np.zeros(rows_ * cols, dtype=bool)
        keep[row["kept_indices"]] = True
        # Per token, off the grid line (first row and column): kept = unchanged, pruned = every pixel changed.
        pic = overlay[:height].reshape(rows_, 32, cols, 32, 3)[:, 1:, :, 1:]
        ref = resized.reshape(rows_, 32, cols, 32, 3)[:, 1:, :, 1:]
        same = (pic == ref).all(axis=-1)  # (rows, 31, cols, 31)
        keep_grid = keep.reshape(rows_, cols)
        assert same.all(axis=(1, 3))[keep_grid].all()
        assert (~same).all(axis=(1, 3))[~keep_grid].all()
        assert 0 < keep.sum() < keep.size


def test_overlay_names_do_not_collide(tmp_path, images, capsys):
    other = tmp_path / "other"
    other.mkdir()
    twin = other / images["page"].name
    twin.write_bytes(images["page"].read_bytes())
    code, rows, _ = run_json([str(images["page"]), str(twin), "--overlay", str(tmp_path / "o")], capsys)
    assert code == 0
    assert [Path(r["overlay"]).name for r in rows] == ["page_overlay.png", "page_overlay-2.png"]


def _tree_bytes(folder: Path) -> dict[str, bytes | str]:
    return {p.name: (f"-> {p.readlink()}" if p.is_symlink() else p.read_bytes()) for p in sorted(folder.iterdir())}


def test_overlay_refuses_existing_files_unless_force(tmp_path, images, capsys):
    out_dir = tmp_path / "o"
    out_dir.mkdir()
    (out_dir / "ui_overlay.png").write_bytes(b"my own picture")
    before = _tree_bytes(out_dir)
    code, rows, err = run_json([str(images["page"]), str(images["ui"]), "--overlay", str(out_dir)], capsys)
    assert code == 1 and rows == []  # refused before any image is processed
    assert f"overlay {out_dir / 'ui_overlay.png'} exists (pass --force to replace it); nothing was written" in err
    assert _tree_bytes(out_dir) == before
    code, rows, _ = run_json([str(images["page"]), str(images["ui"]), "--overlay", str(out_dir), "--force"], capsys)
    assert code == 0 and [Path(r["overlay"]).name for r in rows] == ["page_overlay.png", "ui_overlay.png"]
    assert Image.open(out_dir / "ui_overlay.png").size[1] > rows[1]["resized_height"]
    assert sorted(p.name for p in out_dir.iterdir()) == ["page_overlay.png", "ui_overlay.png"]  # no temporary files left


@pytest.mark.parametrize("force", [False, True])
def test_overlay_never_writes_through_a_symlink(tmp_path, images, capsys, force):
    out_dir, elsewhere = tmp_path / "o", tmp_path / "elsewhere"
    out_dir.mkdir()
    elsewhere.mkdir()
    victim = elsewhere / "model.safetensors"
    victim.write_bytes(b"weights")
    (out_dir / "page_overlay.png").symlink_to(victim)
    (out_dir / "ui_overlay.png").symlink_to(elsewhere / "dangling.png")
    before = _tree_bytes(out_dir)
    code, rows, err = run_json(
        [str(images["page"]), str(images["ui"]), "--overlay", str(out_dir), *(["--force"] if force else [])], capsys
    )
    assert code == 1 and rows == []
    assert err.count("is a symbolic link (never written through or replaced)") == 2
    assert victim.read_bytes() == b"weights" and not (elsewhere / "dangling.png").exists()
    assert _tree_bytes(out_dir) == before


def test_overlay_write_refuses_a_file_that_appears_after_the_check(tmp_path, images, capsys, monkeypatch):
    """The no-overwrite rule holds at write time too (exclusive create), not only in the up-front check."""
    from pixelprune import inspect_images

    out_dir = tmp_path / "o"
    real = inspect_images._write_overlay

    def racing(target, *args, **kwargs):
        target.symlink_to(tmp_path / "planted.png")
        return real(target, *args, **kwargs)

    monkeypatch.setattr(inspect_images, "_write_overlay", racing)
    code, rows, err = run_json([str(images["page"]), "--overlay", str(out_dir)], capsys)
    assert code == 1 and rows == [] and "cannot write overlay" in err
    assert not (tmp_path / "planted.png").exists() and (out_dir / "page_overlay.png").is_symlink()


def _jpeg_with_orientation(path: Path, orientation: int, fmt: str) -> None:
    """A 640x320 (width x height) picture with a distinct corner, tagged with EXIF ``orientation``."""
    pixels = np.zeros((320, 640, 3), dtype=np.uint8)
    pixels[:, :, 0] = np.linspace(0, 255, 640, dtype=np.uint8)[None, :]
    pixels[:96, :64] = (255, 255, 255)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, format=fmt, exif=exif)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_exif_orientation_is_applied_like_transformers_load_image(tmp_path, capsys, fmt):
    load_image = pytest.importorskip("transformers.image_utils").load_image
    from pixelprune.inspection import load_image as our_load_image

    for orientation in range(1, 9):
        path = tmp_path / f"o{orientation}.{fmt.lower()}"
        _jpeg_with_orientation(path, orientation, fmt)
        theirs = np.array(load_image(str(path)))
        ours = np.array(our_load_image(path).convert("RGB"))
        assert ours.shape == theirs.shape and np.array_equal(ours, theirs), orientation
        code, rows, _ = run_json([str(path)], capsys)
        upright = theirs.shape[:2]  # (height, width) as the model sees it
        assert code == 0 and (rows[0]["height"], rows[0]["width"]) == upright, orientation
        assert rows[0]["grid_thw"] == [1, upright[0] // 16, upright[1] // 16], orientation
    assert rows[0]["grid_thw"] == [1, 40, 20]  # orientations 5-8 turn the 640x320 picture upright: 320x640


def test_bad_files_are_reported_and_others_still_processed(images, tmp_path, capsys):
    missing = tmp_path / "missing.png"
    not_image = tmp_path / "notes.png"
    not_image.write_text("this is not an image\n")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(images["ui"].read_bytes()[:200])
    args = [str(images["page"]), str(missing), str(not_image), str(tmp_path), str(truncated), str(images["ui"])]
    code, rows, err = run_json(args, capsys)
    assert code == 1
    assert [r["image"] for r in rows] == [str(images["page"]), str(images["ui"])]
    lines = err.strip().splitlines()
    assert len(lines) == 4
    for line, path in zip(lines, (missing, not_image, tmp_path, truncated)):
        assert line.startswith(f"pixelprune inspect: error: {path}: ")
    assert "no such file" in lines[0]
    assert "not an image" in lines[1]
    assert "directory" in lines[2]
    assert "cannot decode" in lines[3]


def test_table_mode_errors_too(images, tmp_path, capsys):
    code = main(["inspect", str(tmp_path / "nope.jpg"), str(images["ui"])])
    captured = capsys.readouterr()
    assert code == 1
    assert "nope.jpg: no such file" in captured.err
    assert str(images["ui"]) in captured.out and "tokens kept" in captured.out


def test_images_too_small_or_too_elongated(tmp_path, images, capsys):
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (10, 10), "white").save(tiny)
    sliver = tmp_path / "sliver.png"
    Image.new("RGB", (300, 1), "white").save(sliver)
    code, rows, err = run_json([str(tiny), str(images["ui"]), "--min-pixels", "0"], capsys)
    assert code == 1 and len(rows) == 1
    assert f"{tiny}: Image of 10x10 pixels is too small to form one 32x32 token" in err
    code, rows, err = run_json([str(sliver)], capsys)
    assert code == 1 and rows == []
    assert f"{sliver}: absolute aspect ratio must be smaller than 200" in err


def test_default_min_pixels_upscales_small_images_like_the_processor(tmp_path, capsys):
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (10, 10), "white").save(tiny)
    code, rows, _ = run_json([str(tiny)], capsys)
    assert code == 0
    assert rows[0]["grid_thw"] == [1, 16, 16] and rows[0]["kept"] == 1  # 256x256 px, uniform


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--metric", "cosine"], "Unknown PixelPrune metric 'cosine'; allowed: 'max', 'mae', 'rmse', 'exact'"),
        (["--method", "zigzag"], "Unknown PixelPrune method 'zigzag'; allowed: 'pred_2d', 'raster', 'serpentine'"),
        (["--threshold", "-1"], "threshold=-1.0 is invalid"),
        (["--threshold", "0.1", "--metric", "exact"], "metric='exact' means 'max' with threshold 0"),
        (["--min-pixels", "5000", "--max-pixels", "100"], "min_pixels=5000 is larger than max_pixels=100"),
        (["--anchored", "--sliding"], "not allowed with argument"),
        (["--threshold", "abc"], "invalid float value: 'abc'"),
    ],
)
def test_invalid_settings_are_usage_errors(images, capsys, flags, message):
    with pytest.raises(SystemExit) as exc:
        main(["inspect", str(images["page"]), *flags])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage: pixelprune inspect" in err and message in err


def test_verbose_logs_debug(images, capsys):
    assert main(["inspect", "-v", str(images["page"]), "--json"]) == 0
    assert "DEBUG" in capsys.readouterr().err
    assert main(["inspect", str(images["page"]), "--json"]) == 0
    assert "DEBUG" not in capsys.readouterr().err


def test_export_subcommand_is_wired(capsys):
    if importlib.util.find_spec("pixelprune.hub_configs.exporter") is None:
        assert main(["export", "--anything", "x"]) == 2
        assert "pixelprune export: error: not available" in capsys.readouterr().err
    else:  # the exporter's own options are in its help
        with pytest.raises(SystemExit) as exc:
            main(["export", "--help"])
        assert exc.value.code == 0
        assert "usage: pixelprune export" in capsys.readouterr().out


def test_shipped_samples_inspect(capsys, tmp_path):
    samples = [REPO / "assets" / "sample_document.png", REPO / "assets" / "sample_screenshot.png"]
    code, rows, _ = run_json([*map(str, samples), "--overlay", str(tmp_path)], capsys)
    assert code == 0
    for row in rows:
        assert 0.10 <= row["retention"] <= 0.75  # ALGORITHM.md: documents and GUIs keep 10-75 % at tau = 0
        assert Path(row["overlay"]).is_file()


@pytest.mark.slow
def test_installed_console_script(images):
    script = Path(sys.executable).with_name("pixelprune")
    if not script.exists():
        pytest.skip("the pixelprune console script is not installed next to this Python")
    done = subprocess.run(
        [str(script), "inspect", "--json", str(images["page"])], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout)
    assert row["kept_indices"] == expected_selection(images["page"])[0]
