"""Estimated vision-tower (ViT) FLOPs with and without PixelPrune.

The estimate counts multiply-adds of the matrix products (2 FLOPs each) of a Qwen3-VL vision tower,
the default being Qwen3-VL-2B's (``vision_config`` of the released checkpoint):

======================  =====  ===============================================
depth                   24     transformer blocks
hidden_size             1024   width of every block
intermediate_size       4096   MLP width
patch_size              16     (x 2 temporal frames x 3 channels = 1536 inputs)
spatial_merge_size      2      4 patches -> 1 merged token
out_hidden_size         2048   merger output (the LLM width)
mergers                 4      final merger + 3 deepstack mergers (layers 5, 11, 17)
======================  =====  ===============================================

Per patch: patch embedding ``2*1536*1024``; per block ``2*1024*(3*1024 + 1024 + 2*4096)`` for the
qkv, output and MLP projections. Per image and block: attention scores and weighted sum
``2 * 2 * n**2 * 1024`` for its ``n`` patches (the ViT attends within each image, and a pruned image
attends only among its kept patches). Per merged token and merger:
``2*4096*4096 + 2*4096*2048``. Norms, activations, rotary and position-embedding interpolation are
left out (well under 1% at these sizes). Linear terms scale with the number of patches and the
attention term with its square per image, so the saved fraction is a little larger than the
pruned fraction of tokens on large images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["QWEN3_VL_2B_VISION", "VisionTowerConfig", "VitFlops", "estimate_vit_flops", "vit_flops"]


@dataclass(frozen=True)
class VisionTowerConfig:
    """The sizes of a Qwen3-VL / Qwen3.5 vision tower that its FLOPs depend on."""

    depth: int = 24
    hidden_size: int = 1024
    intermediate_size: int = 4096
    patch_size: int = 16
    temporal_patch_size: int = 2
    in_channels: int = 3
    spatial_merge_size: int = 2
    out_hidden_size: int = 2048
    num_mergers: int = 4  # the final merger + one per deepstack layer

    @classmethod
    def from_vision_config(cls, config: Any) -> VisionTowerConfig:
        """Read a transformers ``vision_config`` (object or dict), e.g. of a Qwen3-VL checkpoint."""
        get = config.get if isinstance(config, Mapping) else (lambda k, d=None: getattr(config, k, d))
        deepstack = get("deepstack_visual_indexes", None) or []
        defaults = cls()
        return cls(
            depth=int(get("depth", defaults.depth)),
            hidden_size=int(get("hidden_size", defaults.hidden_size)),
            intermediate_size=int(get("intermediate_size", defaults.intermediate_size)),
            patch_size=int(get("patch_size", defaults.patch_size)),
            temporal_patch_size=int(get("temporal_patch_size", defaults.temporal_patch_size)),
            in_channels=int(get("in_channels", defaults.in_channels)),
            spatial_merge_size=int(get("spatial_merge_size", defaults.spatial_merge_size)),
            out_hidden_size=int(get("out_hidden_size", defaults.out_hidden_size)),
            num_mergers=1 + len(deepstack),
        )

    @property
    def linear_flops_per_patch(self) -> int:
        """Patch embedding + all blocks' projections + the mergers' share, for one patch."""
        d, f = self.hidden_size, self.intermediate_size
        embed = 2 * self.in_channels * self.temporal_patch_size * self.patch_size**2 * d
        blocks = self.depth * 2 * d * (3 * d + d + 2 * f)
        merged = d * self.spatial_merge_size**2
        merger = self.num_mergers * (2 * merged * merged + 2 * merged * self.out_hidden_size)
        return embed + blocks + merger // self.spatial_merge_size**2

    def attention_flops(self, patches: int) -> int:
        """Attention scores and weighted sums over ``patches`` patches of one image, all blocks."""
        return self.depth * 2 * 2 * patches * patches * self.hidden_size


QWEN3_VL_2B_VISION = VisionTowerConfig()


def vit_flops(patches: int, config: VisionTowerConfig = QWEN3_VL_2B_VISION) -> int:
    """Estimated FLOPs of the vision tower on ONE image of ``patches`` (16x16) patches."""
    if patches < 0:
        raise ValueError(f"patches={patches} must be >= 0.")
    return patches * config.linear_flops_per_patch + config.attention_flops(patches)


@dataclass(frozen=True)
class VitFlops:
    """Estimated vision-tower FLOPs for a set of images, unpruned (``full``) and pruned (``kept``)."""

    full: int
    kept: int

    @property
    def saved(self) -> int:
        return self.full - self.kept

    @property
    def saved_fraction(self) -> float:
        """Share of the unpruned FLOPs that pruning saves (0 when there is nothing to compute)."""
        return self.saved / self.full if self.full else 0.0

    @property
    def reduction(self) -> float:
        """``full / kept``: how many times fewer FLOPs the pruned ViT needs."""
        return self.full / self.kept if self.kept else float("inf")


def estimate_vit_flops(
    full_patches: Sequence[int],
    kept_patches: Sequence[int],
    config: VisionTowerConfig = QWEN3_VL_2B_VISION,
) -> VitFlops:
    """Vision-tower FLOPs for images with ``full_patches[i]`` patches of which PixelPrune keeps
    ``kept_patches[i]`` (4 per kept token). Each image is attended separately, as in the model."""
    if len(full_patches) != len(kept_patches):
        raise ValueError(
            f"Got {len(full_patches)} full patch counts but {len(kept_patches)} kept patch counts."
        )
    for i, (n, k) in enumerate(zip(full_patches, kept_patches)):
        if not 0 <= k <= n:
            raise ValueError(f"Image {i}: kept_patches={k} must be within [0, full_patches={n}].")
    return VitFlops(
        full=sum(vit_flops(int(n), config) for n in full_patches),
        kept=sum(vit_flops(int(k), config) for k in kept_patches),
    )
