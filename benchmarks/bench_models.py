"""The benchmark models: real Qwen3-VL-2B / Qwen3.5-2B widths, random weights, reduced depth on CPU.

``build_model(family, vit_depth, llm_layers, attn)`` builds the PixelPrune class of a family (called
without ``image_keep_mask`` it runs the stock transformers code path unchanged, so one model object
serves as both "stock" and "PixelPrune"). ``make_inputs`` builds a one-image prompt,
``make_video_inputs`` a one-video prompt, and ``llm_flops`` counts the LLM's matrix-product FLOPs, all
per family.

Widths are the released checkpoints' ``config.json`` values:

- **Qwen3-VL-2B-Instruct**: ViT 24 blocks of 1024 (MLP 4096, 16 heads), deepstack mergers after blocks
  5, 11, 17; LLM 28 layers of 2048 (MLP 6144), 16 query / 8 KV heads of 128, vocab 151936, tied.
- **Qwen3.5-2B**: ViT 24 blocks of 1024 (MLP 4096, 16 heads), no deepstack; LLM 24 hybrid layers of
  2048 (MLP 6144), in groups of 3 gated delta-net (linear attention: 16 key / 16 value heads of 128,
  causal conv 4) + 1 full attention (8 query / 2 KV heads of 256, gated output, partial rotary
  0.25); vocab 248320, tied.

On CPU the depth is reduced. Every layer of a stack of one kind costs the same, so per-layer times
scale; Qwen3.5's LLM keeps its 3:1 linear:full pattern when ``llm_layers`` is a multiple of 4 (the
default there), and always keeps at least one layer of each kind.
"""

from __future__ import annotations

import torch

FAMILIES = ("qwen3_vl", "qwen3_5")
PROMPT_TOKENS = 24  # text before the image (system + user turn) and after it (question)

# (image, vision start, vision end) placeholder token ids of each family's tokenizer
TOKEN_IDS = {"qwen3_vl": (151655, 151652, 151653), "qwen3_5": (248056, 248053, 248054)}
VIDEO_TOKEN_ID = {"qwen3_vl": 151656, "qwen3_5": 248057}  # <|video_pad|>
# "<0.5 seconds>" before every temporal slice of a video: 6 tokens with the Qwen tokenizers (7 from 10 s)
TIMESTAMP_TOKENS = 6
# full depth of the released checkpoints (ViT blocks, LLM layers), for labels
FULL_DEPTH = {"qwen3_vl": (24, 28), "qwen3_5": (24, 24)}
DEFAULT_LLM_LAYERS = {"qwen3_vl": 2, "qwen3_5": 4}
LABEL = {"qwen3_vl": "Qwen3-VL-2B", "qwen3_5": "Qwen3.5-2B"}

QWEN3_VL_2B_TEXT = dict(
    vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_attention_heads=16,
    num_key_value_heads=8, head_dim=128, max_position_embeddings=262144, rms_norm_eps=1e-6,
    tie_word_embeddings=True,
    rope_parameters={"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [24, 20, 20],
                     "mrope_interleaved": True},
)
QWEN3_VL_2B_VISION = dict(
    hidden_size=1024, intermediate_size=4096, num_heads=16, patch_size=16, spatial_merge_size=2,
    temporal_patch_size=2, out_hidden_size=2048, num_position_embeddings=2304, in_channels=3,
)
QWEN3_5_2B_TEXT = dict(
    vocab_size=248320, hidden_size=2048, intermediate_size=6144, num_attention_heads=8,
    num_key_value_heads=2, head_dim=256, max_position_embeddings=262144, rms_norm_eps=1e-6,
    linear_conv_kernel_dim=4, linear_key_head_dim=128, linear_value_head_dim=128,
    linear_num_key_heads=16, linear_num_value_heads=16, tie_word_embeddings=True,
    rope_parameters={"rope_type": "default", "rope_theta": 10000000.0, "mrope_section": [11, 11, 10],
                     "mrope_interleaved": True, "partial_rotary_factor": 0.25},
)
QWEN3_5_2B_VISION = dict(
    hidden_size=1024, intermediate_size=4096, num_heads=16, patch_size=16, spatial_merge_size=2,
    temporal_patch_size=2, out_hidden_size=2048, num_position_embeddings=2304, in_channels=3,
    hidden_act="gelu_pytorch_tanh",
)


def check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"family={family!r}; expected one of {FAMILIES}")


def qwen3_5_layer_types(layers: int) -> list[str]:
    """The checkpoint's pattern (3 linear, then 1 full attention) cut to ``layers``, ending on a full
    attention layer so that a short stack still holds both kinds."""
    if layers < 2:
        raise ValueError(f"llm_layers={layers}: Qwen3.5 needs >= 2 (one linear- and one full-attention layer)")
    types = ["full_attention" if (i + 1) % 4 == 0 else "linear_attention" for i in range(layers)]
    types[-1] = "full_attention"
    return types


# Small widths with the real vocabularies (the prompts use the real placeholder ids) for the GPU
# suite's CPU mode: the same code paths in seconds.
TINY_TEXT = dict(hidden_size=64, intermediate_size=128, num_attention_heads=2, num_key_value_heads=1, head_dim=64)
TINY_ROPE = {  # M-RoPE sections sum to half the rotary dimension (Qwen3.5 rotates a quarter of head_dim)
    "qwen3_vl": dict(QWEN3_VL_2B_TEXT["rope_parameters"], mrope_section=[12, 10, 10]),
    "qwen3_5": dict(QWEN3_5_2B_TEXT["rope_parameters"], mrope_section=[3, 3, 2]),
}
TINY_LINEAR = dict(linear_key_head_dim=32, linear_value_head_dim=32, linear_num_key_heads=2, linear_num_value_heads=2)
TINY_VISION = dict(hidden_size=64, intermediate_size=128, num_heads=2, out_hidden_size=64)


def build_model(family: str, vit_depth: int, llm_layers: int, attn: str, *, device="cpu", dtype=torch.float32,
                tiny: bool = False):
    """(model, config): the family's PixelPrune ``ForConditionalGeneration`` class in eval mode,
    random weights (seeded) initialised directly on ``device`` in ``dtype``; ``tiny`` shrinks the
    widths (:data:`TINY_TEXT`, :data:`TINY_VISION`) but keeps the real vocabularies."""
    import transformers

    check_family(family)
    image, start, end = TOKEN_IDS[family]
    ids = dict(image_token_id=image, video_token_id=VIDEO_TOKEN_ID[family], vision_start_token_id=start,
               vision_end_token_id=end, tie_word_embeddings=True)
    if family == "qwen3_vl":
        from pixelprune.modeling import PixelPruneQwen3VLForConditionalGeneration as cls

        config = transformers.Qwen3VLConfig(
            text_config=dict(QWEN3_VL_2B_TEXT, num_hidden_layers=llm_layers,
                             **(dict(TINY_TEXT, rope_parameters=TINY_ROPE[family]) if tiny else {})),
            vision_config=dict(QWEN3_VL_2B_VISION, depth=vit_depth, **(TINY_VISION if tiny else {}),
                               deepstack_visual_indexes=list(range(min(3, vit_depth)))),
            **ids)
    else:
        from pixelprune.modeling import PixelPruneQwen3_5ForConditionalGeneration as cls

        config = transformers.Qwen3_5Config(
            text_config=dict(QWEN3_5_2B_TEXT, num_hidden_layers=llm_layers, layer_types=qwen3_5_layer_types(llm_layers),
                             **(dict(TINY_TEXT, **TINY_LINEAR, rope_parameters=TINY_ROPE[family]) if tiny else {})),
            vision_config=dict(QWEN3_5_2B_VISION, depth=vit_depth, **(TINY_VISION if tiny else {})), **ids)
    config._attn_implementation = attn
    torch.manual_seed(0)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # build in the target dtype: a 2B model never exists in float32
    try:
        with torch.device(device):
            model = cls(config)
    finally:
        torch.set_default_dtype(default_dtype)
    return model.eval(), config


def llm_flops(config, seq_len: int) -> float:
    """Matrix-product FLOPs of an LLM prefill over ``seq_len`` tokens (all layers, no lm_head).

    Full attention: projections (Qwen3.5's query projection is twice as wide: it carries the output
    gate), causal scores and weighted sum. Gated delta-net: projections plus ~6 FLOPs per key x value
    state element per token (read, update, output of the recurrent state); its conv is negligible.
    """
    t = config.text_config
    d, f = t.hidden_size, t.intermediate_size
    mlp = 3 * 2 * d * f  # gate, up, down
    gated = hasattr(t, "linear_num_value_heads")  # Qwen3.5 (hybrid) vs Qwen3-VL (all full attention)
    q, kv = t.num_attention_heads * t.head_dim, t.num_key_value_heads * t.head_dim
    full = seq_len * (2 * d * ((2 if gated else 1) * q + 2 * kv) + 2 * q * d + mlp) + 2 * 2 * q * seq_len * (seq_len + 1) / 2
    if not gated:
        return t.num_hidden_layers * full
    key, value = t.linear_num_key_heads * t.linear_key_head_dim, t.linear_num_value_heads * t.linear_value_head_dim
    state = t.linear_num_value_heads * t.linear_key_head_dim * t.linear_value_head_dim
    proj = 2 * d * (2 * key + 2 * value + 2 * t.linear_num_value_heads) + 2 * value * d  # qkv, z, a, b; out
    linear = seq_len * (proj + 6 * state + mlp)
    return sum(full if kind == "full_attention" else linear for kind in t.layer_types)


def make_inputs(family: str, grid: torch.Tensor, image_tokens: int) -> dict:
    """Model inputs of a one-image prompt with ``image_tokens`` placeholders (random text ids, seeded)."""
    image, start, end = TOKEN_IDS[family]
    g = torch.Generator().manual_seed(0)
    text = torch.randint(1000, 100000, (2 * PROMPT_TOKENS,), generator=g)
    ids = torch.cat([text[:PROMPT_TOKENS], torch.tensor([start]), torch.full((image_tokens,), image),
                     torch.tensor([end]), text[PROMPT_TOKENS:]]).unsqueeze(0)
    return dict(input_ids=ids, attention_mask=torch.ones_like(ids),
                mm_token_type_ids=(ids == image).to(torch.int32), image_grid_thw=grid)


def make_video_inputs(family: str, grid: torch.Tensor, tokens_per_slice: list[int]) -> dict:
    """Model inputs of a one-video prompt laid out as Qwen3-VL's processor writes it: per temporal
    slice ``s`` a timestamp (:data:`TIMESTAMP_TOKENS` text tokens), ``<|vision_start|>``,
    ``tokens_per_slice[s]`` video placeholders, ``<|vision_end|>``; random text ids (seeded) around."""
    if len(tokens_per_slice) != int(grid[0, 0]):
        raise ValueError(f"{len(tokens_per_slice)} slice token counts for a video of {int(grid[0, 0])} slices")
    _, start, end = TOKEN_IDS[family]
    video = VIDEO_TOKEN_ID[family]
    g = torch.Generator().manual_seed(0)
    text = torch.randint(1000, 100000, (2 * PROMPT_TOKENS + TIMESTAMP_TOKENS * len(tokens_per_slice),), generator=g)
    parts, pos = [text[:PROMPT_TOKENS]], PROMPT_TOKENS
    for n in tokens_per_slice:
        parts += [text[pos:pos + TIMESTAMP_TOKENS], torch.tensor([start]), torch.full((int(n),), video),
                  torch.tensor([end])]
        pos += TIMESTAMP_TOKENS
    ids = torch.cat(parts + [text[pos:]]).unsqueeze(0)
    return dict(input_ids=ids, attention_mask=torch.ones_like(ids),
                mm_token_type_ids=(ids == video).to(torch.int32) * 2, video_grid_thw=grid)


def head_flops(config) -> int:
    """LM-head FLOPs per position."""
    return 2 * config.text_config.hidden_size * config.text_config.vocab_size
