"""The processors' output drives the PixelPrune model classes of every family (contract check).

The deep model oracles live in the modeling tests; here: what the processor emits is accepted,
a redundant image shortens the prompt by exactly the pruned count, and a non-redundant image
gives the stock processor + stock model's logits and generation.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForImageTextToText

from images import document_image, noise_image
from pixelprune.processing.processing_pixelprune import KEEP_MASK_KEY, PixelPruneQwen3_5Processor, PixelPruneQwen3VLProcessor
from tiny_models import FAMILIES

MODEL_CLASSES = {
    "qwen3_vl": "PixelPruneQwen3VLForConditionalGeneration",
    "qwen3_vl_moe": "PixelPruneQwen3VLMoeForConditionalGeneration",
    "qwen3_5": "PixelPruneQwen3_5ForConditionalGeneration",
    "qwen3_5_moe": "PixelPruneQwen3_5MoeForConditionalGeneration",
}


def load(family, path):
    import pixelprune.modeling as modeling

    processor_cls = PixelPruneQwen3_5Processor if family.startswith("qwen3_5") else PixelPruneQwen3VLProcessor
    model = getattr(modeling, MODEL_CLASSES[family]).from_pretrained(path).eval()
    return processor_cls.from_pretrained(path), model


def chat(image):
    return [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "Read."}]}]


@pytest.mark.parametrize("family", FAMILIES)
def test_processor_output_drives_the_model(family, tiny_checkpoint):
    path = tiny_checkpoint(family)
    processor, model = load(family, path)
    stock_model = AutoModelForImageTextToText.from_pretrained(path).eval()
    kwargs = dict(add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt")

    # redundant page: shorter prompt by exactly the pruned tokens, and generate runs on it
    page = chat(document_image(160, 224))
    pruned = processor.apply_chat_template(page, **kwargs)
    full = processor.apply_chat_template(page, pixelprune_enabled=False, **kwargs)
    mask = pruned[KEEP_MASK_KEY]
    assert 0 < int(mask.sum()) < mask.numel()
    assert pruned["input_ids"].shape[1] == full["input_ids"].shape[1] - int((~mask).sum())
    with torch.no_grad():
        generated = model.generate(**pruned, max_new_tokens=2)
    assert generated.shape == (1, pruned["input_ids"].shape[1] + 2)

    # nothing redundant: identical to the stock processor + stock model
    noise = chat(noise_image(96, 64))
    ours = processor.apply_chat_template(noise, **kwargs)
    stock = processor.apply_chat_template(noise, pixelprune_enabled=False, **kwargs)
    assert ours[KEEP_MASK_KEY].all()
    with torch.no_grad():
        logits = model(**ours).logits
        stock_logits = stock_model(**stock).logits
        assert torch.equal(logits, stock_logits)
        assert torch.equal(model.generate(**ours, max_new_tokens=2), stock_model.generate(**stock, max_new_tokens=2))
