"""Qwen3.5 (hybrid linear/full attention) through the plugin: parity with the transformers classes.

vLLM's CPU gated-delta-net kernels require bfloat16, so the engine runs in bf16 while the
transformers reference runs in fp32; kept counts and prompt lengths must match exactly, and the
first greedy tokens did on this tiny checkpoint (the logits are far apart).
"""

from __future__ import annotations

import gc

import pytest

pytest.importorskip("vllm")

from vllm_testing import (  # noqa: E402
    CHAT,
    IMAGE,
    build_checkpoint,
    configure_vllm_env,
    hf_generate,
    hf_python,
    pixelprune_copy,
    redundant_image,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(hf_python() is None, reason="PIXELPRUNE_HF_PYTHON (transformers >= 5.20 venv) not set"),
]
FAMILY = "qwen3_5"
MAX_NEW = 4


def test_qwen3_5_parity_with_transformers(tmp_path_factory):
    from vllm import LLM, SamplingParams

    work = tmp_path_factory.mktemp("vllm_qwen3_5")
    configure_vllm_env(work)
    checkpoint = pixelprune_copy(build_checkpoint(FAMILY, work / "stock"), work / "pixelprune", FAMILY)
    prompts = [CHAT.format(images=IMAGE, text="Describe this image."),
               CHAT.format(images=IMAGE + IMAGE, text="Compare the pictures.")]
    imgs = [[redundant_image(seed=0)], [redundant_image(seed=0), redundant_image(192, 96, seed=1)]]
    paths = []
    for i, group in enumerate(imgs):
        paths.append([str(work / f"{i}_{j}.png") for j in range(len(group))])
        for img, path in zip(group, paths[-1]):
            img.save(path)
    hf = hf_generate(checkpoint, FAMILY, [{"prompt": p, "images": ps} for p, ps in zip(prompts, paths)], MAX_NEW, work)

    llm = LLM(model=str(checkpoint), dtype="bfloat16", max_model_len=2048, enforce_eager=True, seed=0,
              limit_mm_per_prompt={"image": 2, "video": 0}, max_num_seqs=2)
    try:
        outs = llm.generate([{"prompt": p, "multi_modal_data": {"image": g}} for p, g in zip(prompts, imgs)],
                            SamplingParams(temperature=0, max_tokens=MAX_NEW))
    finally:
        del llm
        gc.collect()
    for ref, out in zip(hf, outs):
        assert sum(ref["kept"]) < sum(ref["total"])
        assert len(out.prompt_token_ids) == ref["prompt_len"]
        assert list(out.outputs[0].token_ids) == ref["tokens"]
