"""Qwen3.5, Qwen3-VL-MoE and Qwen3.5-MoE through the plugin: parity with the transformers classes
(the Qwen3-VL engine tests live in test_vllm_engine.py).

vLLM's CPU gated-delta-net kernels require bfloat16, so the Qwen3.5 engines run in bf16 while the
transformers reference runs in fp32; kept counts and prompt lengths must match exactly, and the
first greedy tokens do on these tiny checkpoints (their logits are far apart). Qwen3-VL-MoE runs
in fp32 on both sides. One engine per family, as few prompts as cover the family (CI cost).
"""

from __future__ import annotations

import gc

import pytest

pytest.importorskip("vllm")

from images import sparse_blocks_image  # noqa: E402
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

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(hf_python() is None, reason="PIXELPRUNE_HF_PYTHON (transformers >= 5.20 venv) not set"),
]
MAX_NEW = 4
ONE_IMAGE = (CHAT.format(images=IMAGE, text="Describe this image."), [sparse_blocks_image(seed=0)])
TWO_IMAGES = (CHAT.format(images=IMAGE + IMAGE, text="Compare the pictures."),
              [sparse_blocks_image(seed=0), sparse_blocks_image(192, 96, seed=1)])
# family -> (engine dtype, prompts): the dense hybrid model also gets a two-image prompt.
FAMILIES = {
    "qwen3_5": ("bfloat16", [ONE_IMAGE, TWO_IMAGES]),
    "qwen3_vl_moe": ("float32", [ONE_IMAGE]),
    "qwen3_5_moe": ("bfloat16", [ONE_IMAGE]),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_parity_with_transformers(family, tmp_path_factory):
    from vllm import LLM, SamplingParams

    dtype, cases = FAMILIES[family]
    work = tmp_path_factory.mktemp(f"vllm_{family}")
    configure_vllm_env(work)
    checkpoint = pixelprune_copy(build_checkpoint(family, work / "stock"), work / "pixelprune", family)
    paths = save_images(work, [images for _, images in cases])
    hf = hf_generate(checkpoint, family, [{"prompt": p, "images": ps} for (p, _), ps in zip(cases, paths)],
                     MAX_NEW, work)

    llm = LLM(model=str(checkpoint), dtype=dtype, max_model_len=2048, enforce_eager=True, seed=0,
              limit_mm_per_prompt={"image": 2, "video": 0}, max_num_seqs=2)
    try:
        outs = llm.generate([{"prompt": p, "multi_modal_data": {"image": imgs}} for p, imgs in cases],
                            SamplingParams(temperature=0, max_tokens=MAX_NEW))
    finally:
        del llm
        gc.collect()
    for ref, out in zip(hf, outs):
        assert sum(ref["kept"]) < sum(ref["total"])  # the images were pruned
        assert len(out.prompt_token_ids) == ref["prompt_len"]
        assert list(out.outputs[0].token_ids) == ref["tokens"]
