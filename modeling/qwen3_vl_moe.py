"""PixelPrune Qwen3-VL-MoE model classes: the stock classes plus the ``image_keep_mask`` and
``video_keep_mask`` inputs.

Same modules and weight names as stock, so any Qwen3-VL-MoE checkpoint loads::

    model = PixelPruneQwen3VLMoeForConditionalGeneration.from_pretrained("Qwen/Qwen3-VL-30B-A3B-Instruct")
"""

from __future__ import annotations

from .transformers_compat import check_transformers_version

check_transformers_version("PixelPrune's Qwen3-VL-MoE classes")

from transformers.models.qwen3_vl_moe.modeling_qwen3_vl_moe import (  # noqa: E402
    Qwen3VLMoeForConditionalGeneration,
    Qwen3VLMoeModel,
)

from .pixelprune_mixin import (  # noqa: E402
    PixelPruneForConditionalGenerationMixin,
    PixelPruneModelMixin,
    keep_mask_forward,
)

__all__ = ["PixelPruneQwen3VLMoeModel", "PixelPruneQwen3VLMoeForConditionalGeneration"]


class PixelPruneQwen3VLMoeModel(PixelPruneModelMixin, Qwen3VLMoeModel):
    """``Qwen3VLMoeModel`` that encodes only kept patches and keeps unpruned M-RoPE positions."""

    forward = keep_mask_forward(Qwen3VLMoeModel.forward)


class PixelPruneQwen3VLMoeForConditionalGeneration(PixelPruneForConditionalGenerationMixin, Qwen3VLMoeForConditionalGeneration):
    """``Qwen3VLMoeForConditionalGeneration`` accepting the PixelPrune processor's keep masks."""

    pixelprune_model_class = PixelPruneQwen3VLMoeModel
    forward = keep_mask_forward(Qwen3VLMoeForConditionalGeneration.forward)
