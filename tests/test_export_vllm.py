"""An exported repo serves with vLLM (pixelprune's plugin) and prunes like transformers does.

Runs in the vLLM environment (``-m vllm``); the transformers oracle runs in ``PIXELPRUNE_HF_PYTHON``
(see ``vllm_harness``) on the same exported repo, with the saved settings of the export (threshold
0.05 and ``video`` on: a video request prunes with no per-request setting).
"""

from __future__ import annotations

import gc

import pytest

pytest.importorskip("vllm")

from images import sparse_blocks_image  # noqa: E402
from vllm_harness import (  # noqa: E402
    CHAT, IMAGE, VIDEO, VIDEO_FPS, build_checkpoint, configure_vllm_env, hf_generate, hf_python, save_videos,
    screen_video, video_metadata,
)

from pixelprune.hub_configs.exporter import export  # noqa: E402
from pixelprune.core.settings import PixelPruneSettings  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow]
FAMILY = "qwen3_vl"
MAX_NEW = 6
PROMPT = CHAT.format(images=IMAGE, text="Describe this image.")
VIDEO_PROMPT = CHAT.format(images=VIDEO, text="Describe this video.")


@pytest.mark.skipif(hf_python() is None, reason="PIXELPRUNE_HF_PYTHON (transformers >= 5.20 venv) not set")
def test_exported_repo_serves_with_vllm_like_transformers(tmp_path):
    from vllm import LLM, SamplingParams

    configure_vllm_env(tmp_path)
    base = build_checkpoint(FAMILY, tmp_path / "stock")
    out = tmp_path / "exported"
    export(base, out, settings=PixelPruneSettings(threshold=0.05, video=True), sample_images=[])
    image_path = tmp_path / "doc.png"
    sparse_blocks_image(seed=0).save(image_path)
    video = screen_video(frames=8)
    (video_path,) = save_videos(tmp_path, {"screen": video}).values()

    reference, video_reference = hf_generate(out, FAMILY, [
        {"prompt": PROMPT, "images": [str(image_path)]},
        {"prompt": VIDEO_PROMPT, "images": [], "videos": [{"path": video_path, "fps": VIDEO_FPS}]},
    ], MAX_NEW, tmp_path)
    assert sum(reference["kept"]) < sum(reference["total"])
    assert sum(video_reference["video_kept"][0]) < sum(video_reference["video_total"][0])

    from PIL import Image

    llm = LLM(model=str(out), dtype="float32", max_model_len=2048, enforce_eager=True, seed=0,
              limit_mm_per_prompt={"image": 1, "video": 1}, max_num_seqs=2)
    try:
        result, video_result = llm.generate(
            [{"prompt": PROMPT, "multi_modal_data": {"image": Image.open(image_path).convert("RGB")}},
             {"prompt": VIDEO_PROMPT, "multi_modal_data": {"video": (video, video_metadata(len(video)))}}],
            SamplingParams(temperature=0, max_tokens=MAX_NEW),
        )
    finally:
        del llm
        gc.collect()
    assert len(result.prompt_token_ids) == reference["prompt_len"]
    assert list(result.outputs[0].token_ids) == reference["tokens"]
    assert len(video_result.prompt_token_ids) == video_reference["prompt_len"]
    assert list(video_result.outputs[0].token_ids) == video_reference["tokens"]
