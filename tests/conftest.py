"""Shared pytest configuration: every test in a ``test_vllm*.py`` file carries the ``vllm`` marker,
so ``-m vllm`` / ``-m "not vllm"`` split the suite between the vLLM and transformers environments."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # test helpers (reference_selector, tiny_models, ...)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name.startswith("test_vllm"):
            item.add_marker(pytest.mark.vllm)
