"""transformers model classes (subclasses of the stock Qwen3-VL / Qwen3.5 classes).

Classes are imported lazily so that ``pixelprune.modeling.transformers_compat`` (and the pure
helpers) import without loading transformers' model code.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "PixelPruneQwen3VLModel": ".qwen3_vl",
    "PixelPruneQwen3VLForConditionalGeneration": ".qwen3_vl",
    "PixelPruneQwen3VLMoeModel": ".qwen3_vl_moe",
    "PixelPruneQwen3VLMoeForConditionalGeneration": ".qwen3_vl_moe",
    "PixelPruneQwen3_5Model": ".qwen3_5",
    "PixelPruneQwen3_5ForConditionalGeneration": ".qwen3_5",
    "PixelPruneQwen3_5MoeModel": ".qwen3_5_moe",
    "PixelPruneQwen3_5MoeForConditionalGeneration": ".qwen3_5_moe",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
