"""PIXELPRUNE_VERBOSE / verbose=True prints the per-image line without any logging setup, and
the application's own logging configuration decides once there is one (#12 item 8)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

LINE = "PixelPrune image 0: kept 1/4 tokens"

SCRIPT = textwrap.dedent(
    """
    import logging, sys, torch
    from pixelprune.core.pruning import SelectorGeometry, prune_image_batch
    from pixelprune.core.settings import resolve_settings

    setup = sys.argv[1]
    if setup == "basic-info":
        logging.basicConfig(level=logging.INFO, format="APP %(message)s")
    elif setup == "basic-warning":
        logging.basicConfig(level=logging.WARNING, format="APP %(message)s")
    geometry = SelectorGeometry(patch_size=16, merge_size=2, temporal_patch_size=2, image_mean=(0.5,) * 3, image_std=(0.5,) * 3)
    settings = resolve_settings()  # verbose comes from PIXELPRUNE_VERBOSE when set
    for _ in range(2):  # two calls: one line each, never duplicated
        prune_image_batch(torch.zeros(16, 1536), [[1, 4, 4]], settings, geometry)
    if setup == "configure-later":
        logging.basicConfig(level=logging.INFO, format="APP %(message)s")
        prune_image_batch(torch.zeros(16, 1536), [[1, 4, 4]], settings, geometry)
    """
)


def run(setup: str, verbose: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXELPRUNE_")}
    if verbose is not None:
        env["PIXELPRUNE_VERBOSE"] = verbose
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, setup], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    return result.stderr


def test_verbose_prints_without_logging_setup():
    err = run("none", "1")
    assert err.count(LINE) == 2 and err.startswith(LINE), err


def test_silent_unless_verbose():
    assert run("none", "0") == ""


def test_the_applications_logging_decides_when_configured():
    assert [line.startswith(f"APP {LINE}") for line in run("basic-info", "1").splitlines()] == [True, True]
    assert run("basic-warning", "1") == ""  # the application asked for warnings only


def test_configuring_logging_later_takes_over_without_duplicates():
    lines = run("configure-later", "1").splitlines()
    assert [line.startswith(LINE) for line in lines[:2]] == [True, True]
    assert len(lines) == 3 and lines[2].startswith(f"APP {LINE}"), lines
