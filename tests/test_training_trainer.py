"""Trainer integration: self-distillation, TRL's SFTTrainer, LoRA, gradient checkpointing, save/reload,
and examples/finetune.py end to end on a tiny checkpoint."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from images import document_image, noise_image
from tiny_models import build_tiny_checkpoint

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # transformers.Trainer needs it (hf-lo does not install it)

from pixelprune.modeling import PixelPruneQwen3VLForConditionalGeneration  # noqa: E402
from pixelprune.processing.processing_pixelprune import PixelPruneQwen3VLProcessor  # noqa: E402
from pixelprune.training import (  # noqa: E402
    IGNORE_INDEX,
    PixelPruneDataCollator,
    PixelPruneTrainer,
    distillation_kl,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return build_tiny_checkpoint("qwen3_vl", tmp_path_factory.mktemp("trainer") / "qwen3_vl")


@pytest.fixture(scope="module")
def processor(ckpt):
    return PixelPruneQwen3VLProcessor.from_pretrained(ckpt)


def chat(image, question: str, answer: str) -> dict:
    content = ([{"type": "image", "image": image}] if image is not None else []) + [{"type": "text", "text": question}]
    return {"messages": [{"role": "user", "content": content}, {"role": "assistant", "content": answer}]}


def pages():
    return [chat(document_image(160, 224, seed=i), f"Page {i}?", f"Answer {i}.") for i in range(3)]


def load(ckpt):
    return PixelPruneQwen3VLForConditionalGeneration.from_pretrained(ckpt, attn_implementation="sdpa")


def training_args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, max_steps=1, learning_rate=0.0,
                logging_steps=1, save_strategy="no", report_to=[], remove_unused_columns=False, use_cpu=True)
    return {**base, **kw}


# ------------------------------------------------------------------------------------------------
# distillation


def test_distillation_kl_matches_the_definition():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 11, generator=g), torch.randn(5, 11, generator=g)
    for temp in (1.0, 2.0):
        p_t = (t / temp).softmax(-1)
        by_hand = (p_t * (p_t.log() - (s / temp).log_softmax(-1))).sum() / 5 * temp**2
        torch.testing.assert_close(distillation_kl(s, t, temperature=temp), by_hand)
    assert distillation_kl(t, t) == 0
    torch.testing.assert_close(distillation_kl(s, t, num_items_in_batch=10), distillation_kl(s, t) / 2)
    with pytest.raises(ValueError, match="same answer tokens"):
        distillation_kl(s, t[:4])
    with pytest.raises(ValueError, match="temperature"):
        distillation_kl(s, t, temperature=0)


def trainer_loss(ckpt, processor, samples, tmp_path, **loss_kwargs) -> tuple[float, dict]:
    """Loss of one Trainer step with learning rate 0, and the gradients it produced."""
    model = load(ckpt)
    collator = PixelPruneDataCollator(processor, teacher_inputs=loss_kwargs.get("distillation_weight", 0) > 0)
    trainer = PixelPruneTrainer(
        model=model, args=transformers.TrainingArguments(**training_args(tmp_path)), train_dataset=samples,
        data_collator=collator, **loss_kwargs,
    )
    batch = trainer._prepare_inputs(collator(samples))
    model.train()
    loss = trainer.compute_loss(model, batch)
    loss.backward()
    return loss, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_self_distillation_on_unprunable_images_is_plain_cross_entropy(ckpt, processor, tmp_path):
    """Nothing pruned: teacher and student see the same sequence, so the KL term is exactly zero."""
    samples = [chat(noise_image(96, 64, seed=i), "What?", f"Noise {i}.") for i in range(2)]
    ce, ce_grads = trainer_loss(ckpt, processor, samples, tmp_path)
    mixed, mixed_grads = trainer_loss(ckpt, processor, samples, tmp_path, distillation_weight=0.25)
    torch.testing.assert_close(mixed, 0.75 * ce, atol=1e-6, rtol=0)
    for name, grad in ce_grads.items():
        torch.testing.assert_close(mixed_grads[name], 0.75 * grad, atol=1e-6, rtol=1e-5)


def test_self_distillation_pulls_the_pruned_student_to_the_unpruned_teacher(ckpt, processor, tmp_path):
    """Pruned pages: KL(teacher || student) computed by hand from two plain forwards."""
    samples = pages()
    loss, grads = trainer_loss(ckpt, processor, samples, tmp_path, distillation_weight=1.0, distillation_temperature=2.0)
    batch = PixelPruneDataCollator(processor, teacher_inputs=True)(samples)
    model = load(ckpt).train()
    teacher_batch = dict(batch.pop("teacher_inputs"))
    with torch.no_grad():
        t_logits = model(**{k: v for k, v in teacher_batch.items() if k != "labels"}).logits
    s_logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    s = s_logits[:, :-1][batch["labels"][:, 1:] != IGNORE_INDEX]
    t = t_logits[:, :-1][teacher_batch["labels"][:, 1:] != IGNORE_INDEX]
    expected = F.kl_div((s / 2).log_softmax(-1), (t / 2).log_softmax(-1), log_target=True, reduction="batchmean") * 4
    assert expected > 1e-4, "pruning must change the predictions of a random model"
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)
    expected.backward()
    w = "model.visual.patch_embed.proj.weight"
    torch.testing.assert_close(grads[w], dict(model.named_parameters())[w].grad, atol=1e-5, rtol=1e-4)


def test_distillation_needs_teacher_inputs(ckpt, processor, tmp_path):
    trainer = PixelPruneTrainer(model=load(ckpt), args=transformers.TrainingArguments(**training_args(tmp_path)),
                                train_dataset=pages(), data_collator=PixelPruneDataCollator(processor),
                                distillation_weight=0.5)
    with pytest.raises(ValueError, match="teacher_inputs=True"):
        trainer.compute_loss(trainer.model, PixelPruneDataCollator(processor)(pages()[:1]))
    with pytest.raises(ValueError, match="distillation_weight"):
        PixelPruneTrainer(model=load(ckpt), args=transformers.TrainingArguments(**training_args(tmp_path)),
                          distillation_weight=2.0)


# ------------------------------------------------------------------------------------------------
# Trainer and SFTTrainer with the collator


def logged_first_loss(trainer) -> float:
    trainer.train()
    return next(h["loss"] for h in trainer.state.log_history if "loss" in h)


@pytest.mark.parametrize("padding_free", [False, True])
def test_trl_sft_trainer_reports_the_models_own_loss(ckpt, processor, tmp_path, padding_free):
    """TRL's SFTTrainer (its own fused-head loss) on our batches, learning rate 0: the logged loss is the
    model's stock loss on the same batch."""
    Dataset = pytest.importorskip("datasets").Dataset
    trl = pytest.importorskip("trl")
    SFTConfig, SFTTrainer = trl.SFTConfig, trl.SFTTrainer

    samples = pages() + [chat(None, "Text only?", "Yes.")]
    rows = [{"images": [s["messages"][0]["content"][0]["image"]] if i < 3 else [],
             "messages": [{"role": "user", "content": [*([{"type": "image"}] if i < 3 else []),
                                                       {"type": "text", "text": s["messages"][0]["content"][-1]["text"]}]},
                          {"role": "assistant", "content": [{"type": "text", "text": s["messages"][1]["content"]}]}]}
            for i, s in enumerate(samples)]
    collator = PixelPruneDataCollator(processor, padding_free=padding_free)
    # bf16=False: SFTConfig otherwise defaults to bf16 autocast, also on the CPU
    args = SFTConfig(**training_args(tmp_path), max_length=None, gradient_checkpointing=False, bf16=False,
                     dataset_kwargs={"skip_prepare_dataset": True})
    trainer = SFTTrainer(model=load(ckpt), args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=processor, data_collator=collator)
    with torch.no_grad():
        expected = load(ckpt).train()(**PixelPruneDataCollator(processor)(samples)).loss
    assert logged_first_loss(trainer) == pytest.approx(float(expected), abs=1e-5)


def test_plain_trainer_reports_the_models_own_loss(ckpt, processor, tmp_path):
    trainer = transformers.Trainer(model=load(ckpt), args=transformers.TrainingArguments(**training_args(tmp_path)),
                                   train_dataset=pages(), data_collator=PixelPruneDataCollator(processor))
    with torch.no_grad():
        expected = load(ckpt).train()(**PixelPruneDataCollator(processor)(pages())).loss
    assert logged_first_loss(trainer) == pytest.approx(float(expected), abs=1e-5)


# ------------------------------------------------------------------------------------------------
# gradient checkpointing, LoRA, save / reload


def test_gradient_checkpointing_gives_the_same_gradients(ckpt, processor):
    batch = PixelPruneDataCollator(processor, padding_free=True)(pages())
    results = []
    for checkpointing in (False, True):
        model = load(ckpt).train()
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            assert model.model.language_model.gradient_checkpointing and model.model.visual.gradient_checkpointing
        loss = model(**batch).loss
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in model.named_parameters()}))
    (l0, g0), (l1, g1) = results
    assert torch.equal(l0, l1)
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], atol=1e-6, rtol=1e-5)


def test_lora_on_llm_and_vision_trains_saves_and_reloads_with_settings(ckpt, processor, tmp_path):
    peft = pytest.importorskip("peft")
    LoraConfig, PeftModel, get_peft_model = peft.LoraConfig, peft.PeftModel, peft.get_peft_model
    sys.path.insert(0, str(REPO / "examples"))
    from finetune import LLM_TARGETS, VISION_TARGETS

    model = get_peft_model(load(ckpt), LoraConfig(r=4, lora_alpha=8, target_modules=f"({LLM_TARGETS}|{VISION_TARGETS})",
                                                  init_lora_weights=False))
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    assert any(".visual." in n for n in names) and any(".language_model." in n for n in names)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    model.train()
    batch = PixelPruneDataCollator(processor)(pages())
    model(**batch).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if p.requires_grad)

    model.eval()
    with torch.no_grad():
        expected = model(**batch).logits
    model.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(load(ckpt), tmp_path / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, expected, atol=1e-5, rtol=0)

    # merged: a plain checkpoint for our classes, the processor's PixelPrune settings kept
    processor2 = PixelPruneQwen3VLProcessor.from_pretrained(ckpt, pixelprune_threshold=0.05)
    model.merge_and_unload().save_pretrained(tmp_path / "merged")
    processor2.save_pretrained(tmp_path / "merged")
    merged = PixelPruneQwen3VLForConditionalGeneration.from_pretrained(tmp_path / "merged").eval()
    assert type(merged) is PixelPruneQwen3VLForConditionalGeneration
    with torch.no_grad():
        torch.testing.assert_close(merged(**batch).logits, expected, atol=1e-5, rtol=0)
    assert PixelPruneQwen3VLProcessor.from_pretrained(tmp_path / "merged").pixelprune_settings.threshold == 0.05


# ------------------------------------------------------------------------------------------------
# examples/finetune.py


def write_dataset(folder: Path) -> Path:
    folder.mkdir()
    records = []
    for i in range(4):
        document_image(160, 192, seed=i).save(folder / f"page{i}.png")
        records.append({"image": f"page{i}.png", "question": f"What is on page {i}?", "answer": f"Page {i} text."})
    records.append({"question": "Say hi.", "answer": "Hi."})
    (folder / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    return folder


@pytest.mark.parametrize("extra", [
    ["--packing", "--threshold", "0.02"],
    ["--trainer", "sft", "--lora", "--lora-vision", "--distill", "0.5", "--gradient-checkpointing", "--threshold", "0.02"],
], ids=["trainer-packed", "sft-lora-distill"])
def test_finetune_example_end_to_end(ckpt, tmp_path, extra):
    for package in ("datasets", *(("trl", "peft") if "sft" in extra else ())):
        pytest.importorskip(package)
    sys.path.insert(0, str(REPO / "examples"))
    import finetune

    out = tmp_path / "out"
    argv = ["--model", str(ckpt), "--data", str(write_dataset(tmp_path / "data")), "--output-dir", str(out),
            "--max-steps", "6", "--lr", "1e-3", "--batch-size", "5", *extra]
    assert finetune.main(argv) == 0
    losses = [h["loss"] for h in json.loads((out / "train_log.json").read_text())]
    assert len(losses) == 6 and losses[-1] < losses[0]
    reloaded = PixelPruneQwen3VLForConditionalGeneration.from_pretrained(out)
    processor = PixelPruneQwen3VLProcessor.from_pretrained(out)
    assert processor.pixelprune_settings.threshold == 0.02
    # the saved weights are the trained ones, not the starting checkpoint's
    start = load(ckpt)
    name = "model.language_model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(dict(reloaded.named_parameters())[name], dict(start.named_parameters())[name])


def test_finetune_example_refuses_packing_for_linear_attention(tmp_path_factory, tmp_path):
    pytest.importorskip("datasets")
    sys.path.insert(0, str(REPO / "examples"))
    import finetune

    qwen3_5 = build_tiny_checkpoint("qwen3_5", tmp_path_factory.mktemp("q35") / "qwen3_5")
    with pytest.raises(SystemExit, match="linear-attention"):
        finetune.main(["--model", str(qwen3_5), "--data", str(write_dataset(tmp_path / "d")),
                       "--output-dir", str(tmp_path / "o"), "--packing"])
