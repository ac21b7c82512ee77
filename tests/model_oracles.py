"""Model-test helpers (no tests here): prompt inputs built the way the PixelPrune processor builds
them, the KV-cache argument names, and the masked-stock-model oracle (ALGORITHM.md section 5).
Synthetic images live in ``images.py``.

Inputs are built from the stock image processor, the shared selector and the tiny tokenizer, so
these tests do not depend on the PixelPrune processor class (its own tests cover it).
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from PIL import Image

from tiny_models import IMAGE_MEAN, IMAGE_STD, image_processor_dict

import pixelprune

ORACLE_ATTENTION = "pixelprune_test_oracle"


def image_processor():
    """The stock Qwen2-VL image processor with the tiny checkpoints' settings (PIL backend)."""
    from transformers import Qwen2VLImageProcessorPil

    config = image_processor_dict()
    config.pop("image_processor_type")
    config.pop("processor_class")
    return Qwen2VLImageProcessorPil(**config)


def build_inputs(tokenizer, prompts: list[list], *, prune: bool = True, padding_side: str = "left",
                 vision_processor=None) -> dict:
    """Model inputs for a batch of prompts, each a list of text strings and PIL images.

    With ``prune=True`` each image expands to its kept count of ``<|image_pad|>`` and the dict holds
    ``image_keep_mask`` (threshold 0, the selector's defaults), as the PixelPrune processor does;
    with ``prune=False`` the inputs are the stock processor's (every token of every image).
    ``vision_processor`` replaces the default PIL-backend image processor (e.g. a processor's own,
    which is the torchvision backend when torchvision is installed).
    """
    images = [part for prompt in prompts for part in prompt if isinstance(part, Image.Image)]
    batch: dict = {}
    kept_counts: list[int] = []
    if images:
        vision = (vision_processor or image_processor())(images=images, return_tensors="pt")
        batch["pixel_values"], batch["image_grid_thw"] = vision["pixel_values"], vision["image_grid_thw"]
        tokens = [int(t * h * w) // 4 for t, h, w in batch["image_grid_thw"].tolist()]
        if prune:
            keep = pixelprune.select_keep_mask(
                batch["pixel_values"], batch["image_grid_thw"], image_mean=IMAGE_MEAN, image_std=IMAGE_STD
            )
            batch["image_keep_mask"] = keep
            kept_counts = [int(m.sum()) for m in torch.split(keep, tokens)]
        else:
            kept_counts = tokens
    counts = iter(kept_counts)
    texts = []
    for prompt in prompts:
        body = "".join(
            f"<|vision_start|>{'<|image_pad|>' * next(counts)}<|vision_end|>" if isinstance(part, Image.Image) else part
            for part in prompt
        )
        texts.append(f"<|im_start|>user\n{body}<|im_end|>\n<|im_start|>assistant\n")
    encoded = tokenizer(texts, padding=True, padding_side=padding_side, return_tensors="pt")
    image_token_id = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    batch["input_ids"] = encoded["input_ids"]
    batch["attention_mask"] = encoded["attention_mask"]
    batch["mm_token_type_ids"] = (encoded["input_ids"] == image_token_id).to(torch.int32)
    return batch


def cache_kwarg(model) -> str:
    """The name of the KV-cache argument of ``model.forward`` (``cache`` since transformers 5.24)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def output_cache(output):
    """The KV cache of a model output, under either name."""
    return output["cache"] if "cache" in output else output["past_key_values"]


def _oracle_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """SDPA where the ViT additionally masks keys by ``oracle_vit_allowed`` (a (N, N) bool matrix).

    Registered with transformers' ``AttentionInterface`` (no patching); used only for the vision
    tower of the oracle model.
    """
    allowed = kwargs.get("oracle_vit_allowed")
    if allowed is None:
        raise RuntimeError("the oracle attention needs `oracle_vit_allowed`")
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=allowed[None, None], scale=scaling)
    return out.transpose(1, 2).contiguous(), None


def register_oracle_attention() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(ORACLE_ATTENTION, _oracle_attention)


def stock_inputs_for(pruned: dict, tokenizer) -> tuple[dict, torch.Tensor]:
    """The unpruned inputs of the same prompt (batch of one) and, per position, whether the token
    survives pruning (text, or a kept image token)."""
    image_token_id = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    ids = pruned["input_ids"][0]
    grid = pruned["image_grid_thw"]
    keep_parts = torch.split(pruned["image_keep_mask"], [int(t * h * w) // 4 for t, h, w in grid.tolist()])
    full_ids, survives = [], []
    parts = iter(keep_parts)
    i = 0
    while i < len(ids):
        if ids[i] == image_token_id:
            keep = next(parts)
            n_kept = int(keep.sum())
            full_ids += [image_token_id] * keep.numel()
            survives += keep.tolist()
            i += n_kept
        else:
            full_ids.append(int(ids[i]))
            survives.append(True)
            i += 1
    full = torch.tensor([full_ids])
    return (
        {
            "input_ids": full,
            "mm_token_type_ids": (full == image_token_id).to(torch.int32),
            "pixel_values": pruned["pixel_values"],
            "image_grid_thw": grid,
        },
        torch.tensor(survives),
    )


@torch.no_grad()
def masked_stock_logits(stock_model, full: dict, survives: torch.Tensor, image_keep_mask: torch.Tensor) -> torch.Tensor:
    """The ALGORITHM.md section 5 oracle: the STOCK model on the full sequence with pruned image
    tokens masked out as attention keys in the ViT and in the LLM, read at surviving positions.

    ``stock_model``'s vision config must use :data:`ORACLE_ATTENTION`.
    """
    return masked_stock_forward(stock_model, full, survives, image_keep_mask)


def masked_stock_forward(stock_model, full: dict, survives: torch.Tensor, image_keep_mask: torch.Tensor) -> torch.Tensor:
    """:func:`masked_stock_logits` with autograd (the gradient oracle of the training tests)."""
    model = stock_model.model
    grid = full["image_grid_thw"]
    merge = model.visual.spatial_merge_size
    patch_keep = image_keep_mask.repeat_interleave(merge**2)
    patches_per_image = [int(t * h * w) for t, h, w in grid.tolist()]
    image_of_patch = torch.repeat_interleave(torch.arange(len(patches_per_image)), torch.tensor(patches_per_image))
    # ViT: one packed segment; each patch attends to the kept patches of its own image only.
    allowed = (image_of_patch[:, None] == image_of_patch[None, :]) & patch_keep[None, :]
    n = patch_keep.numel()
    vision = model.visual(
        full["pixel_values"],
        grid_thw=grid,
        cu_seqlens=torch.tensor([0, n], dtype=torch.int32),
        oracle_vit_allowed=allowed,
        return_dict=True,
    )
    tokens = [p // merge**2 for p in patches_per_image]
    vision.pooler_output = torch.split(vision.pooler_output, tokens)
    if getattr(vision, "deepstack_features", None) is not None:
        vision.deepstack_features = [torch.split(f, tokens) for f in vision.deepstack_features]
    # LLM: unpruned positions; pruned image tokens masked as keys through the 2-D attention mask.
    position_ids, _ = model.get_rope_index(full["input_ids"], full["mm_token_type_ids"], image_grid_thw=grid)
    out = stock_model(
        input_ids=full["input_ids"],
        attention_mask=survives[None].long(),
        position_ids=position_ids,
        mm_token_type_ids=full["mm_token_type_ids"],
        image_grid_thw=grid,
        mm_encoder_outputs={"image": vision},
    )
    return out.logits[0, survives]
