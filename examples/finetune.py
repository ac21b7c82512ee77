"""Fine-tune a Qwen3-VL / Qwen3.5 checkpoint with PixelPrune on (image, question, answer) data.

Pruning is on during training (the processor's settings, ``--threshold`` to change them): the model
learns on the short, pruned sequences it will see at inference, and each step costs what the kept
tokens cost. Optional: LoRA adapters (``--lora``, on the language model, ``--lora-vision`` adds the
vision tower), self-distillation towards the unpruned model (``--distill 0.5``), padding-free
batches (``--packing``, Qwen3-VL), gradient checkpointing, TRL's ``SFTTrainer`` (``--trainer sft``).

Data: a JSONL file, or a folder holding ``metadata.jsonl``; one record per line::

    {"image": "pages/001.png", "question": "What is the invoice total?", "answer": "$1,204.50"}

(``image`` relative to the file's folder, or absolute; ``file_name`` also works; omit it for a
text-only sample). The result in ``--output-dir`` (LoRA merged into the weights) loads with the
PixelPrune classes and keeps the processor's PixelPrune settings::

    python examples/finetune.py --model Qwen/Qwen3-VL-2B-Instruct --data train.jsonl --output-dir out \\
        --lora --distill 0.5 --max-steps 1000 --batch-size 4 --gradient-checkpointing
    pixelprune export out out-hub    # a Hub repo (remote code) from the fine-tuned folder
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

logger = logging.getLogger("pixelprune.examples.finetune")

FAMILIES = {
    # model_type: (model class, processor class, has linear-attention layers)
    "qwen3_vl": ("PixelPruneQwen3VLForConditionalGeneration", "PixelPruneQwen3VLProcessor", False),
    "qwen3_vl_moe": ("PixelPruneQwen3VLMoeForConditionalGeneration", "PixelPruneQwen3VLProcessor", False),
    "qwen3_5": ("PixelPruneQwen3_5ForConditionalGeneration", "PixelPruneQwen3_5Processor", True),
    "qwen3_5_moe": ("PixelPruneQwen3_5MoeForConditionalGeneration", "PixelPruneQwen3_5Processor", True),
}
# LoRA targets: the LLM's attention and MLP projections; the ViT's fused qkv, output and MLP.
LLM_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
VISION_TARGETS = r".*visual\.blocks\.\d+\.(attn\.qkv|attn\.proj|mlp\.linear_fc1|mlp\.linear_fc2)"


def load_records(data: Path) -> list[dict]:
    """The samples of a JSONL file or a folder's ``metadata.jsonl``, in TRL's chat layout."""
    path = data / "metadata.jsonl" if data.is_dir() else data
    if not path.is_file():
        raise SystemExit(f"--data {data}: expected a .jsonl file or a folder holding metadata.jsonl")
    samples = []
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        record = json.loads(line)
        missing = [k for k in ("question", "answer") if k not in record]
        if missing:
            raise SystemExit(f"{path}:{line_no}: missing {missing} (need question, answer and optionally image)")
        image = record.get("image", record.get("file_name"))
        images = [] if image is None else [str(Path(image) if Path(image).is_absolute() else path.parent / image)]
        content = [{"type": "image"}] * len(images) + [{"type": "text", "text": record["question"]}]
        samples.append({
            "images": images,
            "messages": [
                {"role": "user", "content": content},
                {"role": "assistant", "content": [{"type": "text", "text": record["answer"]}]},
            ],
        })
    if not samples:
        raise SystemExit(f"{path}: no samples")
    return samples


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="checkpoint folder or Hub id (stock or PixelPrune export)")
    ap.add_argument("--data", required=True, type=Path, help="JSONL file or folder with metadata.jsonl")
    ap.add_argument("--output-dir", required=True, type=Path)
    ap.add_argument("--trainer", choices=["trainer", "sft"], default="trainer",
                    help="transformers.Trainer (default) or TRL's SFTTrainer")
    ap.add_argument("--threshold", type=float, default=None, help="PixelPrune threshold (default: the processor's)")
    ap.add_argument("--lora", action="store_true", help="train LoRA adapters on the language model (merged at the end)")
    ap.add_argument("--lora-vision", action="store_true", help="with --lora: adapters on the vision tower too")
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--distill", type=float, default=0.0, metavar="W",
                    help="self-distillation weight: loss = (1-W) CE + W KL(unpruned || pruned) on answer tokens")
    ap.add_argument("--temperature", type=float, default=1.0, help="distillation temperature")
    ap.add_argument("--packing", action="store_true", help="padding-free batches (one row per batch)")
    ap.add_argument("--max-length", type=int, default=None, help="truncate samples (after pruning)")
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--grad-accum", type=int, default=1)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--max-steps", type=int, default=-1)
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--logging-steps", type=int, default=1)
    args = ap.parse_args(argv)
    if not 0.0 <= args.distill <= 1.0:
        ap.error(f"--distill {args.distill}: expected a weight in [0, 1]")
    if args.lora_vision and not args.lora:
        ap.error("--lora-vision needs --lora")
    return args


def build(args: argparse.Namespace):
    """(model, processor, collator, trainer class, trainer kwargs)."""
    import transformers

    import pixelprune
    from pixelprune.training import PixelPruneDataCollator, PixelPruneTrainerMixin

    config = transformers.AutoConfig.from_pretrained(args.model)
    if config.model_type not in FAMILIES:
        raise SystemExit(f"--model {args.model}: model_type {config.model_type!r}; expected one of {sorted(FAMILIES)}")
    model_name, processor_name, hybrid = FAMILIES[config.model_type]
    if args.packing and hybrid:
        # transformers' CPU (torch) gated delta-net ignores sequence boundaries: the recurrent state
        # would flow from one packed sample into the next.
        raise SystemExit(f"--packing: {config.model_type} has linear-attention layers, whose transformers "
                         "implementation does not reset at packed-sample boundaries; use padded batches.")
    processor_kwargs = {} if args.threshold is None else {"pixelprune_threshold": args.threshold}
    processor = getattr(pixelprune, processor_name).from_pretrained(args.model, **processor_kwargs)
    model = getattr(pixelprune, model_name).from_pretrained(
        args.model, dtype="bfloat16" if args.bf16 else "float32", attn_implementation="sdpa"
    )
    if args.lora:
        from peft import LoraConfig, get_peft_model

        targets = f"({LLM_TARGETS}|{VISION_TARGETS})" if args.lora_vision else LLM_TARGETS
        model = get_peft_model(model, LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, target_modules=targets))
        model.print_trainable_parameters()
    collator = PixelPruneDataCollator(
        processor, max_length=args.max_length, padding_free=args.packing, teacher_inputs=args.distill > 0
    )
    common = dict(
        output_dir=str(args.output_dir), per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=args.grad_accum, learning_rate=args.lr, num_train_epochs=args.epochs,
        max_steps=args.max_steps, logging_steps=args.logging_steps, save_strategy="no", report_to=[],
        remove_unused_columns=False, gradient_checkpointing=args.gradient_checkpointing, bf16=args.bf16,
        seed=args.seed, dataloader_num_workers=0,
    )
    if args.gradient_checkpointing:
        common["gradient_checkpointing_kwargs"] = {"use_reentrant": False}
    loss = dict(distillation_weight=args.distill, distillation_temperature=args.temperature)
    if args.trainer == "sft":
        from trl import SFTConfig, SFTTrainer

        train_args = SFTConfig(**common, max_length=None, dataset_kwargs={"skip_prepare_dataset": True})
        if args.distill > 0:
            trainer_cls = type("PixelPruneSFTTrainer", (PixelPruneTrainerMixin, SFTTrainer), {})
        else:
            trainer_cls, loss = SFTTrainer, {}  # TRL's own loss on our batches
        extra = dict(processing_class=processor)
    else:
        from pixelprune.training import PixelPruneTrainer

        train_args, trainer_cls, extra = transformers.TrainingArguments(**common), PixelPruneTrainer, {}
    return model, processor, collator, trainer_cls, dict(args=train_args, data_collator=collator, **loss, **extra)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import datasets

    samples = load_records(args.data)
    model, processor, _, trainer_cls, kwargs = build(args)
    trainer = trainer_cls(model=model, train_dataset=datasets.Dataset.from_list(samples), **kwargs)
    result = trainer.train()
    model = trainer.model
    if args.lora:
        model = model.merge_and_unload()
    model.save_pretrained(args.output_dir)
    processor.save_pretrained(args.output_dir)
    history = [h for h in trainer.state.log_history if "loss" in h]
    (args.output_dir / "train_log.json").write_text(json.dumps(history, indent=1))
    logger.info("trained %d steps, final loss %.4f; saved to %s", result.global_step, history[-1]["loss"],
                args.output_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
