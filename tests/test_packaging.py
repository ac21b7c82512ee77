"""The built wheel holds the whole import package (docs/DESIGN.md layout mapped into `pixelprune`),
its data files and entry points, and works when installed on its own."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # Build from a copy without build artefacts: a stale build/ folder in the checkout would
    # otherwise hand old files to the wheel and hide a broken package mapping.
    source = tmp_path_factory.mktemp("source") / "pixelprune"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", "data", ".pytest_cache", ".hypothesis"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(source)],
        check=True, capture_output=True, text=True,
    )
    (path,) = out.glob("pixelprune-*.whl")
    return path


def test_wheel_contents(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in ("processing", "modeling", "vllm_model", "hub_configs"):
        sources = {p.name for p in (REPO / folder).glob("*.py")}
        assert sources, folder
        assert {f"pixelprune/{folder}/{s}" for s in sources} <= names, folder
    assert {"pixelprune/cli.py", "pixelprune/assets/sample_document.png",
            "pixelprune/hub_configs/templates/model_card.md"} <= names
    meta = next(n for n in names if n.endswith("entry_points.txt"))
    entry_points = zipfile.ZipFile(wheel).read(meta).decode()
    assert "pixelprune = pixelprune.cli:main" in entry_points
    assert "[vllm.general_plugins]" in entry_points and "pixelprune.vllm_model.plugin:register" in entry_points


def test_installed_wheel_works_without_the_checkout(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, text=True)
    code = (
        "import pixelprune, pathlib, torch;"
        f"assert pathlib.Path(pixelprune.__file__).is_relative_to({str(target)!r}), pixelprune.__file__;"
        "from pixelprune.hub_configs.model_card import default_sample_images;"
        "assert [p.name for p in default_sample_images()] == ['sample_document.png', 'sample_screenshot.png'];"
        "from pixelprune.cli import main;"
        "raise SystemExit(main(['inspect', str(default_sample_images()[1]), '--json']))"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert '"kept": 373' in result.stdout and '"tokens": 1000' in result.stdout
