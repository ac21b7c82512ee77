"""Helpers shared by the benchmark scripts: arguments, the image set, the stock image processor,
timing (CUDA events on a GPU), results."""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
IMAGE_DIR = BENCH_DIR / "data" / "images"
QUICK_IMAGE_DIR = BENCH_DIR / "data" / "images-quick"

# Qwen3-VL / Qwen3.5 checkpoints' preprocessor_config.json (the stock defaults).
QWEN3_VL_PROCESSOR_KWARGS = dict(
    patch_size=16, merge_size=2, temporal_patch_size=2, image_mean=[0.5] * 3, image_std=[0.5] * 3,
    size={"shortest_edge": 65536, "longest_edge": 16777216},
)


DTYPES = ("float32", "bfloat16", "float16")


def benchmark_parser(doc: str, *, quick_help: str, repeats: int | None = 3, model: bool = False,
                     measure: bool = False, per_type: int = 2, max_pixels: int = 1024 * 1024) -> argparse.ArgumentParser:
    """The arguments every benchmark takes (``--quick``, ``--device``, ``--dtype``, ``--threads``,
    ``--out``, ``--repeats``); with ``measure=True`` those of a model timing (images per type, pixel
    budget, clock, attention), with ``model=True`` also the model's family and depth.
    Finish with :func:`parse_args`."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help=quick_help)
    ap.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, ... (default cpu)")
    ap.add_argument("--dtype", choices=DTYPES, default="float32", help="model / pixel dtype (default float32)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--out", default=None, help="result name (default: the script's)")
    if repeats is not None:
        ap.add_argument("--repeats", type=int, default=repeats,
                        help="interleaved rounds per measurement (after one warm-up call each)")
    if model:
        from bench_models import FAMILIES

        ap.add_argument("--family", choices=FAMILIES, default="qwen3_vl")
        ap.add_argument("--vit-depth", type=int, default=2, help="ViT blocks (24 = full depth)")
        ap.add_argument("--llm-layers", type=int, default=None, help="default: 2 (qwen3_vl), 4 (qwen3_5)")
    if model or measure:
        ap.add_argument("--per-type", type=int, default=per_type, help="images per type")
        ap.add_argument("--max-pixels", type=int, default=max_pixels, help="image processor pixel budget")
        ap.add_argument("--clock", choices=["wall", "cpu", "cuda"], default=None,
                        help="wall clock, CPU time of the process (robust on a shared machine with --threads 1), "
                             "or CUDA events (default: cuda on a CUDA device, else wall)")
        ap.add_argument("--attn", default="sdpa", help="attention implementation (sdpa, eager, flash_attention_2)")
    return ap


def parse_args(ap: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and validate once: ``args.device`` becomes a ``torch.device`` (refused when absent),
    ``args.torch_dtype`` the dtype; threads are applied; model defaults are filled in."""
    import torch

    args = ap.parse_args(argv)
    try:
        args.device = torch.device(args.device)
    except RuntimeError as error:
        ap.error(f"--device {args.device!r}: {error}")
    if args.device.type == "cuda" and not torch.cuda.is_available():
        ap.error(f"--device {args.device}: CUDA is not available (torch {torch.__version__})")
    args.torch_dtype = getattr(torch, args.dtype)
    if args.threads:
        torch.set_num_threads(args.threads)
    if hasattr(args, "clock"):
        if args.clock is None:
            args.clock = "cuda" if args.device.type == "cuda" else "wall"
        if args.clock == "cuda" and args.device.type != "cuda":
            ap.error("--clock cuda needs a CUDA --device")
    if getattr(args, "family", None) and args.llm_layers is None:
        from bench_models import DEFAULT_LLM_LAYERS

        args.llm_layers = DEFAULT_LLM_LAYERS[args.family]
    return args


def load_images(quick: bool, image_dir: Path | None = None) -> list[dict]:
    """Records of the image set built by ``make_image_set.py`` (quick set if asked and present)."""
    sys.path.insert(0, str(BENCH_DIR))
    from make_image_set import load_manifest

    if image_dir is None:
        image_dir = QUICK_IMAGE_DIR if quick and (QUICK_IMAGE_DIR / "manifest.json").exists() else IMAGE_DIR
    return load_manifest(image_dir)


def stock_image_processor():
    """The stock transformers Qwen3-VL image processor with the checkpoints' defaults.

    The torchvision backend when torchvision imports, else the PIL backend (what transformers
    itself picks); ``.backend_name`` says which.
    """
    try:
        import torchvision  # noqa: F401
        from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor as cls

        name = "torchvision"
    except Exception:  # torchvision missing or broken (see ENVIRONMENT.md)
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil as cls

        name = "pil"
    proc = cls(**QWEN3_VL_PROCESSOR_KWARGS)
    proc.backend_name = name
    return proc


def open_rgb(path: str):
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


def time_call(fn: Callable[[], Any], repeats: int) -> tuple[float, float, Any]:
    """(best wall seconds, best CPU seconds of this process, last result) over ``repeats`` calls.

    The minimum is the least disturbed run: these machines are shared, and other work only ever adds.
    """
    wall, cpu, out = [], [], None
    for _ in range(max(1, repeats)):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return min(wall), min(cpu), out


def median(xs: list[float]) -> float:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else float("nan")


def machine_info() -> dict[str, Any]:
    import torch

    cpu = platform.processor()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "loadavg_start": os.getloadavg(),
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def write_json(name: str, payload: dict[str, Any], quick: bool) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    payload.setdefault("machine", machine_info())
    payload["machine"]["loadavg_end"] = os.getloadavg()
    path = RESULTS_DIR / f"{name}{'_quick' if quick else ''}.json"
    path.write_text(json.dumps(payload, indent=1, default=float))
    return path


def print_table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> str:
    """Print (and return) a markdown table; ``columns`` = (key, header, format spec). A string value
    is printed as it is whatever the column's format (e.g. "failed: ..." in a column of numbers)."""
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        cells = []
        for key, _, fmt in columns:
            v = r.get(key)
            cells.append("-" if v is None else format(v, fmt) if fmt and not isinstance(v, str) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text)
    return text


def load_warning(threshold: float = 1.5) -> str | None:
    """A note when the machine is busy (load per core above ``threshold``): timings are then inflated."""
    load = os.getloadavg()[0]
    cores = os.cpu_count() or 1
    if load / cores > threshold:
        return (f"machine busy: load average {load:.1f} on {cores} cores; wall times are inflated, "
                "CPU times less so")
    return None


def pick_per_type(records: list[dict], per_type: int, resolutions: tuple[str, ...] = ("1080p", "native"),
                  types: tuple[str, ...] = ("documents", "screenshots", "photos")) -> list[dict]:
    """Up to ``per_type`` images of each type among ``resolutions``, spread over the set (deterministic)."""
    picked = []
    for kind in types:
        group = [r for r in records if r["type"] == kind and r["resolution"] in resolutions]
        step = max(1, len(group) // max(1, per_type))
        picked += group[::step][:per_type]
    return picked


def finish(name: str, summary: list[dict], columns: list[tuple[str, str, str]], payload: dict[str, Any],
           quick: bool) -> Path:
    """Print the summary table (and a busy-machine note), write the JSON result; returns its path."""
    print()
    table = print_table(summary, columns)
    note = load_warning()
    if note:
        print(f"\nNOTE: {note}")
    payload = dict(payload, summary=summary, table_markdown=table, note=note)
    path = write_json(name, payload, quick)
    print(f"\n{loadavg_note(payload)}\nwrote {path}")
    return path


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1,
                device: Any = None) -> dict[str, dict[str, Any]]:
    """Time the variants of one measurement (e.g. stock and PixelPrune) interleaved.

    Each variant runs ``warmup`` untimed calls, then ``repeats`` rounds each call every variant once,
    the order rotating from round to round (AB, BA, AB, ...): slow drift and order effects (caches,
    allocator, frequency, other jobs on a shared machine) then hit every variant alike instead of
    biasing the one that always runs first. Returns per name ``wall`` and ``cpu`` (lists of seconds,
    one per round, in round order: paired across variants) and ``out`` (the last result). On a CUDA
    ``device`` each call is also timed with CUDA events (``cuda``: the GPU time between the call's
    first and last kernel launch points) and the wall time includes a synchronize, since kernels
    run asynchronously.
    """
    import torch

    cuda = device is not None and torch.device(device).type == "cuda"
    names = list(fns)
    res = {n: dict(wall=[], cpu=[], cuda=[], out=None) for n in names}
    for n in names:
        for _ in range(warmup):
            res[n]["out"] = fns[n]()
    for r in range(max(1, repeats)):
        shift = r % len(names)
        for n in names[shift:] + names[:shift]:
            if cuda:
                torch.cuda.synchronize(device)
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
            w0, c0 = time.perf_counter(), time.process_time()
            res[n]["out"] = fns[n]()
            if cuda:
                end.record()
                torch.cuda.synchronize(device)
                res[n]["cuda"].append(start.elapsed_time(end) / 1e3)
            res[n]["cpu"].append(time.process_time() - c0)
            res[n]["wall"].append(time.perf_counter() - w0)
    return res


def spread(xs: list[float]) -> float:
    """Run-to-run noise of repeated timings: (max - min) / median."""
    return (max(xs) - min(xs)) / median(xs) if xs else float("nan")


def paired_ratios(a: list[float], b: list[float]) -> list[float]:
    """Round-by-round ratios a[i] / b[i] of two interleaved variants (same rounds, same disturbances)."""
    return [x / y for x, y in zip(a, b)]


def loadavg_note(payload: dict[str, Any]) -> str:
    """'load average a -> b' (1-minute values at the start and end of a run) from a result's machine info."""
    m = payload.get("machine", {})
    start, end = m.get("loadavg_start"), m.get("loadavg_end")
    return f"load average (1 min) {start[0]:.2f} at start -> {end[0]:.2f} at end" if start and end else ""


def ensure_debian_tools(wanted: dict[str, str], *, install: bool, apt_reason: str | None) -> None:
    """Fail early (or ``apt-get install``) when a tool of ``wanted`` (tool -> Debian package) is
    missing; with ``apt_reason``, ``apt-get`` and ``dpkg-deb`` themselves are required, and their
    absence is an error ending with that reason."""
    if apt_reason is not None:
        for tool in ("apt-get", "dpkg-deb"):
            if shutil.which(tool) is None:
                sys.exit(f"error: {tool} not found: {apt_reason}")
    missing = sorted({pkg for tool, pkg in wanted.items() if shutil.which(tool) is None})
    if not missing:
        return
    if not install:
        sys.exit(f"error: missing Debian packages {missing}; run `apt-get install {' '.join(missing)}` "
                 "or pass --install-tools.")
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", *missing]):
        subprocess.run(cmd, check=True, capture_output=True)


def download_deb(package: str, debs: Path) -> Path:
    """The newest ``.deb`` of ``package`` in ``debs``, fetched with ``apt-get download`` (nothing is
    installed) when none is there yet."""
    debs.mkdir(parents=True, exist_ok=True)
    if not sorted(debs.glob(f"{package}_*.deb")):
        logging.getLogger(__name__).info("downloading %s", package)
        subprocess.run(["apt-get", "download", package], cwd=debs, check=True, capture_output=True)
    return sorted(debs.glob(f"{package}_*.deb"))[-1]
