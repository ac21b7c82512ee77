"""benchmarks/ helpers behind the speed-up tables: the LLM FLOP count (checked against the parameter
count of the built layers), the Qwen3.5 layer pattern, and the interleaved timing order."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import bench_models  # noqa: E402
from common import interleaved, paired_ratios, spread  # noqa: E402

TINY_TEXT = {
    "qwen3_vl": dict(vocab_size=128, hidden_size=48, intermediate_size=80, num_attention_heads=4,
                     num_key_value_heads=2, head_dim=16, num_hidden_layers=2,
                     rope_parameters={"rope_type": "default", "rope_theta": 1e4, "mrope_section": [2, 3, 3]}),
    "qwen3_5": dict(vocab_size=128, hidden_size=48, intermediate_size=80, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=16, num_hidden_layers=4, linear_key_head_dim=8,
                    linear_value_head_dim=12, linear_num_key_heads=2, linear_num_value_heads=4,
                    layer_types=bench_models.qwen3_5_layer_types(4),
                    rope_parameters={"rope_type": "default", "rope_theta": 1e4, "mrope_section": [1, 1, 0],
                                     "partial_rotary_factor": 0.25}),
}


def _tiny(family: str):
    cls = transformers.Qwen3VLConfig if family == "qwen3_vl" else transformers.Qwen3_5Config
    config = cls(text_config=TINY_TEXT[family], vision_config=dict(depth=1, hidden_size=32, intermediate_size=64,
                                                                  num_heads=2, out_hidden_size=48))
    model_cls = (transformers.Qwen3VLForConditionalGeneration if family == "qwen3_vl"
                 else transformers.Qwen3_5ForConditionalGeneration)
    return config, model_cls(config)


@pytest.mark.parametrize("family", bench_models.FAMILIES)
def test_llm_flops_counts_every_decoder_projection(family):
    """Linear-in-length FLOPs = 2 x (weights of every Linear in the decoder layers) per token, plus the
    modelled attention (full layers) and recurrent-state (gated delta-net layers) terms."""
    config, model = _tiny(family)
    layers = model.model.language_model.layers
    linear_weights = sum(m.weight.numel() for m in layers.modules() if isinstance(m, torch.nn.Linear))
    t = config.text_config
    q = t.num_attention_heads * t.head_dim
    types = getattr(t, "layer_types", None) or ["full_attention"] * t.num_hidden_layers
    n_full = types.count("full_attention")
    state = (t.linear_num_value_heads * t.linear_key_head_dim * t.linear_value_head_dim
             if family == "qwen3_5" else 0)
    for seq in (1, 7, 100):
        expected = (2 * seq * linear_weights + n_full * 2 * q * seq * (seq + 1)
                    + (len(types) - n_full) * 6 * state * seq)
        assert bench_models.llm_flops(config, seq) == pytest.approx(expected, rel=1e-12)


def test_qwen3_5_layer_pattern_keeps_both_kinds():
    assert bench_models.qwen3_5_layer_types(2) == ["linear_attention", "full_attention"]
    assert bench_models.qwen3_5_layer_types(8) == (["linear_attention"] * 3 + ["full_attention"]) * 2
    assert bench_models.qwen3_5_layer_types(5)[-1] == "full_attention"
    with pytest.raises(ValueError, match="llm_layers=1"):
        bench_models.qwen3_5_layer_types(1)


@pytest.mark.parametrize("family", bench_models.FAMILIES)
def test_make_inputs_marks_exactly_the_image_placeholders(family):
    grid = torch.tensor([[1, 4, 6]])
    inputs = bench_models.make_inputs(family, grid, 5)
    image = bench_models.TOKEN_IDS[family][0]
    assert int((inputs["input_ids"] == image).sum()) == 5 == int(inputs["mm_token_type_ids"].sum())
    assert inputs["input_ids"].shape[1] == 2 * bench_models.PROMPT_TOKENS + 2 + 5


def test_interleaved_warms_up_then_alternates_order():
    calls = []
    res = interleaved({"a": lambda: calls.append("a") or 1, "b": lambda: calls.append("b") or 2}, repeats=4)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b", "b", "a"]
    assert len(res["a"]["wall"]) == len(res["b"]["cpu"]) == 4 and res["b"]["out"] == 2


def test_spread_and_paired_ratios():
    assert spread([1.0, 2.0, 3.0]) == pytest.approx(1.0)
    assert paired_ratios([2.0, 6.0], [1.0, 3.0]) == [2.0, 2.0]
