"""PixelPruneDataCollator: labels, mixed batches, truncation, teacher inputs, errors.

The label oracle is independent of the collator's own span search: each assistant answer is
tokenized on its own and must be exactly the supervised tokens (plus ``<|im_end|>``), and the
supervised positions are checked against the token types the processor reports.
"""

from __future__ import annotations

import pytest
import torch

from images import document_image, noise_image
from tiny_models import build_tiny_checkpoint

pytest.importorskip("transformers")

from pixelprune.processing.processing_pixelprune import PixelPruneQwen3VLProcessor  # noqa: E402
from pixelprune.training import IGNORE_INDEX, PixelPruneDataCollator  # noqa: E402


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return build_tiny_checkpoint("qwen3_vl", tmp_path_factory.mktemp("coll") / "qwen3_vl")


@pytest.fixture(scope="module")
def processor(ckpt):
    return PixelPruneQwen3VLProcessor.from_pretrained(ckpt)


def chat(image, question: str, answer: str) -> dict:
    content = ([{"type": "image", "image": image}] if image is not None else []) + [{"type": "text", "text": question}]
    return {"messages": [{"role": "user", "content": content}, {"role": "assistant", "content": answer}]}


def supervised(tokenizer, row_ids: torch.Tensor, row_labels: torch.Tensor) -> list[int]:
    keep = row_labels != IGNORE_INDEX
    assert torch.equal(row_labels[keep], row_ids[keep]), "labels must be the tokens themselves"
    return row_ids[keep].tolist()


def answer_ids(tokenizer, *answers: str) -> list[int]:
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    return [t for a in answers for t in [*tokenizer.encode(a, add_special_tokens=False), end]]


def test_labels_cover_exactly_the_answers(processor):
    tok = processor.tokenizer
    samples = [
        chat(document_image(160, 224, seed=0), "Read the page please.", "A page of text."),
        chat(None, "Hi?", "Hello there, how can I help?"),
    ]
    batch = PixelPruneDataCollator(processor)(samples)
    assert batch["input_ids"].shape[0] == 2
    for row, s in enumerate(samples):
        assert supervised(tok, batch["input_ids"][row], batch["labels"][row]) == answer_ids(tok, s["messages"][1]["content"])
    # never on image placeholders, vision markers or padding
    vision = torch.isin(batch["input_ids"], torch.tensor(tok.convert_tokens_to_ids(
        ["<|image_pad|>", "<|vision_start|>", "<|vision_end|>"])))
    assert vision.any() and (batch["labels"][vision] == IGNORE_INDEX).all()
    assert (batch["labels"][batch["mm_token_type_ids"] != 0] == IGNORE_INDEX).all()
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all()
    assert (batch["attention_mask"] == 0).any(), "the rows differ in length: one is padded"


def test_multi_turn_supervises_every_assistant_turn(processor):
    tok = processor.tokenizer
    sample = {"messages": [
        {"role": "user", "content": [{"type": "image", "image": document_image(160, 160)}, {"type": "text", "text": "Title?"}]},
        {"role": "assistant", "content": "Annual report"},
        {"role": "user", "content": "And the year?"},
        {"role": "assistant", "content": "2026"},
    ]}
    batch = PixelPruneDataCollator(processor)([sample])
    assert supervised(tok, batch["input_ids"][0], batch["labels"][0]) == answer_ids(tok, "Annual report", "2026")


def test_mixed_batch_rows_equal_single_samples(processor):
    """Images of the batch are concatenated in sample order; each row is the sample alone, right-padded."""
    samples = [
        chat(document_image(160, 224, seed=0), "First?", "One."),
        chat(None, "No image here.", "Fine."),
        chat(noise_image(96, 64), "Third?", "Three."),
    ]
    collator = PixelPruneDataCollator(processor)
    batch = collator(samples)
    singles = [collator([s]) for s in samples]
    for row, single in enumerate(singles):
        n = single["input_ids"].shape[1]
        for key in ("input_ids", "labels", "attention_mask", "mm_token_type_ids"):
            assert torch.equal(batch[key][row, :n], single[key][0])
        assert (batch["attention_mask"][row, n:] == 0).all() and (batch["labels"][row, n:] == IGNORE_INDEX).all()
    for key in ("pixel_values", "image_grid_thw", "image_keep_mask"):
        assert torch.equal(batch[key], torch.cat([s[key] for s in singles if key in s]))
    # the processor on the whole batch agrees
    keep_direct = processor(images=[document_image(160, 224, seed=0), noise_image(96, 64)], return_tensors="pt")
    assert torch.equal(batch["image_keep_mask"], keep_direct["image_keep_mask"])
    assert not bool(batch["image_keep_mask"].all()), "the page is pruned"


def test_images_list_layout_equals_inline_images(processor):
    image = document_image(160, 224, seed=4)
    inline = chat(image, "Q?", "A.")
    trl_layout = {"images": [image], "messages": [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A."}]},
    ]}
    a, b = PixelPruneDataCollator(processor)([inline]), PixelPruneDataCollator(processor)([trl_layout])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_truncated_answer_is_cut_like_the_processor_cuts_it(processor):
    sample = chat(document_image(160, 224, seed=0), "Question?", "A long answer with quite a few words in it.")
    full = PixelPruneDataCollator(processor)([sample])
    n = full["input_ids"].shape[1]
    answer_start = int((full["labels"][0] != IGNORE_INDEX).nonzero()[0])
    cut = answer_start + 3
    truncated = PixelPruneDataCollator(processor, max_length=cut)([sample])
    assert truncated["input_ids"].shape[1] == cut < n
    assert torch.equal(truncated["input_ids"][0], full["input_ids"][0, :cut])  # the tokenizer's right truncation
    assert torch.equal(truncated["labels"][0], full["labels"][0, :cut])  # a prefix of the answer, no <|im_end|>
    # a cut through the image placeholders is refused, as by the stock processor
    first_image = int((full["mm_token_type_ids"][0] == 1).nonzero()[0])
    with pytest.raises(ValueError, match="Mismatch in `image` token count"):
        PixelPruneDataCollator(processor, max_length=first_image + 1)([sample])


def test_answer_truncated_away_contributes_no_labels(processor, ckpt):
    """A sample whose answer is cut entirely is all -100; in a batch the loss is the other samples'."""
    from pixelprune.modeling import PixelPruneQwen3VLForConditionalGeneration

    long_prompt = chat(None, "word " * 60, "Gone.")
    short = chat(None, "Hi?", "Hello.")
    collator = PixelPruneDataCollator(processor, max_length=40)
    batch = collator([long_prompt, short])
    assert (batch["labels"][0] == IGNORE_INDEX).all() and (batch["labels"][1] != IGNORE_INDEX).any()
    model = PixelPruneQwen3VLForConditionalGeneration.from_pretrained(ckpt).eval()
    with torch.no_grad():
        both = model(**batch).loss
        alone = model(**collator([short])).loss
    torch.testing.assert_close(both, alone, atol=1e-6, rtol=0)


def test_teacher_inputs_are_unpruned_with_the_same_answer_tokens(processor):
    tok = processor.tokenizer
    samples = [chat(document_image(160, 224, seed=0), "Q?", "The answer is here."), chat(None, "Hi?", "Yo.")]
    batch = PixelPruneDataCollator(processor, teacher_inputs=True)(samples)
    teacher = batch["teacher_inputs"]
    assert "image_keep_mask" not in teacher
    assert int(batch["image_keep_mask"].sum()) < batch["image_keep_mask"].numel()
    n_image = int(batch["image_keep_mask"].numel())
    assert int((teacher["input_ids"] == tok.convert_tokens_to_ids("<|image_pad|>")).sum()) == n_image
    for row in range(2):
        assert supervised(tok, batch["input_ids"][row], batch["labels"][row]) == supervised(
            tok, teacher["input_ids"][row], teacher["labels"][row])
    # truncated student: the (never truncated) teacher keeps only the surviving answer tokens
    answer_start = int((batch["labels"][0] != IGNORE_INDEX).nonzero()[0])
    cut = PixelPruneDataCollator(processor, teacher_inputs=True, max_length=answer_start + 2)(samples[:1])
    s = supervised(tok, cut["input_ids"][0], cut["labels"][0])
    assert len(s) == 2 and s == supervised(tok, cut["teacher_inputs"]["input_ids"][0], cut["teacher_inputs"]["labels"][0])


def test_invalid_inputs_raise(processor):
    with pytest.raises(ValueError, match="'messages'"):
        PixelPruneDataCollator(processor)([{"text": "x"}])
    with pytest.raises(ValueError, match="more image parts"):
        PixelPruneDataCollator(processor)([{"messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "?"}]},
            {"role": "assistant", "content": "a"}]}])
    with pytest.raises(ValueError, match="max_length=0"):
        PixelPruneDataCollator(processor, max_length=0)
    with pytest.raises(ValueError, match="empty batch"):
        PixelPruneDataCollator(processor)([])
