"""Fixtures shared by the exporter tests (``test_export.py``, ``test_export_remote.py``): one tiny
export per family and one document image, built once per test process.

Import them into a test module like ``tiny_checkpoint``:
``from export_fixtures import document_png, tiny_export  # noqa: F401 - fixtures``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from images import document_image
from tiny_models import tiny_checkpoint  # noqa: F401 - fixture used below

from pixelprune.hub_configs.exporter import export


@pytest.fixture(scope="session")
def document_png(tmp_path_factory) -> Path:
    """A 256x192 document page (blocks off the token grid) as PNG: pruned, but not trivially."""
    path = tmp_path_factory.mktemp("export_image") / "page.png"
    document_image(256, 192, aligned=False).save(path)
    return path


@pytest.fixture(scope="session")
def tiny_export(tiny_checkpoint, tmp_path_factory):  # noqa: F811
    """Factory fixture: ``tiny_export(family) -> Path`` of the tiny checkpoint of ``family`` exported
    with the defaults and no sample images (cached; treat it as read-only)."""
    root = tmp_path_factory.mktemp("tiny_exports")
    done: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in done:
            export(tiny_checkpoint(family), root / family, sample_images=[], repo_id=f"me/{family}-pixelprune")
            done[family] = root / family
        return done[family]

    return get
