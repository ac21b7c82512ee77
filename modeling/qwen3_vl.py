"""PixelPrune Qwen3-VL model classes: the stock classes plus the ``image_keep_mask`` and
``video_keep_mask`` inputs.

Same modules and weight names as stock, so any Qwen3-VL checkpoint loads::

    model = PixelPruneQwen3VLForConditionalGeneration.from_pretrained("Qwen/Qwen3-VL-2B-Instruct")
"""

from __future__ import annotations

from .transformers_compat import check_transformers_version

check_transformers_version("PixelPrune's Qwen3-VL classes")

from transformers.models.qwen3_vl.modeling_qwen3_vl import (  # noqa: E402
    Qwen3VLForConditionalGeneration,
    Qwen3VLModel,
)

from .pixelprune_mixin import (  # noqa: E402
    PixelPruneForConditionalGenerationMixin,
    PixelPruneModelMixin,
    keep_mask_forward,
)

__all__ = ["PixelPruneQwen3VLModel", "PixelPruneQwen3VLForConditionalGeneration"]


class PixelPruneQwen3VLModel(PixelPruneModelMixin, Qwen3VLModel):
    """``Qwen3VLModel`` that encodes only kept patches and keeps unpruned M-RoPE positions."""

    forward = keep_mask_forward(Qwen3VLModel.forward)


class PixelPruneQwen3VLForConditionalGeneration(PixelPruneForConditionalGenerationMixin, Qwen3VLForConditionalGeneration):
    """``Qwen3VLForConditionalGeneration`` accepting the PixelPrune processor's keep masks."""

    pixelprune_model_class = PixelPruneQwen3VLModel
    forward = keep_mask_forward(Qwen3VLForConditionalGeneration.forward)
