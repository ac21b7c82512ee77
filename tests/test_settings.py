"""Settings: validation where they enter and the precedence of their layers (core/settings.py)."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from pixelprune import select_tokens
from pixelprune.core.settings import (
    PixelPruneSettings,
    pop_prefixed,
    prefixed,
    resolve_settings,
    split_prefixed,
)

# Layers of resolve_settings, lowest to highest (the README "Settings" table).
LAYERS = ("saved", "env", "explicit", "engine", "call")

BAD_THRESHOLDS = [
    (True, r"threshold=True is not a number"),
    (False, r"threshold=False is not a number"),
    (float("inf"), r"threshold=inf is invalid; use a float >= 0 and <= 1"),
    (float("-inf"), r"threshold=-inf is invalid"),
    (float("nan"), r"threshold=nan is invalid"),
    (1e308, r"threshold=1e\+308 is invalid"),
    (1.5, r"threshold=1\.5 is invalid"),
    (2, r"threshold=2 is invalid"),
    ("inf", r"threshold='inf' is invalid"),
    (10**400, r"threshold=1000.* is not a number"),
]


@pytest.fixture(autouse=True)
def _no_pixelprune_env(monkeypatch):
    for field in ("ENABLED", "THRESHOLD", "METRIC", "METHOD", "ANCHORED", "VERBOSE"):
        monkeypatch.delenv(f"PIXELPRUNE_{field}", raising=False)


@pytest.mark.parametrize(("value", "message"), BAD_THRESHOLDS)
def test_bad_thresholds_are_refused_everywhere_settings_enter(value, message, monkeypatch):
    with pytest.raises(ValueError, match=message):
        PixelPruneSettings(threshold=value)
    with pytest.raises(ValueError, match=message):
        PixelPruneSettings().replace(threshold=value)
    for layer in ("saved", "explicit", "engine", "call"):
        with pytest.raises(ValueError, match=message):
            resolve_settings(**{layer: {"threshold": value}})
    with pytest.raises(ValueError, match=message):
        select_tokens(torch.zeros(4, 1536), [[1, 2, 2]], threshold=value)


@pytest.mark.parametrize("text", ["inf", "nan", "1.5", "true"])
def test_bad_threshold_in_the_environment_is_refused(text, monkeypatch):
    monkeypatch.setenv("PIXELPRUNE_THRESHOLD", text)
    with pytest.raises(ValueError, match=f"threshold='{text}'"):
        resolve_settings()
    # even when a higher layer sets the threshold: a bad variable never goes unnoticed
    with pytest.raises(ValueError, match=f"threshold='{text}'"):
        resolve_settings(call={"threshold": 0.1})


def test_json_true_is_not_a_threshold():
    """vLLM's --mm-processor-kwargs / a request's mm_processor_kwargs are JSON: `true` is a bool."""
    ours, _ = split_prefixed(json.loads('{"pixelprune_threshold": true}'))
    with pytest.raises(ValueError, match="threshold=True is not a number"):
        resolve_settings(call=ours)


@pytest.mark.parametrize("value", [0, 0.0, 1, 1.0, 0.5, "0.25", 5e-324])
def test_thresholds_in_range_are_accepted(value):
    assert PixelPruneSettings(threshold=value).threshold == float(value)


def _layer_value(layer: str, value: float, monkeypatch) -> dict:
    if layer == "env":
        monkeypatch.setenv("PIXELPRUNE_THRESHOLD", str(value))
        return {}
    return {layer: {"threshold": value}}


@pytest.mark.parametrize(("low", "high"), list(itertools.combinations(LAYERS, 2)))
def test_every_higher_layer_beats_every_lower_one(low, high, monkeypatch):
    kwargs = {**_layer_value(low, 0.1, monkeypatch), **_layer_value(high, 0.2, monkeypatch)}
    assert resolve_settings(**kwargs).threshold == 0.2
    # and a layer that does not set a key leaves the lower one's value
    monkeypatch.delenv("PIXELPRUNE_THRESHOLD", raising=False)
    assert resolve_settings(**_layer_value(low, 0.1, monkeypatch)).threshold == 0.1


def test_layers_override_only_the_keys_they_set(monkeypatch):
    monkeypatch.setenv("PIXELPRUNE_METRIC", "mae")
    settings = resolve_settings(
        {"threshold": 0.3, "method": "raster"}, explicit={"anchored": False}, call={"verbose": True}
    )
    assert (settings.threshold, settings.metric, settings.method, settings.anchored, settings.verbose) == (
        0.3, "mae", "raster", False, True,
    )
    assert resolve_settings(environ={}) == PixelPruneSettings()
    assert resolve_settings(environ={"PIXELPRUNE_THRESHOLD": "0.4"}).threshold == 0.4  # an explicit environ
    assert resolve_settings(environ={}).metric == "max"


def test_the_prefix_is_split_in_one_place():
    kwargs = {"pixelprune_threshold": 0.1, "do_resize": False, "pixelprune_enabled": False}
    assert split_prefixed(kwargs) == ({"threshold": 0.1, "enabled": False}, {"do_resize": False})
    assert pop_prefixed(kwargs) == {"threshold": 0.1, "enabled": False} and kwargs == {"do_resize": False}
    assert prefixed("threshold") == "pixelprune_threshold"
    with pytest.raises(ValueError, match=r"Unknown PixelPrune setting.*thresold"):
        resolve_settings(call=split_prefixed({"pixelprune_thresold": 0.1})[0])


@pytest.mark.parametrize("value", [2.0, float("inf")])
def test_cli_flags_are_validated_by_the_resolver(value, monkeypatch):
    import argparse

    from pixelprune.inspect_images import settings_from_args

    args = argparse.Namespace(threshold=value, metric=None, method=None, anchored=None)
    with pytest.raises(ValueError, match="is invalid; use a float >= 0 and <= 1"):
        settings_from_args(args)
    # command-line flags are explicit arguments: they beat the environment
    monkeypatch.setenv("PIXELPRUNE_THRESHOLD", "0.3")
    monkeypatch.setenv("PIXELPRUNE_METRIC", "mae")
    settings = settings_from_args(argparse.Namespace(threshold=0.1, metric=None, method=None, anchored=None))
    assert (settings.threshold, settings.metric) == (0.1, "mae")
