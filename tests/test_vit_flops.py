"""The ViT FLOPs estimate (pixelprune/vit_flops.py)."""

from __future__ import annotations

import pytest

from pixelprune.vit_flops import QWEN3_VL_2B_VISION, VisionTowerConfig, estimate_vit_flops, vit_flops


def test_per_patch_and_attention_terms_by_hand():
    c = VisionTowerConfig(depth=2, hidden_size=8, intermediate_size=16, patch_size=2, temporal_patch_size=2,
                          in_channels=3, spatial_merge_size=2, out_hidden_size=4, num_mergers=1)
    embed = 2 * (3 * 2 * 2 * 2) * 8
    blocks = 2 * 2 * 8 * (3 * 8 + 8 + 2 * 16)
    merger_per_token = 2 * 32 * 32 + 2 * 32 * 4
    assert c.linear_flops_per_patch == embed + blocks + merger_per_token // 4
    assert vit_flops(12, c) == 12 * c.linear_flops_per_patch + 2 * 2 * 2 * 12 * 12 * 8


def test_linear_in_patches_quadratic_attention_per_image():
    n = 400
    attention = QWEN3_VL_2B_VISION.attention_flops(n)
    assert vit_flops(2 * n) - 2 * vit_flops(n) == 2 * attention  # (2n)^2 - 2 n^2 = 2 n^2
    # Two images attend separately: cheaper than one image with all their patches.
    assert estimate_vit_flops([n, n], [n, n]).full == 2 * vit_flops(n) < vit_flops(2 * n)


def test_estimate_saved_fraction():
    nothing = estimate_vit_flops([1024], [1024])
    assert nothing.saved == 0 and nothing.saved_fraction == 0 and nothing.reduction == 1
    half = estimate_vit_flops([8000], [4000])
    assert 0.5 < half.saved_fraction < 0.75  # attention makes the saving exceed the token share
    assert half.reduction == pytest.approx(half.full / half.kept)
    assert estimate_vit_flops([], []).saved_fraction == 0.0


def test_from_vision_config_reads_hf_names():
    config = {"depth": 27, "hidden_size": 1152, "intermediate_size": 4304, "num_heads": 16, "patch_size": 16,
              "spatial_merge_size": 2, "temporal_patch_size": 2, "out_hidden_size": 4096,
              "deepstack_visual_indexes": [8, 16, 24]}
    c = VisionTowerConfig.from_vision_config(config)
    assert (c.depth, c.hidden_size, c.intermediate_size, c.out_hidden_size, c.num_mergers) == (27, 1152, 4304, 4096, 4)
    assert VisionTowerConfig.from_vision_config({}) == VisionTowerConfig(num_mergers=1)


def test_invalid_counts():
    with pytest.raises(ValueError, match="kept_patches=5 must be within"):
        estimate_vit_flops([4], [5])
    with pytest.raises(ValueError, match="2 full patch counts but 1 kept"):
        estimate_vit_flops([4, 4], [4])
