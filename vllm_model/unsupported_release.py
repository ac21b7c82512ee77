"""Import target of the PixelPrune architecture names on an unsupported vLLM release.

:func:`pixelprune.vllm_model.plugin.register` points the four architecture names here instead of
at :mod:`pixelprune.vllm_model.models` when the installed vLLM is outside the supported range, so
that a checkpoint naming one of them fails with the range (vLLM imports the target when it
inspects the architecture) while no PixelPrune model code touches that vLLM.
"""

from __future__ import annotations

import vllm

from .plugin import unsupported_release_message

raise RuntimeError(
    unsupported_release_message(vllm.__version__)
    or f"pixelprune: {__name__} is only imported on an unsupported vLLM release (installed: {vllm.__version__})."
)
