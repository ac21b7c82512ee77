"""The PixelPrune Qwen3-VL-MoE classes load a checkpoint in the Hub's layout exactly as stock does.

The Hub stores Qwen3-VL-MoE's fused experts transposed relative to transformers' modules, and
transformers converts them on load only for classes it knows or that are registered by name
(``pixelprune_mixin._register_stock_weight_conversions``). Oracle: the stock class on the same
files, and the weights of the checkpoint before it was put in the Hub layout.
"""

from __future__ import annotations

import shutil

import pytest
import torch

from tiny_models import build_tiny_checkpoint
from vllm_harness import to_hub_layout_qwen3_vl_moe


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("moe_layout")
    saved = build_tiny_checkpoint("qwen3_vl_moe", root / "saved")  # transformers' own layout
    hub = root / "hub"
    shutil.copytree(saved, hub)
    to_hub_layout_qwen3_vl_moe(hub)
    return saved, hub


def test_hub_layout_differs_from_the_saved_one(checkpoints):
    from safetensors import safe_open

    shapes = []
    for folder in checkpoints:
        with safe_open(str(folder / "model.safetensors"), "pt") as f:
            shapes.append(tuple(f.get_slice("model.language_model.layers.0.mlp.experts.down_proj").get_shape()))
    (experts, rows, cols), hub_shape = shapes
    assert rows != cols and hub_shape == (experts, cols, rows)


@pytest.mark.parametrize("class_name", ["PixelPruneQwen3VLMoeForConditionalGeneration", "PixelPruneQwen3VLMoeModel"])
def test_pixelprune_classes_load_the_hub_layout_like_stock(checkpoints, class_name):
    import transformers

    import pixelprune.modeling as modeling

    saved, hub = checkpoints
    reference = transformers.Qwen3VLMoeForConditionalGeneration.from_pretrained(saved, dtype=torch.float32).state_dict()
    stock = transformers.Qwen3VLMoeForConditionalGeneration.from_pretrained(hub, dtype=torch.float32).state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in stock.items())  # the stock conversion round-trips
    ours = getattr(modeling, class_name).from_pretrained(hub, dtype=torch.float32).state_dict()
    prefix = "" if class_name.endswith("Generation") else "model."
    assert ours.keys() and all(torch.equal(v, reference[prefix + k]) for k, v in ours.items())
