"""Model-test helpers (no tests here): prompt inputs built the way the PixelPrune processor builds
them, the KV-cache argument names, and the masked-stock-model oracle (ALGORITHM.md section 5).
Synthetic images (and videos: lists of frames) live in ``images.py``.

Inputs are built from the stock image processor, the shared selector and the tiny tokenizer, so
these tests do not depend on the PixelPrune processor class (its own tests cover it). Videos are
patchified here exactly as the stock Qwen3-VL video processor lays them out (:func:`video_patches`;
that processor needs torchvision, which the oldest supported environment lacks).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from tiny_models import IMAGE_MEAN, IMAGE_STD, MERGE_SIZE, PATCH_SIZE, TEMPORAL_PATCH_SIZE, image_processor_dict

import pixelprune

ORACLE_ATTENTION = "pixelprune_test_oracle"


def image_processor():
    """The stock Qwen2-VL image processor with the tiny checkpoints' settings (PIL backend)."""
    from transformers import Qwen2VLImageProcessorPil

    config = image_processor_dict()
    config.pop("image_processor_type")
    config.pop("processor_class")
    return Qwen2VLImageProcessorPil(**config)


def video_patches(frames: Sequence[Image.Image]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pixel_values_videos, video_grid_thw)`` of one clip (a list of same-size RGB frames whose
    sides are multiples of 32), laid out as the stock Qwen3-VL video processor does without
    resizing: the last frame repeated to an even count, values ``(x / 255 - 0.5) / 0.5``, patches
    in merge-window order within each temporal slice."""
    x = torch.from_numpy(np.stack([np.asarray(f.convert("RGB")) for f in frames])).permute(0, 3, 1, 2).float()
    if pad := -x.shape[0] % TEMPORAL_PATCH_SIZE:
        x = torch.cat([x, x[-1:].expand(pad, -1, -1, -1)])
    mean = torch.tensor(IMAGE_MEAN)[:, None, None]
    std = torch.tensor(IMAGE_STD)[:, None, None]
    x = (x / 255 - mean) / std
    frames_, channels, height, width = x.shape
    gt, gh, gw, m, p = frames_ // TEMPORAL_PATCH_SIZE, height // PATCH_SIZE, width // PATCH_SIZE, MERGE_SIZE, PATCH_SIZE
    patches = x.view(gt, TEMPORAL_PATCH_SIZE, channels, gh // m, m, p, gw // m, m, p).permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return patches.reshape(gt * gh * gw, -1), torch.tensor([[gt, gh, gw]])


def video_text(kept_per_slice: Sequence[int]) -> str:
    """A video's prompt text as the stock processor writes it inside the chat template's
    ``<|vision_start|>...<|vision_end|>``: per temporal slice a timestamp and its run of
    ``<|video_pad|>`` (``kept_per_slice[s]`` long)."""
    body = "".join(
        f"<{0.5 * s:.1f} seconds><|vision_start|>{'<|video_pad|>' * int(k)}<|vision_end|>"
        for s, k in enumerate(kept_per_slice)
    )
    return f"<|vision_start|>{body}<|vision_end|>"


def build_inputs(tokenizer, prompts: list[list], *, prune: bool = True, padding_side: str = "left",
                 vision_processor=None, prune_videos: bool | None = None) -> dict:
    """Model inputs for a batch of prompts, each a list of text strings, PIL images and videos
    (lists of PIL frames, see :func:`video_patches`).

    With ``prune=True`` each image expands to its kept count of ``<|image_pad|>`` and the dict holds
    ``image_keep_mask`` (threshold 0, the selector's defaults), as the PixelPrune processor does;
    with ``prune=False`` the inputs are the stock processor's (every token of every image).
    ``prune_videos`` (default: ``prune``) does the same for videos: ``video_keep_mask`` and each
    temporal slice's ``<|video_pad|>`` run at its kept length.
    ``vision_processor`` replaces the default PIL-backend image processor (e.g. a processor's own,
    which is the torchvision backend when torchvision is installed).
    """
    prune_videos = prune if prune_videos is None else prune_videos
    images = [part for prompt in prompts for part in prompt if isinstance(part, Image.Image)]
    videos = [part for prompt in prompts for part in prompt if isinstance(part, list)]
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
    slice_counts: list[list[int]] = []
    if videos:
        clips = [video_patches(v) for v in videos]
        batch["pixel_values_videos"] = torch.cat([pixels for pixels, _ in clips])
        batch["video_grid_thw"] = grid = torch.cat([g for _, g in clips])
        if prune_videos:
            keep = pixelprune.select_video_keep_mask(
                batch["pixel_values_videos"], grid, image_mean=IMAGE_MEAN, image_std=IMAGE_STD
            )
            batch["video_keep_mask"] = keep
            slice_counts = [k.tolist() for k in pixelprune.video_kept_per_slice(keep, grid)]
        else:
            slice_counts = [[h * w // MERGE_SIZE**2] * t for t, h, w in grid.tolist()]
    counts, slices = iter(kept_counts), iter(slice_counts)

    def render(part) -> str:
        if isinstance(part, Image.Image):
            return f"<|vision_start|>{'<|image_pad|>' * next(counts)}<|vision_end|>"
        if isinstance(part, list):
            return video_text(next(slices))
        return part

    texts = [f"<|im_start|>user\n{''.join(map(render, prompt))}<|im_end|>\n<|im_start|>assistant\n" for prompt in prompts]
    encoded = tokenizer(texts, padding=True, padding_side=padding_side, return_tensors="pt")
    batch["input_ids"] = encoded["input_ids"]
    batch["attention_mask"] = encoded["attention_mask"]
    batch["mm_token_type_ids"] = mm_token_type_ids(encoded["input_ids"], tokenizer)
    return batch


def mm_token_type_ids(input_ids: torch.Tensor, tokenizer) -> torch.Tensor:
    """1 at ``<|image_pad|>``, 2 at ``<|video_pad|>``, 0 elsewhere (as the stock processor)."""
    image_token_id = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    video_token_id = tokenizer.convert_tokens_to_ids("<|video_pad|>")
    return ((input_ids == image_token_id) * 1 + (input_ids == video_token_id) * 2).to(torch.int32)


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
    survives pruning (text, a kept image token or a kept video token). Images without
    ``image_keep_mask`` (videos without ``video_keep_mask``) are taken as unpruned."""
    image_token_id = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    video_token_id = tokenizer.convert_tokens_to_ids("<|video_pad|>")
    runs = {}  # placeholder id -> the keep masks of its runs, in prompt order
    if "image_keep_mask" in pruned:
        grid = pruned["image_grid_thw"]
        runs[image_token_id] = iter(torch.split(pruned["image_keep_mask"], [int(t * h * w) // 4 for t, h, w in grid.tolist()]))
    if "video_keep_mask" in pruned:
        grid = pruned["video_grid_thw"]
        # One run per temporal slice (slices are separated by timestamps).
        per_slice = [h * w // 4 for t, h, w in grid.tolist() for _ in range(t)]
        runs[video_token_id] = iter(torch.split(pruned["video_keep_mask"], per_slice))
    ids = pruned["input_ids"][0].tolist()
    full_ids, survives = [], []
    i = 0
    while i < len(ids):
        if ids[i] in runs:
            keep = next(runs[ids[i]])
            full_ids += [ids[i]] * keep.numel()
            survives += keep.tolist()
            i += int(keep.sum())
        else:
            full_ids.append(ids[i])
            survives.append(True)
            i += 1
    full = torch.tensor([full_ids])
    inputs = {"input_ids": full, "mm_token_type_ids": mm_token_type_ids(full, tokenizer)}
    for key in ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw"):
        if pruned.get(key) is not None:
            inputs[key] = pruned[key]
    return inputs, torch.tensor(survives)


@torch.no_grad()
def masked_stock_logits(stock_model, full: dict, survives: torch.Tensor, image_keep_mask: torch.Tensor | None,
                        video_keep_mask: torch.Tensor | None = None, *, llm: str = "mask") -> torch.Tensor:
    """The ALGORITHM.md section 5 oracle: the STOCK model on the full sequence with pruned image
    (and video) tokens masked out as attention keys in the ViT and in the LLM, read at surviving
    positions.

    ``stock_model``'s vision config must use :data:`ORACLE_ATTENTION`. ``llm="shorter"`` replaces
    the LLM half for hybrid models (Qwen3.5: a linear-attention layer has no keys to mask): the
    stock LLM on the surviving tokens only, at their unpruned positions (equivalent for attention
    layers, exact for recurrent ones).
    """
    return masked_stock_forward(stock_model, full, survives, image_keep_mask, video_keep_mask, llm=llm)


def masked_vit(visual, pixel_values: torch.Tensor, grid_thw: torch.Tensor, token_keep: torch.Tensor):
    """The stock vision tower on ALL patches, pruned patches masked out as attention keys, each
    image / video slice attending within itself (as the stock per-frame segments); the output's
    ``pooler_output`` (and deepstack features) split per item at full token counts."""
    merge = visual.spatial_merge_size
    patch_keep = token_keep.repeat_interleave(merge**2)
    frame_sizes = torch.repeat_interleave(grid_thw[:, 1] * grid_thw[:, 2], grid_thw[:, 0])
    segment = torch.repeat_interleave(torch.arange(len(frame_sizes)), frame_sizes)
    allowed = (segment[:, None] == segment[None, :]) & patch_keep[None, :]
    n = patch_keep.numel()
    vision = visual(
        pixel_values,
        grid_thw=grid_thw,
        cu_seqlens=torch.tensor([0, n], dtype=torch.int32),  # one packed segment; `allowed` splits it
        oracle_vit_allowed=allowed,
        return_dict=True,
    )
    tokens = (grid_thw.prod(-1) // merge**2).tolist()
    vision.pooler_output = torch.split(vision.pooler_output, tokens)
    if getattr(vision, "deepstack_features", None) is not None:
        vision.deepstack_features = [torch.split(f, tokens) for f in vision.deepstack_features]
    return vision


def _kept_rows(vision, token_keep: torch.Tensor, tokens: list[int]):
    """``vision`` (split per item at full counts) reduced to the kept tokens' rows."""
    keeps = torch.split(token_keep, tokens)
    vision.pooler_output = [e[k] for e, k in zip(vision.pooler_output, keeps)]
    if getattr(vision, "deepstack_features", None) is not None:
        vision.deepstack_features = [[e[k] for e, k in zip(f, keeps)] for f in vision.deepstack_features]
    return vision


def masked_stock_forward(stock_model, full: dict, survives: torch.Tensor, image_keep_mask: torch.Tensor | None,
                         video_keep_mask: torch.Tensor | None = None, *, llm: str = "mask") -> torch.Tensor:
    """:func:`masked_stock_logits` with autograd (the gradient oracle of the training tests)."""
    if llm not in ("mask", "shorter"):
        raise ValueError(f"llm={llm!r}; expected 'mask' or 'shorter'.")
    model = stock_model.model
    merge = model.visual.spatial_merge_size
    outputs = {}
    for modality, pixels_key, keep in (
        ("image", "pixel_values", image_keep_mask), ("video", "pixel_values_videos", video_keep_mask)
    ):
        if full.get(pixels_key) is None:
            continue
        grid = full[f"{modality}_grid_thw"]
        tokens = (grid.prod(-1) // merge**2).tolist()
        keep = torch.ones(sum(tokens), dtype=torch.bool) if keep is None else keep
        outputs[modality] = masked_vit(model.visual, full[pixels_key], grid, keep)
        if llm == "shorter":
            outputs[modality] = _kept_rows(outputs[modality], keep, tokens)
    grids = dict(image_grid_thw=full.get("image_grid_thw"), video_grid_thw=full.get("video_grid_thw"))
    # LLM: unpruned positions; pruned tokens masked as keys through the 2-D attention mask, or removed.
    position_ids, _ = model.get_rope_index(full["input_ids"], full["mm_token_type_ids"], **grids)
    if llm == "shorter":
        out = stock_model(
            input_ids=full["input_ids"][:, survives],
            position_ids=position_ids[:, :, survives],
            mm_token_type_ids=full["mm_token_type_ids"][:, survives],
            mm_encoder_outputs=outputs,
            **grids,
        )
        return out.logits[0]
    out = stock_model(
        input_ids=full["input_ids"],
        attention_mask=survives[None].long(),
        position_ids=position_ids,
        mm_token_type_ids=full["mm_token_type_ids"],
        mm_encoder_outputs=outputs,
        **grids,
    )
    return out.logits[0, survives]


@torch.no_grad()
def masked_stock_greedy(stock_model, pruned: dict, tokenizer, new_tokens: int, *, llm: str = "mask") -> torch.Tensor:
    """Greedy continuation (``new_tokens`` ids, ``(1, new_tokens)``) of a single pruned prompt by
    the masked oracle, recomputed from scratch at every step (no cache to get wrong)."""
    full, survives = stock_inputs_for(pruned, tokenizer)
    masks = (pruned.get("image_keep_mask"), pruned.get("video_keep_mask"))
    generated = []
    for _ in range(new_tokens):
        logits = masked_stock_logits(stock_model, full, survives, *masks, llm=llm)
        token = int(logits[-1].argmax())
        generated.append(token)
        full = dict(full, input_ids=F.pad(full["input_ids"], (0, 1), value=token),
                    mm_token_type_ids=F.pad(full["mm_token_type_ids"], (0, 1)))
        survives = F.pad(survives, (0, 1), value=True)
    return torch.tensor([generated])
