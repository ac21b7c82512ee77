"""PixelPrune Qwen3.5-MoE model classes: the stock classes plus the ``image_keep_mask`` and
``video_keep_mask`` inputs.

Same modules and weight names as stock, so any Qwen3.5-MoE checkpoint loads::

    model = PixelPruneQwen3_5MoeForConditionalGeneration.from_pretrained("Qwen/Qwen3.5-35B-A3B")

The hybrid (gated delta-net + full attention) text model is handled as for dense Qwen3.5 (see
``qwen3_5.py``): the experts and the router only ever see the shorter, pruned sequence.
"""

from __future__ import annotations

from .transformers_compat import check_transformers_version

check_transformers_version("PixelPrune's Qwen3.5-MoE classes")

from transformers.models.qwen3_5_moe.modeling_qwen3_5_moe import (  # noqa: E402
    Qwen3_5MoeForConditionalGeneration,
    Qwen3_5MoeModel,
)

from .pixelprune_mixin import (  # noqa: E402
    PixelPruneForConditionalGenerationMixin,
    PixelPruneModelMixin,
    keep_mask_forward,
)

__all__ = ["PixelPruneQwen3_5MoeModel", "PixelPruneQwen3_5MoeForConditionalGeneration"]


class PixelPruneQwen3_5MoeModel(PixelPruneModelMixin, Qwen3_5MoeModel):
    """``Qwen3_5MoeModel`` that encodes only kept patches and keeps unpruned M-RoPE positions."""

    forward = keep_mask_forward(Qwen3_5MoeModel.forward)


class PixelPruneQwen3_5MoeForConditionalGeneration(
    PixelPruneForConditionalGenerationMixin, Qwen3_5MoeForConditionalGeneration
):
    """``Qwen3_5MoeForConditionalGeneration`` accepting the PixelPrune processor's keep masks."""

    pixelprune_model_class = PixelPruneQwen3_5MoeModel
    forward = keep_mask_forward(Qwen3_5MoeForConditionalGeneration.forward)
