"""Token selection (pure torch) and the transformers processor classes."""

from .selector import (
    GridSpec,
    distance,
    keep_mask_from_indices,
    select_image,
    TokenSource,
    select_keep_mask,
    select_tokens,
)
from .settings import METHODS, METRICS, PixelPruneSettings

__all__ = [
    "GridSpec",
    "METHODS",
    "METRICS",
    "PixelPruneSettings",
    "distance",
    "keep_mask_from_indices",
    "select_image",
    "TokenSource",
    "select_keep_mask",
    "select_tokens",
]
