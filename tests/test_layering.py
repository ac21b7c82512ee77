"""The import layering (docs/DESIGN.md): the core is framework-neutral, and neither the
transformers processors nor the vLLM plugin reach into the transformers model classes."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> list[str]:
    """Absolute names of everything ``path`` imports (relative imports resolved against its package:
    the folder ``core/`` is ``pixelprune.core``)."""
    package = ["pixelprune", path.parent.name]
    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.append(module)
            names += [f"{module}.{alias.name}" for alias in node.names]
    return names


def offending(folder: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    found = {}
    for path in sorted((REPO / folder).glob("*.py")):
        bad = [m for m in imported_modules(path) if m.split(".")[0] in forbidden or m.startswith(forbidden)]
        if bad:
            found[path.name] = bad
    return found


def test_the_scan_sees_imports():
    """The scanner itself: it must find what the other tests forbid (else they pass vacuously)."""
    assert "pixelprune.modeling.pixelprune_mixin" in imported_modules(REPO / "modeling" / "qwen3_vl.py") or any(
        m.startswith("pixelprune.modeling") for m in imported_modules(REPO / "modeling" / "qwen3_vl.py")
    )
    assert any(m.startswith("transformers") for m in imported_modules(REPO / "processing" / "processing_pixelprune.py"))
    assert any(m.startswith("pixelprune.core") for m in imported_modules(REPO / "vllm_model" / "models.py"))
    assert offending("modeling", ("transformers",))


def test_core_imports_neither_transformers_nor_vllm():
    assert offending("core", ("transformers", "vllm", "pixelprune.processing", "pixelprune.modeling",
                              "pixelprune.vllm_model", "pixelprune.hub_configs")) == {}


@pytest.mark.parametrize("folder", ["processing", "vllm_model"])
def test_processors_and_vllm_import_nothing_from_modeling(folder):
    assert offending(folder, ("pixelprune.modeling",)) == {}


def test_core_imports_with_transformers_and_vllm_blocked():
    """Importing the core (and the selector API) must not even try to import them."""
    script = textwrap.dedent(
        """
        import importlib.abc, sys

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("transformers", "vllm"):
                    raise ImportError(f"blocked import of {name}")
                return None

        sys.meta_path.insert(0, Block())
        import pixelprune.core
        import pixelprune.core.keep_mask, pixelprune.core.mrope_positions, pixelprune.core.pruning
        import pixelprune.core.selector, pixelprune.core.settings, pixelprune.core.token_distances
        from pixelprune import select_tokens, select_keep_mask, PixelPruneSettings
        import torch
        assert select_tokens(torch.zeros(4, 1536), [[1, 2, 2]])[0].tolist() == [0]
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("transformers", "vllm"))
        assert not loaded, loaded
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
