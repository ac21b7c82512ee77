"""PixelPrune Qwen3-VL generation paths: cached vs recomputed, manual decode loop, batches,
beams, sampling. Tiny random fp32 checkpoints (tests/tiny_models.py), redundant document images."""

from __future__ import annotations

import pytest
import torch

from images import word_page_image
from model_oracles import build_inputs, cache_kwarg, output_cache
from tiny_models import build_tiny_tokenizer

pytest.importorskip("transformers")

NEW_TOKENS = 6
GREEDY = dict(max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False)


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer("qwen3_vl")


@pytest.fixture(scope="module", params=["qwen3_vl", "qwen3_vl_moe"])
def model(request, tiny_checkpoint):
    import pixelprune.modeling

    family = request.param
    path = tiny_checkpoint(family)
    cls = {
        "qwen3_vl": pixelprune.modeling.PixelPruneQwen3VLForConditionalGeneration,
        "qwen3_vl_moe": pixelprune.modeling.PixelPruneQwen3VLMoeForConditionalGeneration,
    }[family]
    return cls.from_pretrained(path).eval()


def prompt_a():
    return ["Read ", word_page_image(224, 160, seed=3), " then ", word_page_image(160, 128, seed=4), " now."]


def prompt_b():
    return [word_page_image(192, 128, seed=5), " What does it say?"]


def assert_pruned(inputs):
    keep = inputs["image_keep_mask"]
    assert 0 < int(keep.sum()) < keep.numel(), "test images must be partly redundant"


def generate(model, inputs, **kwargs):
    return model.generate(**inputs, output_logits=True, return_dict_in_generate=True, **{**GREEDY, **kwargs})


def test_cached_generate_equals_full_recomputation(model, tokenizer):
    """Cached decoding (rope_deltas) == uncached generate == one forward over prompt + answer
    (positions recomputed from scratch by get_rope_index with the mask)."""
    inputs = build_inputs(tokenizer, [prompt_a()])
    assert_pruned(inputs)
    cached = generate(model, inputs)
    uncached = generate(model, inputs, use_cache=False)
    assert torch.equal(cached.sequences, uncached.sequences)
    for a, b in zip(cached.logits, uncached.logits):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)

    prompt_len = inputs["input_ids"].shape[1]
    sequence = cached.sequences
    full = dict(inputs, input_ids=sequence, attention_mask=torch.ones_like(sequence))
    full["mm_token_type_ids"] = torch.nn.functional.pad(inputs["mm_token_type_ids"], (0, NEW_TOKENS))
    with torch.no_grad():
        logits = model(**full).logits[0]
    for step, step_logits in enumerate(cached.logits):
        torch.testing.assert_close(logits[prompt_len - 1 + step], step_logits[0], atol=1e-5, rtol=0)


def test_manual_cached_decode_loop_without_position_ids(model, tokenizer):
    """model(**inputs) prefill, then forward calls with only the new token and the cache (no
    position_ids): positions continue from rope_deltas, as in generate."""
    inputs = build_inputs(tokenizer, [prompt_a()])
    expected = generate(model, inputs)
    cache_name = cache_kwarg(model)
    with torch.no_grad():
        out = model(**inputs, use_cache=True)
        tokens, logits = [], [out.logits[:, -1]]
        for _ in range(NEW_TOKENS - 1):
            token = logits[-1].argmax(-1, keepdim=True)
            tokens.append(token)
            # No attention_mask: with one, the stock (5.24) rope_deltas path builds full-length
            # positions for a one-token input and fails, with or without PixelPrune.
            out = model(input_ids=token, use_cache=True, **{cache_name: output_cache(out)})
            logits.append(out.logits[:, -1])
    tokens.append(logits[-1].argmax(-1, keepdim=True))
    prompt_len = inputs["input_ids"].shape[1]
    assert torch.equal(torch.cat(tokens, dim=1), expected.sequences[:, prompt_len:])
    for a, b in zip(logits, expected.logits):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_left_padded_batch_equals_each_prompt_alone(model, tokenizer):
    """Prompts with different kept counts (and one without images) batched with left padding."""
    prompts = [prompt_a(), ["No image here, just text."], prompt_b()]
    batch = build_inputs(tokenizer, prompts)
    assert_pruned(batch)
    assert bool((batch["attention_mask"] == 0).any()), "the batch must be padded"
    together = generate(model, batch)
    width = batch["input_ids"].shape[1]
    for i, prompt in enumerate(prompts):
        alone = generate(model, build_inputs(tokenizer, [prompt]))
        n = alone.sequences.shape[1] - NEW_TOKENS
        assert torch.equal(together.sequences[i, width:], alone.sequences[0, n:]), f"prompt {i}"
        for a, b in zip(together.logits, alone.logits):
            torch.testing.assert_close(a[i], b[0], atol=1e-4, rtol=0)


def test_beam_search_batch_equals_each_prompt_alone(model, tokenizer):
    """Beam expansion regroups image features by counting placeholders per sample: consistent
    only because placeholders == kept tokens."""
    prompts = [prompt_a(), prompt_b()]
    kwargs = dict(num_beams=3, num_return_sequences=2, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    together = model.generate(**build_inputs(tokenizer, prompts), **kwargs)
    assert together.shape[0] == 4
    width = together.shape[1] - 4
    for i, prompt in enumerate(prompts):
        alone = model.generate(**build_inputs(tokenizer, [prompt]), **kwargs)
        assert torch.equal(together[2 * i : 2 * i + 2, width:], alone[:, -4:]), f"prompt {i}"


def test_sampling_and_num_return_sequences(model, tokenizer):
    inputs = build_inputs(tokenizer, [prompt_b()])
    greedy = generate(model, inputs).sequences
    # top_k=1 sampling is greedy: every returned sequence must equal the single greedy sequence.
    sampled = model.generate(
        **inputs, do_sample=True, top_k=1, num_return_sequences=3, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS
    )
    assert torch.equal(sampled, greedy.expand(3, -1))
    torch.manual_seed(0)
    free = model.generate(
        **inputs, do_sample=True, temperature=1.5, num_return_sequences=2, max_new_tokens=4, min_new_tokens=4
    )
    assert free.shape == (2, inputs["input_ids"].shape[1] + 4)


def test_processor_chat_template_drives_generate(model, tokenizer):
    """The PixelPrune processor's output (apply_chat_template) equals the inputs these tests build
    and drives generate; decoding the answer works."""
    from pixelprune.processing.processing_pixelprune import PixelPruneQwen3VLProcessor

    processor = PixelPruneQwen3VLProcessor.from_pretrained(model.name_or_path)
    images = [word_page_image(224, 160, seed=3), word_page_image(160, 128, seed=4)]
    messages = [{"role": "user", "content": [
        {"type": "text", "text": "Read "}, {"type": "image", "image": images[0]},
        {"type": "text", "text": " then "}, {"type": "image", "image": images[1]},
        {"type": "text", "text": " now."},
    ]}]
    inputs = processor.apply_chat_template(
        messages, tokenize=True, add_generation_prompt=True, return_dict=True, return_tensors="pt"
    )
    expected = build_inputs(tokenizer, [prompt_a()], vision_processor=processor.image_processor)
    for key in ("input_ids", "image_keep_mask", "pixel_values", "image_grid_thw", "mm_token_type_ids"):
        assert torch.equal(inputs[key], expected[key]), key
    generated = model.generate(**inputs, **GREEDY)
    answer = processor.batch_decode(generated[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert len(answer) == 1 and isinstance(answer[0], str)
