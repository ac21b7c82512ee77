"""transformers model classes (subclasses of the stock Qwen3-VL / Qwen3.5 classes)."""
