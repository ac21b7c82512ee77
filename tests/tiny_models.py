"""Offline builders of tiny, randomly initialised Qwen3-VL / Qwen3.5 checkpoints for the tests.

No weights can be downloaded here, so every test builds its own checkpoint folder laid out like
the stock Hub repos: ``config.json`` (stock ``model_type`` and ``architectures``, fp32),
``model.safetensors``, ``generation_config.json``, a byte-level BPE tokenizer trained offline and
saved as the stock tokenizer class with the Qwen special tokens, ``chat_template.jinja`` (the
Qwen3-VL chat template: images render as ``<|vision_start|><|image_pad|><|vision_end|>``),
``preprocessor_config.json``, ``video_preprocessor_config.json`` and ``processor_config.json``.

The folders load with the stock ``AutoModelForImageTextToText`` / ``AutoProcessor`` (the latter
needs torchvision for the video processor, as with real checkpoints) and with vLLM: LLM head dim
32 (vLLM CPU paged attention needs >= 32), Qwen3.5 linear-attention key/value head dim 128.

Usage::

    from tiny_models import FAMILIES, build_tiny_checkpoint
    path = build_tiny_checkpoint("qwen3_vl", tmp_path / "ckpt")
    # or, from a test, the session-cached read-only copy (fixture in tests/conftest.py):
    # `def test_x(tiny_checkpoint): path = tiny_checkpoint("qwen3_5")`
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FAMILIES: tuple[str, ...] = ("qwen3_vl", "qwen3_vl_moe", "qwen3_5", "qwen3_5_moe")

# Stock architecture names written into config.json (the stock classes load them).
ARCHITECTURES: dict[str, str] = {
    "qwen3_vl": "Qwen3VLForConditionalGeneration",
    "qwen3_vl_moe": "Qwen3VLMoeForConditionalGeneration",
    "qwen3_5": "Qwen3_5ForConditionalGeneration",
    "qwen3_5_moe": "Qwen3_5MoeForConditionalGeneration",
}

# The Qwen special tokens in the stock order (ids follow the trained byte-level vocabulary).
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
# Added (non-special) tokens the Qwen3 chat templates emit.
ADDED_TOKENS: tuple[str, ...] = (
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
)

BPE_VOCAB_SIZE = 384  # 256 byte symbols + merges; the specials come right after
VOCAB_SIZE = 448  # config vocab (padded past the tokenizer's, as real checkpoints are)

# Stock image/video processor geometry (Qwen3-VL and Qwen3.5 share it): 16 px patches, 2x2 merge,
# 2 temporal frames, mean = std = 0.5. The minimum pixel count is lowered from the stock 65536 so
# that small test images (>= 64x64) keep their native resolution instead of being upscaled.
PATCH_SIZE = 16
MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2
IMAGE_MEAN = [0.5, 0.5, 0.5]
IMAGE_STD = [0.5, 0.5, 0.5]
IMAGE_MIN_PIXELS = 64 * 64
IMAGE_MAX_PIXELS = 16777216  # stock
VIDEO_MIN_PIXELS = 4096  # stock
VIDEO_MAX_PIXELS = 25165824  # stock

# The Qwen3-VL instruct chat template (tools omitted), with the stock image/video rendering.
CHAT_TEMPLATE = (
    "{%- set image_count = namespace(value=0) -%}"
    "{%- set video_count = namespace(value=0) -%}"
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}"
    "{{- message['content'] -}}"
    "{%- else -%}"
    "{%- for content in message['content'] -%}"
    "{%- if content['type'] == 'image' or 'image' in content or 'image_url' in content -%}"
    "{%- set image_count.value = image_count.value + 1 -%}"
    "{%- if add_vision_id -%}{{- 'Picture ' ~ image_count.value ~ ': ' -}}{%- endif -%}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif content['type'] == 'video' or 'video' in content -%}"
    "{%- set video_count.value = video_count.value + 1 -%}"
    "{%- if add_vision_id -%}{{- 'Video ' ~ video_count.value ~ ': ' -}}{%- endif -%}"
    "{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif 'text' in content -%}"
    "{{- content['text'] -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

_CORPUS = (
    "The quick brown fox jumps over the lazy dog. Describe this image. What is written in the "
    "document? Read the table and answer the question. The screenshot shows a button, a menu and "
    "a text field. Invoice number 12345, total 678.90 EUR, date 2025-01-31. "
    "user assistant system You are a helpful assistant. Picture Video seconds "
    "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:!?()[]{}<>-_=+*/\\|'\"\n"
)


def _train_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Train a byte-level BPE (GPT-2 alphabet, like Qwen's) on a tiny fixed corpus, offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_CORPUS] * 8, trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return dict(model["vocab"]), merges


def build_tiny_tokenizer(family: str = "qwen3_vl"):
    """The stock tokenizer class for ``family`` (``Qwen2Tokenizer``; ``Qwen3_5Tokenizer`` for
    Qwen3.5) over a freshly trained tiny vocabulary, with the Qwen special/added tokens."""
    from tokenizers import AddedToken

    _check_family(family)
    if family.startswith("qwen3_5"):
        from transformers.models.qwen3_5.tokenization_qwen3_5 import Qwen3_5Tokenizer as cls
    else:
        from transformers import Qwen2Tokenizer as cls

    vocab, merges = _train_bpe()
    # Specials and added tokens get the ids right after the BPE vocabulary, in the stock order.
    for token in SPECIAL_TOKENS + ADDED_TOKENS:
        vocab[token] = len(vocab)
    tokenizer = cls(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=[t for t in SPECIAL_TOKENS if t not in ("<|endoftext|>", "<|im_end|>")],
        model_max_length=262144,
    )
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in ADDED_TOKENS])
    tokenizer.chat_template = CHAT_TEMPLATE
    ids = [tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS + ADDED_TOKENS]
    if max(ids) >= VOCAB_SIZE or len(set(ids)) != len(ids):
        raise RuntimeError(f"tiny tokenizer special ids out of range or clashing: {ids}")
    return tokenizer


def special_token_ids(tokenizer) -> dict[str, int]:
    """Map every Qwen special/added token string to its id in ``tokenizer``."""
    return {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS + ADDED_TOKENS}


def build_tiny_config(family: str, tokenizer, *, initializer_range: float = 0.1):
    """A tiny stock config for ``family`` whose special token ids match ``tokenizer``.

    LLM: hidden 64, 2 layers, 2 query heads / 1 KV head of dim 32. Vision: depth 2, hidden 64.
    Qwen3-VL: deepstack from both ViT layers. Qwen3.5: one linear-attention layer then one
    full-attention layer, linear key/value head dim 128 (vLLM's kernels need it).
    ``initializer_range`` is larger than the stock 0.02 so that random outputs are far from uniform
    and equivalence tests can tell tokens apart.
    """
    import transformers

    _check_family(family)
    ids = special_token_ids(tokenizer)
    text: dict[str, Any] = dict(
        vocab_size=VOCAB_SIZE,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        max_position_embeddings=4096,
        initializer_range=initializer_range,
        rms_norm_eps=1e-6,
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        tie_word_embeddings=False,
    )
    vision: dict[str, Any] = dict(
        depth=2,
        hidden_size=64,
        intermediate_size=128,
        num_heads=2,
        patch_size=PATCH_SIZE,
        spatial_merge_size=MERGE_SIZE,
        temporal_patch_size=TEMPORAL_PATCH_SIZE,
        out_hidden_size=64,
        num_position_embeddings=2304,
        initializer_range=initializer_range,
    )
    top: dict[str, Any] = dict(
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    if family.startswith("qwen3_vl"):
        # head_dim 32 -> 16 rotary frequencies split over (t, h, w) like the stock [24, 20, 20] of 64.
        text["rope_parameters"] = {
            "rope_type": "default",
            "rope_theta": 5000000.0,
            "mrope_section": [6, 5, 5],
            "mrope_interleaved": True,
        }
        vision["deepstack_visual_indexes"] = [0, 1]
    else:
        # partial_rotary_factor 0.25 of head_dim 32 -> 4 frequencies, split like the stock [11, 11, 10].
        text["rope_parameters"] = {
            "rope_type": "default",
            "rope_theta": 10000000.0,
            "partial_rotary_factor": 0.25,
            "mrope_section": [2, 1, 1],
            "mrope_interleaved": True,
        }
        text.update(
            layer_types=["linear_attention", "full_attention"],
            linear_conv_kernel_dim=4,
            linear_key_head_dim=128,
            linear_value_head_dim=128,
            linear_num_key_heads=1,
            linear_num_value_heads=2,
        )
    if family.endswith("_moe"):
        text.update(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32)
        if family == "qwen3_vl_moe":
            # Non-square fused experts (2 * 16 != 64), as in real checkpoints: transformers' loader
            # tells the Hub layout from its own by shape, and a square one is ambiguous.
            text.update(decoder_sparse_step=1, mlp_only_layers=[], moe_intermediate_size=16)
        else:
            text.update(shared_expert_intermediate_size=32)
        text.pop("intermediate_size")

    config_cls = {
        "qwen3_vl": transformers.Qwen3VLConfig,
        "qwen3_vl_moe": transformers.Qwen3VLMoeConfig,
        "qwen3_5": transformers.Qwen3_5Config,
        "qwen3_5_moe": transformers.Qwen3_5MoeConfig,
    }[family]
    config = config_cls(text_config=text, vision_config=vision, **top)
    config.architectures = [ARCHITECTURES[family]]
    return config


def _vision_processor_common() -> dict[str, Any]:
    """Keys the stock image and video preprocessor configs share."""
    return {
        "processor_class": "Qwen3VLProcessor",
        "do_convert_rgb": True,
        "do_resize": True,
        "do_rescale": True,
        "do_normalize": True,
        "rescale_factor": 1 / 255,
        "resample": 3,
        "image_mean": IMAGE_MEAN,
        "image_std": IMAGE_STD,
        "patch_size": PATCH_SIZE,
        "temporal_patch_size": TEMPORAL_PATCH_SIZE,
        "merge_size": MERGE_SIZE,
    }


def image_processor_dict() -> dict[str, Any]:
    """``preprocessor_config.json`` as in the stock Qwen3-VL / Qwen3.5 repos (smaller min pixels)."""
    return {
        **_vision_processor_common(),
        "image_processor_type": "Qwen2VLImageProcessorFast",
        "size": {"shortest_edge": IMAGE_MIN_PIXELS, "longest_edge": IMAGE_MAX_PIXELS},
    }


def video_processor_dict() -> dict[str, Any]:
    """``video_preprocessor_config.json`` as in the stock Qwen3-VL / Qwen3.5 repos."""
    return {
        **_vision_processor_common(),
        "video_processor_type": "Qwen3VLVideoProcessor",
        "do_sample_frames": True,
        "fps": 2,
        "min_frames": 4,
        "max_frames": 768,
        "size": {"shortest_edge": VIDEO_MIN_PIXELS, "longest_edge": VIDEO_MAX_PIXELS},
        "return_metadata": False,
    }


def build_tiny_checkpoint(family: str, path: str | Path, *, seed: int = 0, initializer_range: float = 0.1) -> Path:
    """Write a complete tiny ``family`` checkpoint (random fp32 weights, seeded) to ``path``.

    Returns ``path``. Deterministic for a given ``seed``.
    """
    import torch
    import transformers
    from transformers import GenerationConfig

    _check_family(family)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer(family)
    config = build_tiny_config(family, tokenizer, initializer_range=initializer_range)
    model_cls = getattr(transformers, ARCHITECTURES[family])
    torch.manual_seed(seed)
    model = model_cls(config).to(torch.float32).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=config.text_config.bos_token_id,
        pad_token_id=config.text_config.pad_token_id,
        eos_token_id=[config.text_config.eos_token_id, config.text_config.bos_token_id],
        # Greedy by default (the stock repos sample): tests compare generations token by token.
        do_sample=False,
    )
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    _write_json(path / "preprocessor_config.json", image_processor_dict())
    _write_json(path / "video_preprocessor_config.json", video_processor_dict())
    _write_json(path / "processor_config.json", {"processor_class": "Qwen3VLProcessor"})
    (path / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    return path


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"Unknown tiny model family {family!r}; allowed: {', '.join(FAMILIES)}.")
