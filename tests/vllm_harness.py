"""Harness of the vLLM tests: environment, tiny PixelPrune checkpoints, the transformers side,
server shutdown. Synthetic images live in ``images.py``.

The transformers reference runs in another venv (vLLM pins transformers < 5.20): set
``PIXELPRUNE_HF_PYTHON`` to its interpreter (scripts/test.sh does); tests needing it skip otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).parent
PIXELPRUNE_ARCHITECTURES = {
    "qwen3_vl": "PixelPruneQwen3VLForConditionalGeneration",
    "qwen3_vl_moe": "PixelPruneQwen3VLMoeForConditionalGeneration",
    "qwen3_5": "PixelPruneQwen3_5ForConditionalGeneration",
    "qwen3_5_moe": "PixelPruneQwen3_5MoeForConditionalGeneration",
}
CHAT = "<|im_start|>user\n{images}{text}<|im_end|>\n<|im_start|>assistant\n"
IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
VIDEO = "<|vision_start|><|video_pad|><|vision_end|>"
VIDEO_FPS = 2.0


def hf_python() -> str | None:
    """The transformers-venv interpreter for the reference side, if configured and present."""
    path = os.environ.get("PIXELPRUNE_HF_PYTHON")
    return path if path and Path(path).exists() else None


# vLLM reports usage statistics over the network unless told not to; tests and benchmarks never
# should (CI has no network, and a test must not phone home).
NO_TELEMETRY_ENV = {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}


def configure_vllm_env(root: Path) -> None:
    """CPU settings vLLM needs here, with every cache under ``root`` and usage statistics off
    (``NO_TELEMETRY_ENV``, forced: an inherited ``DO_NOT_TRACK=0`` must not switch them on)."""
    os.environ.update(NO_TELEMETRY_ENV)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # one process: ~3 s start, not ~17 s
    for var, sub in (("VLLM_CACHE_ROOT", "vllm"), ("VLLM_RPC_BASE_PATH", "rpc"), ("TORCHINDUCTOR_CACHE_DIR", "inductor")):
        os.environ.setdefault(var, str(root / sub))
        Path(os.environ[var]).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def build_checkpoint(family: str, out_dir: Path) -> Path:
    """Tiny stock checkpoint, built by the transformers venv when available (its save format)."""
    python = hf_python() or sys.executable
    subprocess.run([python, str(HERE / "vllm_hf_reference.py"), "build", family, str(out_dir)], check=True,
                   capture_output=True)
    if family == "qwen3_vl_moe":
        to_hub_layout_qwen3_vl_moe(out_dir)
    return out_dir


def to_hub_layout_qwen3_vl_moe(checkpoint: Path) -> None:
    """Make a Qwen3-VL-MoE checkpoint saved from a fresh transformers model look like the Hub's.

    transformers 5.x saves fused experts in its in-memory layout (``down_proj`` ``(E, H, I)``) and
    transposes the Hub layout (``(E, I, H)``, ``gate_up_proj`` ``(E, H, 2I)``) on load, telling
    the two apart by shape; vLLM always transposes (``is_fused_checkpoint_transposed``), so it
    needs the Hub layout. The Hub configs also carry ``norm_topk_prob: true``, which vLLM's MoE
    layers read (transformers' router always renormalises and does not define it).
    """
    from safetensors.torch import load_file, save_file

    weights_path = checkpoint / "model.safetensors"
    weights = load_file(weights_path)
    for name, tensor in weights.items():
        if name.endswith(("mlp.experts.gate_up_proj", "mlp.experts.down_proj")):
            if tensor.shape[1] == tensor.shape[2]:
                raise ValueError(f"{name} is square {tuple(tensor.shape)}: its layout would be ambiguous.")
            weights[name] = tensor.transpose(1, 2).contiguous()
    save_file(weights, weights_path, metadata={"format": "pt"})
    config = json.loads((checkpoint / "config.json").read_text())
    config["text_config"].setdefault("norm_topk_prob", True)
    (checkpoint / "config.json").write_text(json.dumps(config, indent=2))


def pixelprune_copy(stock_dir: Path, out_dir: Path, family: str, settings: dict | None = None) -> Path:
    """Copy of a stock checkpoint that names the PixelPrune architecture (what the exporter writes
    for vLLM) and saves ``settings`` in ``processor_config.json``'s ``pixelprune`` block."""
    shutil.copytree(stock_dir, out_dir)
    config = json.loads((out_dir / "config.json").read_text())
    config["architectures"] = [PIXELPRUNE_ARCHITECTURES[family]]
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    processor_config = json.loads((out_dir / "processor_config.json").read_text())
    processor_config["pixelprune"] = settings or {}
    (out_dir / "processor_config.json").write_text(json.dumps(processor_config, indent=2))
    return out_dir


def save_images(work: Path, groups: list[list[Image.Image]]) -> list[list[str]]:
    """Save each request's images as PNG under ``work`` (the transformers side reads files)."""
    paths = []
    for i, images in enumerate(groups):
        paths.append([str(work / f"{i}_{j}.png") for j in range(len(images))])
        for image, path in zip(images, paths[-1]):
            image.save(path)
    return paths


def video_metadata(num_frames: int, fps: float = VIDEO_FPS) -> dict:
    """The metadata of a pre-sampled video as vLLM's loaders return it (every frame sampled, no
    resampling by the processor); the transformers side gets the same fps and frame indices."""
    return {"fps": fps, "duration": num_frames / fps, "total_num_frames": num_frames,
            "frames_indices": list(range(num_frames)), "video_backend": "opencv", "do_sample_frames": False}


def screen_video(frames: int = 4, width: int = 128, height: int = 96, *, seed: int = 0) -> np.ndarray:
    """``(frames, height, width, 3)`` uint8: a white page with a noisy block that stays put and a
    second one that appears at frame 2 (a screen recording: slice 1 repeats most of slice 0)."""
    rng = np.random.default_rng(seed)
    video = np.full((frames, height, width, 3), 255, np.uint8)
    video[:, 8:40, 16:60] = rng.integers(0, 256, (32, 44, 3), dtype=np.uint8)
    video[frames // 2:, 56:90, 70:120] = rng.integers(0, 256, (34, 50, 3), dtype=np.uint8)
    return video


def smooth_video(frames: int = 4, width: int = 128, height: int = 96) -> np.ndarray:
    """A colour gradient panning by one pixel per frame: nothing repeats exactly, but neighbours
    are close (pruned only above threshold 0)."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([np.stack([(x + f) * 2 % 256, y * 2 % 256, (x + y + f) % 256], -1) for f in range(frames)]).astype(np.uint8)


def write_lossless_avi(frames: np.ndarray, path: Path, fps: float = VIDEO_FPS) -> Path:
    """Write ``(frames, height, width, 3)`` uint8 RGB frames to ``path`` as an FFV1 AVI through the
    OpenCV that vllm-cpu depends on (and decodes videos with). Lossless: a lossy codec would make
    repeated frames differ after decoding, and pruning is pixel-exact. Raises ``RuntimeError`` when
    this OpenCV build cannot write FFV1."""
    import cv2

    height, width = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV {cv2.__version__} cannot write FFV1 video to {path}")
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[:, :, ::-1]))  # OpenCV wants BGR
    writer.release()
    return path


def save_videos(work: Path, videos: dict[str, np.ndarray]) -> dict[str, str]:
    """Save each video as ``.npy`` under ``work`` (the transformers side loads the same frames)."""
    paths = {}
    for name, video in videos.items():
        paths[name] = str(work / f"{name}.npy")
        np.save(paths[name], video)
    return paths


def hf_generate(checkpoint: Path, family: str, cases: list[dict], max_new_tokens: int, work: Path) -> list[dict]:
    """Run the transformers PixelPrune classes on ``cases`` (see vllm_hf_reference.py)."""
    request, result = work / "hf_request.json", work / "hf_result.json"
    request.write_text(json.dumps({"checkpoint": str(checkpoint), "family": family,
                                   "max_new_tokens": max_new_tokens, "cases": cases}))
    proc = subprocess.run([hf_python(), str(HERE / "vllm_hf_reference.py"), "generate", str(request), str(result)],
                          capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"transformers reference failed:\n{proc.stderr[-4000:]}")
    return json.loads(result.read_text())


def stop_server(server: subprocess.Popen, timeout: float = 60) -> None:
    """Terminate a server subprocess, killing it if it does not exit within ``timeout`` seconds."""
    server.terminate()
    try:
        server.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
