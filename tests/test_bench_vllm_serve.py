"""benchmarks/bench_vllm_serve.py helpers (no server): the client-side resize matches the stock
processor's choice, gains point the right way, retention is read from the prompt-token difference."""

from __future__ import annotations

import argparse
import base64
import io
import sys
from pathlib import Path

import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import bench_vllm_serve as bench  # noqa: E402
from common import open_rgb, stock_image_processor  # noqa: E402
from tiny_models import IMAGE_MIN_PIXELS  # noqa: E402

MAX_PIXELS = 256 * 256


@pytest.fixture(params=["image_set", "assets"])
def images(request, monkeypatch):
    if request.param == "assets":  # what happens where make_image_set.py has not been run (CI)
        monkeypatch.setattr(bench, "load_images", _no_image_set)
    elif not (bench.BENCH_DIR / "data" / "images" / "manifest.json").exists():
        pytest.skip("benchmarks/data/images not built (make_image_set.py)")
    return bench.prepare_images(argparse.Namespace(quick=True, per_type=1, max_pixels=MAX_PIXELS))


def _no_image_set(quick):
    raise FileNotFoundError("no image set")


def test_sent_images_are_what_the_stock_processor_picks(images):
    proc = stock_image_processor()
    size = {"shortest_edge": IMAGE_MIN_PIXELS, "longest_edge": MAX_PIXELS}
    assert {im["type"] for im in images} == {"documents", "screenshots"}
    for im in images:
        sent = Image.open(io.BytesIO(base64.b64decode(im["url"].split(",", 1)[1])))
        assert f"{sent.width}x{sent.height}" == im["sent"]
        # the stock processor on the original picks this size; on the sent image it keeps it
        original_path = next(p for p in _candidate_paths() if p.name == im["image"])
        grid = proc(images=open_rgb(str(original_path)), size=size, return_tensors="pt")["image_grid_thw"][0]
        assert (int(grid[1]) * 16, int(grid[2]) * 16) == (sent.height, sent.width)
        regrid = proc(images=sent.convert("RGB"), size=size, return_tensors="pt")["image_grid_thw"][0]
        assert regrid.tolist() == grid.tolist()
        assert im["image_tokens"] == int(grid[1] * grid[2]) // 4


def _candidate_paths() -> list[Path]:
    root = Path(bench.BENCH_DIR)
    return [*root.glob("data/images*/**/*.png"), *(root.parent / "assets").glob("sample_*.png")]


def _level(concurrency: int, rps: float, ttft: float, per_request: list[dict]) -> dict:
    return dict(concurrency=concurrency, requests_per_s=rps, ttft_mean_s=ttft, ttft_p50_s=ttft, ttft_p90_s=ttft,
                latency_mean_s=2 * ttft, prompt_tokens_mean=sum(r["prompt_tokens"] for r in per_request) / 2,
                per_request=per_request)


def test_gains_and_retention():
    stock = [_level(1, 1.0, 4.0, [{"image": "a", "prompt_tokens": 300}, {"image": "b", "prompt_tokens": 140}])]
    pruned = [_level(1, 2.0, 1.0, [{"image": "a", "prompt_tokens": 120}, {"image": "b", "prompt_tokens": 140}])]
    rows = {r["metric"]: r for r in bench.side_by_side({"stock": stock, "pixelprune": pruned})}
    assert rows["requests/s"]["gain"] == pytest.approx(2.0)  # twice the throughput
    assert rows["TTFT mean s"]["gain"] == pytest.approx(4.0)  # a quarter of the time
    assert rows["prompt tokens/request"]["gain"] == pytest.approx(440 / 260)
    images = [{"image": "a", "image_tokens": 256}, {"image": "b", "image_tokens": 100},
              {"image": "c", "image_tokens": 9}]
    bench.add_retention(images, {"stock": stock, "pixelprune": pruned})
    assert (images[0]["kept_tokens"], images[1]["kept_tokens"]) == (76, 100)
    assert images[0]["retention"] == pytest.approx(76 / 256) and images[1]["retention"] == 1.0
    assert "retention" not in images[2]
