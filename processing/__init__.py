"""The transformers processor classes (``processing_pixelprune``) and the Qwen3-VL image
preprocessing the CLI uses without transformers (``image_preprocessing``). The selector and
settings they use live in :mod:`pixelprune.core`."""
