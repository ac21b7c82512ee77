"""Qwen3.5, Qwen3-VL-MoE and Qwen3.5-MoE through the plugin: parity with the transformers classes
(the Qwen3-VL engine tests live in test_vllm_engine.py).

vLLM's CPU gated-delta-net kernels require bfloat16, so the Qwen3.5 engines run in bf16 while the
transformers reference runs in fp32; kept counts and prompt lengths must match exactly, and the
first greedy tokens do on these tiny checkpoints (their logits are far apart). Qwen3-VL-MoE runs
in fp32 on both sides. One engine per family, as few prompts as cover the family (CI cost); the
dense Qwen3.5 engine also gets a video prompt and an image+video prompt with video pruning on
(``pixelprune_video``; per-slice kept counts too).
"""

from __future__ import annotations

import gc

import pytest

pytest.importorskip("vllm")

from images import sparse_blocks_image  # noqa: E402
from vllm_harness import (  # noqa: E402
    CHAT,
    IMAGE,
    VIDEO,
    VIDEO_FPS,
    build_checkpoint,
    configure_vllm_env,
    hf_generate,
    hf_python,
    pixelprune_copy,
    save_images,
    save_videos,
    screen_video,
    video_metadata,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(hf_python() is None, reason="PIXELPRUNE_HF_PYTHON (transformers >= 5.20 venv) not set"),
]
MAX_NEW = 4
ONE_IMAGE = (CHAT.format(images=IMAGE, text="Describe this image."), [sparse_blocks_image(seed=0)])
TWO_IMAGES = (CHAT.format(images=IMAGE + IMAGE, text="Compare the pictures."),
              [sparse_blocks_image(seed=0), sparse_blocks_image(192, 96, seed=1)])
ONE_VIDEO = (CHAT.format(images=VIDEO, text="Describe this video."), [], "screen")
IMAGE_AND_VIDEO = (CHAT.format(images=IMAGE + VIDEO, text="Is the picture in the video?"), [sparse_blocks_image(seed=2)], "screen")
VIDEOS = {"screen": screen_video(seed=3)}
VIDEO_ON = {"pixelprune_video": True}
# family -> (engine dtype, image prompts, video prompts): the dense hybrid model also gets a
# two-image prompt and the video prompts.
FAMILIES = {
    "qwen3_5": ("bfloat16", [ONE_IMAGE, TWO_IMAGES], [ONE_VIDEO, IMAGE_AND_VIDEO]),
    "qwen3_vl_moe": ("float32", [ONE_IMAGE], []),
    "qwen3_5_moe": ("bfloat16", [ONE_IMAGE], []),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_parity_with_transformers(family, tmp_path_factory):
    from vllm import LLM, SamplingParams

    from pixelprune.vllm_model.multimodal_processor import video_slice_runs

    dtype, cases, video_cases = FAMILIES[family]
    work = tmp_path_factory.mktemp(f"vllm_{family}")
    configure_vllm_env(work)
    checkpoint = pixelprune_copy(build_checkpoint(family, work / "stock"), work / "pixelprune", family)
    paths = save_images(work, [images for _, images in cases] + [images for _, images, _ in video_cases])
    video_paths = save_videos(work, VIDEOS)
    requests = [{"prompt": p, "images": ps} for (p, _), ps in zip(cases, paths)]
    requests += [{"prompt": p, "images": ps, "videos": [{"path": video_paths[v], "fps": VIDEO_FPS}], "settings": VIDEO_ON}
                 for (p, _, v), ps in zip(video_cases, paths[len(cases):])]
    hf = hf_generate(checkpoint, family, requests, MAX_NEW, work)

    llm = LLM(model=str(checkpoint), dtype=dtype, max_model_len=2048, enforce_eager=True, seed=0,
              limit_mm_per_prompt={"image": 2, "video": 1 if video_cases else 0}, max_num_seqs=2)
    try:
        vllm_requests = [{"prompt": p, "multi_modal_data": {"image": imgs}} for p, imgs in cases]
        for p, imgs, v in video_cases:
            data = {"video": (VIDEOS[v], video_metadata(len(VIDEOS[v]))), **({"image": imgs} if imgs else {})}
            vllm_requests.append({"prompt": p, "multi_modal_data": data, "mm_processor_kwargs": VIDEO_ON})
        outs = llm.generate(vllm_requests, SamplingParams(temperature=0, max_tokens=MAX_NEW))
        config = llm.llm_engine.model_config.hf_config
    finally:
        del llm
        gc.collect()
    for ref, out in zip(hf[:len(cases)], outs):
        assert sum(ref["kept"]) < sum(ref["total"])  # the images were pruned
        assert len(out.prompt_token_ids) == ref["prompt_len"]
        assert list(out.outputs[0].token_ids) == ref["tokens"]
    for ref, out in zip(hf[len(cases):], outs[len(cases):], strict=True):
        assert sum(ref["video_kept"][0]) < sum(ref["video_total"][0])  # the video was pruned
        runs = video_slice_runs(out.prompt_token_ids, config.vision_start_token_id, config.vision_end_token_id,
                                config.video_token_id)
        assert runs == ref["video_kept"][0]
        assert len(out.prompt_token_ids) == ref["prompt_len"]
        assert list(out.outputs[0].token_ids) == ref["tokens"]
