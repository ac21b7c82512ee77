"""PixelPrune: training-free, pixel-exact visual-token pruning for Qwen3-VL and Qwen3.5.

The import package maps the repository's top-level folders: ``pixelprune.processing``
(selector, settings, processors), ``pixelprune.modeling`` (transformers models),
``pixelprune.vllm_model`` (vLLM plugin) and ``pixelprune.hub_configs`` (Hub exporter).
"""

from ._version import __version__
from .processing.selector import keep_mask_from_indices, select_keep_mask, select_tokens
from .processing.settings import PixelPruneSettings

__all__ = [
    "PixelPruneSettings",
    "__version__",
    "keep_mask_from_indices",
    "select_keep_mask",
    "select_tokens",
]
