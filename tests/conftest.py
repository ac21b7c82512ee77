"""Shared pytest configuration and fixtures.

Every test in a ``test_vllm*.py`` file carries the ``vllm`` marker, so ``-m vllm`` /
``-m "not vllm"`` split the suite between the vLLM and transformers environments.

Fixtures (session-scoped factories; what they return is cached and read-only: copy it to modify):

- ``tiny_checkpoint(family, seed=0) -> Path``: a tiny random checkpoint (``tiny_models.py``).
- ``tiny_export(family) -> Path``: that checkpoint exported with the defaults, no sample images.
- ``document_png -> Path``: a 256x192 document page (blocks off the token grid) saved as PNG.

Helper modules next to this file: ``tiny_models.py`` (checkpoint builders), ``images.py`` (every
synthetic image), ``model_oracles.py`` (model inputs, masked-stock oracle), ``vllm_harness.py``
(vLLM environment and the transformers side of HF == vLLM), ``reference_selector.py``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the helper modules above

from tiny_models import build_tiny_checkpoint  # noqa: E402


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name.startswith("test_vllm"):
            item.add_marker(pytest.mark.vllm)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Callable[..., Path]:
    """Factory: ``tiny_checkpoint(family, seed=0) -> Path`` of a tiny checkpoint, built once per
    ``(family, seed)`` per test process. Treat the folder as read-only (copy it to modify it)."""
    root = tmp_path_factory.mktemp("tiny_checkpoints")
    built: dict[tuple[str, int], Path] = {}

    def get(family: str, seed: int = 0) -> Path:
        if (family, seed) not in built:
            built[family, seed] = build_tiny_checkpoint(family, root / f"{family}-seed{seed}", seed=seed)
        return built[family, seed]

    return get


@pytest.fixture(scope="session")
def tiny_export(tiny_checkpoint, tmp_path_factory) -> Callable[[str], Path]:
    """Factory: ``tiny_export(family) -> Path`` of the tiny checkpoint of ``family`` exported with
    the defaults and no sample images (cached; treat it as read-only)."""
    from pixelprune.hub_configs.exporter import export

    root = tmp_path_factory.mktemp("tiny_exports")
    done: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in done:
            export(tiny_checkpoint(family), root / family, sample_images=[], repo_id=f"me/{family}-pixelprune")
            done[family] = root / family
        return done[family]

    return get


@pytest.fixture(scope="session")
def document_png(tmp_path_factory) -> Path:
    """A 256x192 document page (blocks off the token grid) as PNG: pruned, but not trivially."""
    from images import document_image

    path = tmp_path_factory.mktemp("export_image") / "page.png"
    document_image(256, 192, aligned=False).save(path)
    return path
