"""The exported repo's ``README.md``: YAML metadata, usage, settings and retention measured at export.

Retention is measured with :func:`pixelprune.inspect_images.inspect_image` (the same preprocessing and
selector as ``pixelprune inspect``) under the base checkpoint's own image-processor geometry, so the
numbers in a card are what the exported processor keeps for those images.
"""

from __future__ import annotations

import json
import logging
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..processing.image_preprocessing import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS, ImagePreprocessConfig
from ..core.settings import PixelPruneSettings
from .families import Family, read_template_text

if TYPE_CHECKING:  # imported lazily at run time (it loads the CLI's image tooling)
    from ..inspect_images import InspectResult

__all__ = [
    "CardContext",
    "default_sample_images",
    "measure_retention",
    "preprocess_config_from_dict",
    "render_model_card",
]

logger = logging.getLogger(__name__)

CARD_TEMPLATE = "model_card.md"
SAMPLE_GLOB = "sample_*.png"
VIT_FLOPS_NOTE = (
    "estimated by `pixelprune inspect` for the Qwen3-VL-2B vision tower (matrix-product FLOPs of the "
    "kept vs all patches)."
)
TAGS: tuple[str, ...] = ("pixelprune", "token-pruning", "vision-language", "custom_code")


@dataclass(frozen=True)
class CardContext:
    """Everything the card template needs."""

    family: Family
    settings: PixelPruneSettings
    repo_name: str  # how usage snippets refer to the repo (Hub id or folder name)
    base_model: str | None  # Hub id of the base, when known
    base_label: str  # human name of the base (Hub id or folder name)
    license: str | None
    export_command: str
    retention: Mapping[str, Sequence[InspectResult]]  # setting label -> one result per sample image


def default_sample_images() -> list[Path]:
    """The sample images shipped with pixelprune (``assets/sample_*.png``, rendered overlays
    excluded), or ``[]`` when this
    installation has none (a wheel without the assets)."""
    import pixelprune

    package_dir = Path(pixelprune.__file__).resolve().parent
    for folder in (package_dir / "assets", package_dir.parent / "assets"):
        found = sorted(p for p in folder.glob(SAMPLE_GLOB) if not p.stem.endswith("_overlay"))
        if found:
            return found
    return []


def preprocess_config_from_dict(data: Mapping[str, Any]) -> ImagePreprocessConfig:
    """The geometry of a stock ``preprocessor_config.json`` (``size`` or ``min/max_pixels``)."""
    size = data.get("size") or {}
    defaults = ImagePreprocessConfig()
    return ImagePreprocessConfig(
        patch_size=int(data.get("patch_size", defaults.patch_size)),
        temporal_patch_size=int(data.get("temporal_patch_size", defaults.temporal_patch_size)),
        merge_size=int(data.get("merge_size", defaults.merge_size)),
        min_pixels=int(size.get("shortest_edge", data.get("min_pixels", DEFAULT_MIN_PIXELS))),
        max_pixels=int(size.get("longest_edge", data.get("max_pixels", DEFAULT_MAX_PIXELS))),
        image_mean=tuple(data.get("image_mean", defaults.image_mean)),
        image_std=tuple(data.get("image_std", defaults.image_std)),
        rescale_factor=float(data.get("rescale_factor", defaults.rescale_factor)),
    )


def measure_retention(
    images: Sequence[Path], settings: PixelPruneSettings, config: ImagePreprocessConfig
) -> list[InspectResult]:
    """``pixelprune inspect``'s result for each image (unreadable images are skipped with a warning)."""
    from ..inspect_images import InspectError, inspect_image

    results = []
    for path in images:
        try:
            results.append(inspect_image(Path(path), settings, config)[0])
        except InspectError as exc:
            logger.warning("Skipping sample image %s: %s", path, exc)
    return results


def _yaml_front_matter(ctx: CardContext) -> str:
    # JSON strings and lists are valid YAML scalars / flow sequences: no YAML library needed.
    fields: dict[str, Any] = {}
    if ctx.license:
        fields["license"] = ctx.license
    if ctx.base_model:
        fields["base_model"] = ctx.base_model
    fields["library_name"] = "transformers"
    fields["pipeline_tag"] = "image-text-to-text"
    fields["tags"] = [*TAGS, ctx.family.model_type]
    return "---\n" + "".join(f"{key}: {json.dumps(value)}\n" for key, value in fields.items()) + "---\n"


def _settings_table(settings: PixelPruneSettings) -> str:
    mode = "anchored" if settings.is_anchored else "sliding"
    threshold = "0 (lossless: only pixel-identical tokens are pruned)" if settings.threshold == 0 else f"{settings.threshold:g}"
    rows = [
        ("enabled", str(settings.enabled).lower(), "prune at all (`false`: exactly the stock model)"),
        ("threshold", threshold, "tau in [0, 1] pixel units; a token within tau of its prediction is pruned"),
        ("metric", settings.metric, "`max` / `mae` / `rmse` distance between 32x32-pixel tokens"),
        ("method", settings.method, "`pred_2d` (2-D predictor) / `raster` / `serpentine`"),
        ("anchored", "auto" if settings.anchored is None else str(settings.anchored).lower(),
         f"compare with reconstructions (effective here: {mode})"),
    ]
    lines = ["| setting | value | meaning |", "|---|---|---|"]
    lines += [f"| `{name}` | {value} | {meaning} |" for name, value, meaning in rows]
    return "\n".join(lines)


def _retention_table(retention: Mapping[str, Sequence[InspectResult]]) -> str:
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
    lines.append(f"\\* {VIT_FLOPS_NOTE}")
    return "\n".join(lines)


def render_model_card(ctx: CardContext) -> str:
    """The card text (``templates/model_card.md`` filled in)."""
    family = ctx.family
    if ctx.base_model:
        base_link = f"[{ctx.base_model}](https://huggingface.co/{ctx.base_model})"
    else:
        base_link = f"`{ctx.base_label}`"
    threshold_kwarg = ctx.settings.threshold if ctx.settings.threshold > 0 else 0.02
    body = string.Template(read_template_text(CARD_TEMPLATE)).substitute(
        title=f"{ctx.base_label.rsplit('/', 1)[-1]} + PixelPrune",
        base_link=base_link,
        family=family.display_name,
        model_type=family.model_type,
        architecture=family.architecture,
        stock_architecture=family.stock_architecture,
        processor_class=family.processor_class,
        repo=ctx.repo_name,
        settings_table=_settings_table(ctx.settings),
        settings_json=json.dumps(ctx.settings.to_dict()),
        threshold_kwarg=f"{threshold_kwarg:g}",
        retention_table=_retention_table(ctx.retention),
        export_command=ctx.export_command,
    )
    return _yaml_front_matter(ctx) + "\n" + body
