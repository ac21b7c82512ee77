"""PixelPrune Qwen3.5 model classes: the stock classes plus the ``image_keep_mask`` and
``video_keep_mask`` inputs.

Same modules and weight names as stock, so any Qwen3.5 checkpoint loads::

    model = PixelPruneQwen3_5ForConditionalGeneration.from_pretrained("Qwen/Qwen3.5-2B")

Qwen3.5's text model is hybrid: gated delta-net linear-attention layers (a causal conv window and a
recurrent state in the cache) interleaved with full-attention layers. The shared machinery needs no
change for it: pruning happens before the sequence exists (the processor emits only kept
placeholders), so every layer, recurrent or not, simply sees a shorter sequence, and the hybrid
cache after a pruned prefill is the one that shorter sequence produces. Left padding is masked by
the stock gated delta-net exactly as for unpruned batches. Only M-RoPE (full-attention layers) needs
the unpruned positions, which the shared ``get_rope_index`` provides.
"""

from __future__ import annotations

from .transformers_compat import check_transformers_version

check_transformers_version("PixelPrune's Qwen3.5 classes")

from transformers.models.qwen3_5.modeling_qwen3_5 import (  # noqa: E402
    Qwen3_5ForConditionalGeneration,
    Qwen3_5Model,
)

from .pixelprune_mixin import (  # noqa: E402
    PixelPruneForConditionalGenerationMixin,
    PixelPruneModelMixin,
    keep_mask_forward,
)

__all__ = ["PixelPruneQwen3_5Model", "PixelPruneQwen3_5ForConditionalGeneration"]


class PixelPruneQwen3_5Model(PixelPruneModelMixin, Qwen3_5Model):
    """``Qwen3_5Model`` that encodes only kept patches and keeps unpruned M-RoPE positions."""

    forward = keep_mask_forward(Qwen3_5Model.forward)


class PixelPruneQwen3_5ForConditionalGeneration(PixelPruneForConditionalGenerationMixin, Qwen3_5ForConditionalGeneration):
    """``Qwen3_5ForConditionalGeneration`` accepting the PixelPrune processor's keep masks."""

    pixelprune_model_class = PixelPruneQwen3_5Model
    forward = keep_mask_forward(Qwen3_5ForConditionalGeneration.forward)
