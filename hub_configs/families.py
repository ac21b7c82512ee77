"""Per-family Hub templates (``templates/<model_type>.json``) and family detection from a config.

A template names, for one stock ``model_type``: our model class (``architecture``), the ``auto_map``
entries written into ``config.json``, the processor class, and the package modules whose flattened
copies the repo ships (``model_module``, ``processor_module``; their relative imports are followed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

__all__ = ["Family", "FamilyError", "detect_family", "load_families", "read_template_text"]

TEMPLATES = "templates"


class FamilyError(ValueError):
    """The base checkpoint's config is not one of the supported families."""


@dataclass(frozen=True)
class Family:
    """What the exporter writes for one stock model type."""

    model_type: str
    display_name: str
    stock_architecture: str
    architecture: str
    auto_map: dict[str, str]
    processor_class: str
    model_module: str
    processor_module: str

    @property
    def processor_auto_map(self) -> dict[str, str]:
        """``auto_map`` of ``processor_config.json``: ``AutoProcessor`` -> the flat processor module."""
        stem = self.processor_module.rsplit("/", 1)[-1].removesuffix(".py")
        return {"AutoProcessor": f"{stem}.{self.processor_class}"}


def read_template_text(name: str) -> str:
    """The text of ``hub_configs/templates/<name>`` (package data)."""
    return resources.files(__package__).joinpath(TEMPLATES, name).read_text(encoding="utf-8")


def load_families() -> dict[str, Family]:
    """Every template, keyed by stock ``model_type``."""
    families = {}
    for entry in sorted(resources.files(__package__).joinpath(TEMPLATES).iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            data = json.loads(entry.read_text(encoding="utf-8"))
            families[data["model_type"]] = Family(**data)
    return families


def detect_family(config: dict[str, Any], source: str = "config.json") -> Family:
    """The family of a base ``config.json`` (by ``model_type``); :class:`FamilyError` names the
    supported model types otherwise."""
    families = load_families()
    model_type = config.get("model_type")
    if model_type not in families:
        supported = ", ".join(f"{f.model_type} ({f.display_name})" for f in families.values())
        raise FamilyError(
            f"{source}: model_type {model_type!r} is not supported by PixelPrune; supported: {supported}."
        )
    return families[model_type]
