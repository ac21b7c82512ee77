"""PixelPrune: training-free, pixel-exact visual-token pruning for Qwen3-VL and Qwen3.5.

The import package maps the repository's top-level folders: ``pixelprune.processing``
(selector, settings, processors), ``pixelprune.modeling`` (transformers models),
``pixelprune.vllm_model`` (vLLM plugin) and ``pixelprune.hub_configs`` (Hub exporter).

The selector needs only torch and numpy; the processor and model classes below need
transformers and are imported on first use::

    from pixelprune import PixelPruneQwen3VLProcessor, PixelPruneQwen3VLForConditionalGeneration
"""

from __future__ import annotations

import importlib

from ._version import __version__
from .core.selector import keep_mask_from_indices, select_keep_mask, select_tokens
from .core.settings import PixelPruneSettings
from .core.video_selector import (
    select_video_keep_mask, select_video_tokens, video_kept_per_slice, video_tokens_per_slice,
)

_LAZY = {
    "PixelPruneQwen3VLProcessor": "pixelprune.processing.processing_pixelprune",
    "PixelPruneQwen3_5Processor": "pixelprune.processing.processing_pixelprune",
    "PixelPruneQwen3VLForConditionalGeneration": "pixelprune.modeling",
    "PixelPruneQwen3VLMoeForConditionalGeneration": "pixelprune.modeling",
    "PixelPruneQwen3_5ForConditionalGeneration": "pixelprune.modeling",
    "PixelPruneQwen3_5MoeForConditionalGeneration": "pixelprune.modeling",
}

__all__ = [
    "PixelPruneSettings",
    "__version__",
    "keep_mask_from_indices",
    "select_keep_mask",
    "select_tokens",
    "select_video_keep_mask",
    "select_video_tokens",
    "video_kept_per_slice",
    "video_tokens_per_slice",
    *sorted(_LAZY),
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pixelprune' has no attribute {name!r}")
