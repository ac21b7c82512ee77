"""Training oracles: gradients with pruning, padding-free (packed) batches, answer-only loss.

* Gradient oracle (ALGORITHM.md section 5, extended to backward): with pruning, the gradient of every
  parameter equals the STOCK model's on the full sequence with pruned image tokens masked out as
  attention keys in the ViT and the LLM (``masked_stock_forward``); the same tolerance as the forward
  oracle. With nothing prunable, bit-identical to the stock model.
* Packing: a padding-free batch from :class:`PixelPruneDataCollator` gives the same loss and gradients
  as the same samples run one by one (SDPA and eager: the CPU implementations that honour packed
  position ids; flash-attention-2 varlen is the GPU suite's).
* ``answer_logits`` + ``answer_cross_entropy`` equal the stock ``loss`` (value and gradients).
"""

from __future__ import annotations

import pytest
import torch

from images import document_image, noise_image
from model_oracles import (
    ORACLE_ATTENTION,
    masked_stock_forward,
    register_oracle_attention,
    stock_inputs_for,
)
from tiny_models import build_tiny_checkpoint

transformers = pytest.importorskip("transformers")

from pixelprune.modeling import PixelPruneQwen3VLForConditionalGeneration  # noqa: E402
from pixelprune.processing.processing_pixelprune import PixelPruneQwen3VLProcessor  # noqa: E402
from pixelprune.training import (  # noqa: E402
    IGNORE_INDEX,
    PixelPruneDataCollator,
    answer_cross_entropy,
    answer_logits,
)

# The forward oracle's tolerance (test_modeling_qwen3_vl.py): absolute, no relative slack.
ATOL = 1e-5


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return build_tiny_checkpoint("qwen3_vl", tmp_path_factory.mktemp("train_grad") / "qwen3_vl")


@pytest.fixture(scope="module")
def processor(ckpt):
    return PixelPruneQwen3VLProcessor.from_pretrained(ckpt)


def load(ckpt, *, stock: bool = False, attn: str = "sdpa"):
    cls = transformers.Qwen3VLForConditionalGeneration if stock else PixelPruneQwen3VLForConditionalGeneration
    return cls.from_pretrained(ckpt, attn_implementation=attn).train()


def sample(image, question: str, answer: str) -> dict:
    content = ([{"type": "image", "image": image}] if image is not None else []) + [{"type": "text", "text": question}]
    return {"messages": [{"role": "user", "content": content}, {"role": "assistant", "content": answer}]}


def grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_grads_close(got: dict, expected: dict, atol: float, rtol: float = 0.0) -> None:
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=atol, rtol=rtol, msg=lambda m: f"{name}: {m}")


def answer_loss_from_logits(logits: torch.Tensor, input_ids: torch.Tensor, answer: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of positions whose NEXT token is an answer token (``answer``: bool row)."""
    predict = answer[1:]
    return torch.nn.functional.cross_entropy(logits[:-1][predict], input_ids[1:][predict])


# ------------------------------------------------------------------------------------------------
# gradient oracle


def test_pruned_gradients_equal_masked_stock_gradients(ckpt, processor):
    """Every parameter's gradient (ViT, deepstack mergers, LLM, tied head) == the masked stock model's."""
    batch = PixelPruneDataCollator(processor)(
        [sample(document_image(224, 160, seed=3), "What does the page say?", "It lists three items.")]
    )
    keep = batch["image_keep_mask"]
    assert 0 < int(keep.sum()) < keep.numel() * 0.8, "the page must be partly redundant"
    pruned_inputs = {k: v for k, v in batch.items() if k != "labels"}
    full, survives = stock_inputs_for(pruned_inputs, processor.tokenizer)
    answer = batch["labels"][0] != IGNORE_INDEX
    assert answer.any()

    ours = load(ckpt)
    loss = answer_loss_from_logits(ours(**pruned_inputs).logits[0], batch["input_ids"][0], answer)
    loss.backward()

    register_oracle_attention()
    oracle = load(ckpt, stock=True)
    oracle.model.visual.config._attn_implementation = ORACLE_ATTENTION
    logits = masked_stock_forward(oracle, full, survives, keep)
    expected_loss = answer_loss_from_logits(logits, full["input_ids"][0, survives], answer)
    expected_loss.backward()

    torch.testing.assert_close(loss, expected_loss, atol=ATOL, rtol=0)
    got, expected = grads(ours), grads(oracle)
    assert len(expected) == len(list(oracle.parameters())), "every parameter must receive a gradient"
    assert_grads_close(got, expected, atol=ATOL)
    # The oracle is sensitive: without masking the pruned tokens, the ViT gradient differs grossly.
    stock = load(ckpt, stock=True)
    unmasked = stock(**{k: v for k, v in full.items()}, attention_mask=torch.ones_like(full["input_ids"])).logits[0]
    answer_loss_from_logits(unmasked[survives], full["input_ids"][0, survives], answer).backward()
    w = "model.visual.patch_embed.proj.weight"
    assert (grads(stock)[w] - expected[w]).abs().max() > 100 * ATOL


def test_nothing_prunable_gradients_are_bit_identical_to_stock(ckpt, processor):
    batch = PixelPruneDataCollator(processor)([sample(noise_image(96, 64), "Describe.", "Static.")])
    assert bool(batch["image_keep_mask"].all()), "noise keeps every token"
    ours, stock = load(ckpt), load(ckpt, stock=True)
    loss = ours(**batch).loss
    loss.backward()
    stock_batch = {k: v for k, v in batch.items() if k != "image_keep_mask"}
    expected = stock(**stock_batch).loss
    expected.backward()
    assert torch.equal(loss, expected)
    got, ref = grads(ours), grads(stock)
    assert got.keys() == ref.keys()
    assert all(torch.equal(got[n], ref[n]) for n in ref)


# ------------------------------------------------------------------------------------------------
# padding-free batches


def mixed_samples():
    """Two pruned pages of different sizes around a text-only sample."""
    return [
        sample(document_image(224, 160, seed=1), "Title?", "Quarterly report"),
        sample(None, "Say hi.", "Hello there, friend."),
        sample(document_image(160, 224, seed=2), "How many lines?", "Seven."),
    ]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_batch_equals_samples_one_by_one(ckpt, processor, attn):
    samples = mixed_samples()
    packed = PixelPruneDataCollator(processor, padding_free=True)(samples)
    assert packed["input_ids"].shape[0] == 1 and "attention_mask" not in packed
    assert packed["image_keep_mask"].sum() < packed["image_keep_mask"].numel(), "the pages must be pruned"

    model = load(ckpt, attn=attn)
    loss = model(**packed).loss
    loss.backward()
    got = grads(model)

    # One by one: the same mean over every answer token of the batch.
    single = PixelPruneDataCollator(processor)
    encoded = [single([s]) for s in samples]
    n_total = sum(int((e["labels"][0, 1:] != IGNORE_INDEX).sum()) for e in encoded)
    model.zero_grad(set_to_none=True)
    expected_loss = 0.0
    for e in encoded:
        n = int((e["labels"][0, 1:] != IGNORE_INDEX).sum())
        part = model(**e).loss * n / n_total
        part.backward()
        expected_loss += part.detach()
    torch.testing.assert_close(loss.detach(), expected_loss, atol=ATOL, rtol=0)
    assert_grads_close(got, grads(model), atol=ATOL)


def test_packed_positions_are_each_samples_own(ckpt, processor):
    """Row 0 restarts at every sample; rows 1-3 are the model's own ``get_rope_index`` of the sample."""
    samples = mixed_samples()
    packed = PixelPruneDataCollator(processor, padding_free=True)(samples)
    model = load(ckpt).model
    single = PixelPruneDataCollator(processor)
    offset = 0
    for s in samples:
        e = single([s])
        n = e["input_ids"].shape[1]
        positions = packed["position_ids"][:, 0, offset : offset + n]
        assert torch.equal(positions[0], torch.arange(n))
        if "image_grid_thw" in e:
            expected, _ = model.get_rope_index(
                e["input_ids"], e["mm_token_type_ids"], image_grid_thw=e["image_grid_thw"],
                image_keep_mask=e["image_keep_mask"],
            )
        else:
            expected = torch.arange(n).expand(3, 1, n)
        assert torch.equal(positions[1:], expected[:, 0])
        assert packed["labels"][0, offset] == IGNORE_INDEX
        assert torch.equal(packed["labels"][0, offset + 1 : offset + n], e["labels"][0, 1:])
        offset += n
    assert offset == packed["input_ids"].shape[1]


def test_packed_batch_without_use_cache_false_leaks_across_samples(ckpt, processor):
    """Why the collator sends ``use_cache=False``: a training forward that builds a KV cache skips
    transformers' packed-sequence detection, and samples then attend to each other."""
    samples = mixed_samples()
    packed = PixelPruneDataCollator(processor, padding_free=True)(samples)
    padded = PixelPruneDataCollator(processor)(samples)
    model = load(ckpt)
    with torch.no_grad():
        reference = model(**padded).loss
        assert torch.allclose(model(**packed).loss, reference, atol=ATOL, rtol=0)
        leaky = model(**{k: v for k, v in packed.items() if k != "use_cache"}).loss
    assert (leaky - reference).abs() > 1e-3


def test_flash_attention_kwargs_describe_the_packed_rows(processor):
    samples = mixed_samples()
    packed = PixelPruneDataCollator(processor, padding_free=True, return_flash_attn_kwargs=True)(samples)
    lengths = [PixelPruneDataCollator(processor)([s])["input_ids"].shape[1] for s in samples]
    cu = torch.tensor([0, *lengths]).cumsum(0)
    assert torch.equal(packed["cu_seq_lens_q"], cu.int()) and torch.equal(packed["cu_seq_lens_k"], cu.int())
    assert packed["max_length_q"] == packed["max_length_k"] == max(lengths)
    with pytest.raises(ValueError, match="padding_free=True"):
        PixelPruneDataCollator(processor, return_flash_attn_kwargs=True)


# ------------------------------------------------------------------------------------------------
# answer-only loss


def test_answer_only_loss_equals_stock_loss(ckpt, processor):
    """The head projected at answer positions only gives the stock loss and gradients."""
    batch = PixelPruneDataCollator(processor)(mixed_samples())  # padded: rows with different answers
    model = load(ckpt)
    expected = model(**batch).loss
    expected.backward()
    ref = grads(model)
    model.zero_grad(set_to_none=True)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits, targets, _ = answer_logits(model, inputs, batch["labels"])
    assert logits.shape[0] == int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    assert logits.shape[0] < batch["input_ids"].numel() / 3, "only answer positions are projected"
    loss = answer_cross_entropy(logits, targets)
    loss.backward()
    torch.testing.assert_close(loss, expected, atol=ATOL, rtol=0)
    assert_grads_close(grads(model), ref, atol=ATOL)
