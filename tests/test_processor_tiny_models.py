"""The tiny checkpoints load with the stock auto classes and are laid out like the stock repos."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from images import noise_image
from tiny_models import ARCHITECTURES, FAMILIES, build_tiny_checkpoint

HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None


@pytest.mark.parametrize("family", FAMILIES)
def test_stock_auto_classes_load_and_run(family, tiny_checkpoint):
    from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

    path = tiny_checkpoint(family)
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == family
    assert config["architectures"] == [ARCHITECTURES[family]]
    assert config["text_config"]["head_dim"] >= 32  # vLLM CPU paged attention

    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    image_processor = AutoImageProcessor.from_pretrained(path)
    assert type(model).__name__ == ARCHITECTURES[family]
    assert model.dtype == torch.float32
    for key, token in {
        "image_token_id": "<|image_pad|>",
        "video_token_id": "<|video_pad|>",
        "vision_start_token_id": "<|vision_start|>",
        "vision_end_token_id": "<|vision_end|>",
    }.items():
        assert getattr(model.config, key) == tokenizer.convert_tokens_to_ids(token)

    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe this image."}]}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert "<|vision_start|><|image_pad|><|vision_end|>Describe this image.<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")

    vision = image_processor(images=[noise_image(64, 96)], return_tensors="pt")
    assert vision["image_grid_thw"].tolist() == [[1, 6, 4]]  # native resolution kept
    n_tokens = int(vision["image_grid_thw"].prod()) // 4
    enc = tokenizer([text.replace("<|image_pad|>", "<|image_pad|>" * n_tokens)], return_tensors="pt")
    with torch.no_grad():
        # mm_token_type_ids as the stock processor makes them: 1 marks image placeholders.
        mm_types = (enc["input_ids"] == model.config.image_token_id).long()
        out = model(**enc, **vision, mm_token_type_ids=mm_types)
    assert out.logits.shape == (1, enc["input_ids"].shape[1], model.config.text_config.vocab_size)
    assert torch.isfinite(out.logits).all()
    assert out.logits[0, -1].std() > 1e-3  # random but not degenerate


@pytest.mark.skipif(not HAS_TORCHVISION, reason="the stock Qwen3VLProcessor needs torchvision (video processor)")
@pytest.mark.parametrize("family", FAMILIES)
def test_stock_auto_processor_loads(family, tiny_checkpoint):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_checkpoint(family))
    assert type(processor).__name__ == "Qwen3VLProcessor"
    out = processor(images=[noise_image(64, 64)], text=["<|vision_start|><|image_pad|><|vision_end|>hi"], return_tensors="pt")
    assert int((out["input_ids"] == processor.image_token_id).sum()) == 4


def test_build_is_deterministic(tmp_path):
    from safetensors.torch import load_file

    a = load_file(build_tiny_checkpoint("qwen3_vl", tmp_path / "a", seed=3) / "model.safetensors")
    b = load_file(build_tiny_checkpoint("qwen3_vl", tmp_path / "b", seed=3) / "model.safetensors")
    c = load_file(build_tiny_checkpoint("qwen3_vl", tmp_path / "c", seed=4) / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_unknown_family_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="qwen3_vl_moe"):
        build_tiny_checkpoint("qwen2_vl", tmp_path)
