"""PixelPrune Qwen3-VL / Qwen3-VL-MoE models: equivalence oracles, errors, training.

Tiny random fp32 checkpoints built offline (tests/tiny_models.py). Oracles (ALGORITHM.md section 5):
nothing pruned => bit-identical to the stock class; pruned => the stock model on the full sequence
with pruned image tokens masked out as attention keys in the ViT and the LLM.
"""

from __future__ import annotations

import pytest
import torch

from images import uint8_noise_image, word_page_image
from model_oracles import ORACLE_ATTENTION, build_inputs, masked_stock_logits, register_oracle_attention, stock_inputs_for
from tiny_models import build_tiny_tokenizer

transformers = pytest.importorskip("transformers")

FAMILIES = {
    "qwen3_vl": ("PixelPruneQwen3VLForConditionalGeneration", "Qwen3VLForConditionalGeneration"),
    "qwen3_vl_moe": ("PixelPruneQwen3VLMoeForConditionalGeneration", "Qwen3VLMoeForConditionalGeneration"),
}


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer("qwen3_vl")


@pytest.fixture(scope="module")
def checkpoints(tiny_checkpoint):
    return {family: tiny_checkpoint(family) for family in FAMILIES}


def load(checkpoints, family: str, *, stock: bool = False, attn: str = "sdpa"):
    from pixelprune import modeling

    ours, stock_name = FAMILIES[family]
    cls = getattr(transformers, stock_name) if stock else getattr(modeling, ours)
    assert cls.__module__.startswith("transformers." if stock else "pixelprune.")
    return cls.from_pretrained(checkpoints[family], attn_implementation=attn).eval()


def two_image_prompt(make_image):
    """Image + text + image, with text before and after (the orderings that move positions)."""
    return [["Compare ", make_image(224, 160, seed=0), " with ", make_image(160, 128, seed=1), " please."]]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_nothing_pruned_is_bit_identical_to_stock(checkpoints, tokenizer, family):
    inputs = build_inputs(tokenizer, two_image_prompt(uint8_noise_image))
    assert bool(inputs["image_keep_mask"].all()), "noise images must keep every token"
    stock_inputs = {k: v for k, v in inputs.items() if k != "image_keep_mask"}
    ours, stock = load(checkpoints, family), load(checkpoints, family, stock=True)

    with torch.no_grad():
        pruned = ours(**inputs).logits
        reference = stock(**stock_inputs).logits
        unmasked = ours(**stock_inputs).logits  # no mask => the stock code path
    assert torch.equal(pruned, reference)
    assert torch.equal(unmasked, reference)

    kwargs = dict(max_new_tokens=8, do_sample=False, output_logits=True, return_dict_in_generate=True)
    generated = ours.generate(**inputs, **kwargs)
    expected = stock.generate(**stock_inputs, **kwargs)
    assert torch.equal(generated.sequences, expected.sequences)
    assert len(generated.logits) == 8
    for step, (a, b) in enumerate(zip(generated.logits, expected.logits)):
        assert torch.equal(a, b), f"logits differ at generated token {step}"


@pytest.mark.parametrize(
    "family,attn", [("qwen3_vl", "sdpa"), ("qwen3_vl", "eager"), ("qwen3_vl_moe", "sdpa")]
)
def test_pruned_equals_stock_with_pruned_tokens_masked(checkpoints, tokenizer, family, attn):
    inputs = build_inputs(tokenizer, two_image_prompt(word_page_image))
    keep = inputs["image_keep_mask"]
    assert 0 < int(keep.sum()) < keep.numel() * 0.8, "the document images must be partly redundant"
    full, survives = stock_inputs_for(inputs, tokenizer)
    assert int(survives.sum()) == inputs["input_ids"].shape[1]

    ours = load(checkpoints, family, attn=attn)
    register_oracle_attention()
    oracle = load(checkpoints, family, stock=True, attn=attn)
    oracle.model.visual.config._attn_implementation = ORACLE_ATTENTION

    with torch.no_grad():
        pruned = ours(**inputs).logits[0]
        naive = load(checkpoints, family, stock=True, attn=attn)(**full).logits[0, survives]
    expected = masked_stock_logits(oracle, full, survives, keep)
    torch.testing.assert_close(pruned, expected, atol=1e-5, rtol=0)
    # The oracle is sensitive: the unmasked stock run differs by orders of magnitude more.
    assert (naive - expected).abs().max() > 1e-2


def test_positions_keep_unpruned_values(checkpoints, tokenizer):
    """Kept tokens keep their unpruned (t, h, w) positions; text positions are unchanged."""
    inputs = build_inputs(tokenizer, two_image_prompt(word_page_image))
    full, survives = stock_inputs_for(inputs, tokenizer)
    model = load(checkpoints, "qwen3_vl").model
    pruned_pos, pruned_delta = model.get_rope_index(
        inputs["input_ids"], inputs["mm_token_type_ids"], image_grid_thw=inputs["image_grid_thw"],
        image_keep_mask=inputs["image_keep_mask"],
    )
    full_pos, full_delta = model.get_rope_index(
        full["input_ids"], full["mm_token_type_ids"], image_grid_thw=full["image_grid_thw"]
    )
    assert torch.equal(pruned_pos[:, 0], full_pos[:, 0, survives])
    # Decoding continues at the same next position: deltas differ by exactly the pruned count.
    n_pruned = int((~survives).sum())
    assert int(pruned_delta) == int(full_delta) + n_pruned


def test_labels_and_backward_reach_vision_tower(checkpoints, tokenizer):
    inputs = build_inputs(tokenizer, two_image_prompt(word_page_image))
    full, _ = stock_inputs_for(inputs, tokenizer)
    labels = inputs["input_ids"].masked_fill(inputs["mm_token_type_ids"].bool(), -100)
    model = load(checkpoints, "qwen3_vl").train()
    out = model(**inputs, labels=labels)
    assert torch.isfinite(out.loss)
    # Labels, logits and input_ids all describe the pruned sequence.
    assert out.logits.shape[1] == labels.shape[1] == inputs["input_ids"].shape[1] < full["input_ids"].shape[1]
    out.loss.backward()
    grad = model.model.visual.patch_embed.proj.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    assert model.model.visual.pos_embed.weight.grad.abs().sum() > 0


def test_stock_model_fed_pixelprune_inputs_fails_loudly(checkpoints, tokenizer):
    """The stock class cannot silently consume pruned inputs: forward hits a placeholder/feature
    count mismatch, and generate rejects the unknown `image_keep_mask` kwarg."""
    inputs = build_inputs(tokenizer, two_image_prompt(word_page_image))
    assert not bool(inputs["image_keep_mask"].all()), "the document images must be partly redundant"
    stock = load(checkpoints, "qwen3_vl", stock=True)
    with pytest.raises(Exception, match="(?i)do not match"):
        stock(**inputs)
    with pytest.raises(ValueError, match="image_keep_mask"):
        stock.generate(**inputs, max_new_tokens=2)
    without_mask = {k: v for k, v in inputs.items() if k != "image_keep_mask"}
    with pytest.raises(Exception, match="(?i)do not match"):
        stock(**without_mask)


def test_mismatched_keep_mask_raises(checkpoints, tokenizer):
    inputs = build_inputs(tokenizer, two_image_prompt(word_page_image))
    model = load(checkpoints, "qwen3_vl")
    keep = inputs["image_keep_mask"]

    with pytest.raises(ValueError, match="entries but `image_grid_thw` describes"):
        model(**{**inputs, "image_keep_mask": keep[:-1]})
    one_more = keep.clone()
    one_more[int((~keep).nonzero()[0])] = True  # keeps one token more than there are placeholders
    with pytest.raises(ValueError, match="placeholder"):
        model(**{**inputs, "image_keep_mask": one_more})
    with pytest.raises(ValueError, match="placeholder"):
        model.generate(**{**inputs, "image_keep_mask": one_more}, max_new_tokens=2)
    with pytest.raises(ValueError, match="must be 1-D"):
        model(**{**inputs, "image_keep_mask": keep[None]})
    with pytest.raises(ValueError, match="without `image_grid_thw`"):
        model.model.get_rope_index(inputs["input_ids"], inputs["mm_token_type_ids"], image_keep_mask=keep)


def test_get_image_features_encodes_kept_tokens_only(checkpoints, tokenizer):
    inputs = build_inputs(tokenizer, two_image_prompt(word_page_image))
    model = load(checkpoints, "qwen3_vl")
    keep = inputs["image_keep_mask"]
    with torch.no_grad():
        out = model.get_image_features(
            inputs["pixel_values"], inputs["image_grid_thw"], image_keep_mask=keep, return_dict=True
        )
    tokens = [int(t * h * w) // 4 for t, h, w in inputs["image_grid_thw"].tolist()]
    kept = [int(m.sum()) for m in torch.split(keep, tokens)]
    assert [e.shape[0] for e in out.pooler_output] == kept
    assert out.last_hidden_state.shape[0] == 4 * sum(kept)  # the ViT saw kept patches only
    for layer in out.deepstack_features:
        assert [e.shape[0] for e in layer] == kept


def test_transformers_range_check():
    from pixelprune.modeling import transformers_compat as compat

    assert compat.is_supported_transformers()  # the test environments are inside the range
    assert compat.is_supported_transformers("5.19.0") and compat.is_supported_transformers("5.24.3")
    assert not compat.is_supported_transformers("5.18.2") and not compat.is_supported_transformers("5.25.0")
    with pytest.raises(ImportError, match=r"transformers>=5\.19,<5\.25"):
        compat.check_transformers_version(version="4.57.0")
