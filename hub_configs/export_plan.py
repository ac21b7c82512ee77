"""Step 1 of ``pixelprune export``: the plan. Every check is done and every file's content computed
(config, processor config, remote code, model card with measured retention); nothing is written.
A refused export therefore never leaves anything behind. :mod:`.export_writer` carries a plan out.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._version import __version__
from ..core.settings import PixelPruneSettings
from ..processing.image_preprocessing import ImagePreprocessConfig
from ..vit_flops import VisionTowerConfig
from .base_checkpoint import BaseCheckpoint, base_card_license, infer_base_model, read_base, read_json
from .errors import ExportError
from .families import Family
from .model_card import CardContext, default_sample_images, render_model_card
from .out_folder import MARKER, OutState, inspect_out
from .remote_code import RemoteCodeError, flatten_modules

if TYPE_CHECKING:
    from ..inspection import InspectResult

__all__ = ["ExportPlan", "PlannedFile", "plan_export"]

logger = logging.getLogger(__name__)

# Base files the exporter writes itself instead of copying.
REWRITTEN = frozenset({"config.json", "processor_config.json", "README.md"})
# Configs whose ``processor_class`` names the processor class to use.
PROCESSOR_CLASS_CONFIGS: tuple[str, ...] = (
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "tokenizer_config.json",
)
WEIGHT_MODES: tuple[str, ...] = ("link", "copy")
PLACEHOLDER_OWNER = "YOUR_HUB_USER"


@dataclass(frozen=True)
class PlannedFile:
    """One file of OUT: ``data`` to write, or a weight file of BASE (``source``) to link or copy."""

    name: str
    data: bytes | None = None
    source: Path | None = None


@dataclass(frozen=True)
class ExportPlan:
    """Everything :func:`.export_writer.write_plan` needs; built by :func:`plan_export`."""

    base: BaseCheckpoint
    base_arg: str
    out: Path
    out_state: OutState
    settings: PixelPruneSettings
    weights_mode: str
    files: tuple[PlannedFile, ...]
    remove: tuple[str, ...]  # files of a previous export that this one no longer writes
    retention: dict[str, list[InspectResult]] = field(default_factory=dict)

    @property
    def family(self) -> Family:
        return self.base.family

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.files]

    def marker(self) -> dict[str, Any]:
        """The marker's description of this export (the writer adds state and fingerprints)."""
        return {
            "generator": "pixelprune export",
            "pixelprune_version": __version__,
            "model_type": self.family.model_type,
            "base": self.base_arg,
            "settings": self.settings.to_dict(),
            "weights": self.weights_mode,
        }


def json_bytes(data: Mapping[str, Any], where: str) -> bytes:
    """Strict JSON (no NaN / Infinity) as the exporter writes every config."""
    try:
        return (json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
    except ValueError as exc:
        raise ExportError(f"{where} would not be strict JSON ({exc}); nothing was written.") from None


def resolve_settings(base: BaseCheckpoint, settings: PixelPruneSettings | Mapping[str, Any] | None) -> PixelPruneSettings:
    """A complete :class:`PixelPruneSettings` is used as given; a mapping overrides the settings
    BASE already carries (its ``pixelprune`` block), else the defaults."""
    if isinstance(settings, PixelPruneSettings):
        return settings
    saved = PixelPruneSettings.from_dict(base.saved_settings)
    if base.saved_settings is not None:
        logger.info("BASE carries saved PixelPrune settings %s; options given override them", base.saved_settings)
    try:
        return saved.replace(**dict(settings or {}))
    except (TypeError, ValueError) as exc:
        raise ExportError(str(exc)) from None


def _check_out_is_not_base(out: Path, base: Path) -> None:
    resolved = out.resolve()
    if resolved == base or base in resolved.parents or resolved in base.parents:
        raise ExportError(f"OUT {out} must not be BASE, inside it or above it (BASE is never modified).")


def _check_out_entries(out: Path, state: OutState, names: Sequence[str], force: bool) -> tuple[str, ...]:
    """Refuse to overwrite what the exporter did not write (unless ``force``) and folders (always);
    return the previous export's files this export no longer writes (verified ours: removed)."""
    folders = sorted(n for n in names if (out / n).is_dir() and not (out / n).is_symlink())
    if folders:
        raise ExportError(f"OUT {out} has folder(s) where the export writes files: {', '.join(folders)}; remove them first.")
    if state.marker is None and state.foreign and not force:
        raise ExportError(
            f"OUT {out} is not empty and was not written by pixelprune export; choose an empty folder "
            "or pass --force to overwrite the files the export writes there."
        )
    clashes = sorted(set(names) & state.foreign)
    if clashes and not force:
        raise ExportError(
            f"OUT {out} has file(s) pixelprune export did not write, or that changed since it wrote them: "
            f"{', '.join(clashes)}; pass --force to overwrite them, or move them away."
        )
    return tuple(sorted(set(state.ours) - set(names)))


def measure_retention(
    images: Sequence[Path], settings: PixelPruneSettings, base: BaseCheckpoint, tower: VisionTowerConfig
) -> list[InspectResult]:
    """``pixelprune inspect``'s result for each image under BASE's image-processor geometry
    (unreadable images are skipped with a warning)."""
    from ..inspection import InspectError, inspect_image

    geometry = ImagePreprocessConfig.from_dict(base.image_processor)
    results = []
    for path in images:
        try:
            results.append(inspect_image(Path(path), settings, geometry, tower)[0])
        except InspectError as exc:
            logger.warning("Skipping sample image %s: %s", path, exc)
    return results


def setting_label(settings: PixelPruneSettings) -> str:
    if settings.threshold == 0:
        return "threshold 0 (lossless)"
    return f"threshold {settings.threshold:g} ({settings.metric}, {'anchored' if settings.is_anchored else 'sliding'})"


def _export_command(base_label: str, repo_name: str, settings: PixelPruneSettings, weights: str,
                    repo_id: str | None, push_to_hub: str | None) -> str:
    """The command that made this repo, without local paths (the card is public)."""
    parts = ["pixelprune", "export", base_label, repo_name, "--threshold", repr(settings.threshold),
             "--metric", settings.metric, "--method", settings.method]
    if settings.anchored is not None:
        parts.append("--anchored" if settings.anchored else "--sliding")
    parts.append(f"--{weights}-weights")
    if push_to_hub:
        parts += ["--push-to-hub", push_to_hub]
    elif repo_id:
        parts += ["--repo-id", repo_id]
    return shlex.join(parts)


def _processor_config(base: BaseCheckpoint, settings: PixelPruneSettings) -> dict[str, Any]:
    """BASE's ``processor_config.json`` (nested image/video configs kept) naming our processor."""
    family = base.family
    config = {
        key: _with_processor_class(value, family) if key in ("image_processor", "video_processor") and isinstance(value, dict) else value
        for key, value in base.processor_config.items()
    }
    config.update(
        processor_class=family.processor_class,
        auto_map={**config.get("auto_map", {}), **family.processor_auto_map},
        pixelprune=settings.to_dict(),
    )
    return config


def _with_processor_class(data: dict[str, Any], family: Family) -> dict[str, Any]:
    return {**data, "processor_class": family.processor_class} if "processor_class" in data else data


def plan_export(
    base: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    settings: PixelPruneSettings | Mapping[str, Any] | None = None,
    weights: str = "link",
    force: bool = False,
    sample_images: Sequence[str | os.PathLike[str]] | None = None,
    base_model: str | None = None,
    license: str | None = None,
    repo_id: str | None = None,
    push_to_hub: str | None = None,
) -> ExportPlan:
    """Check everything and compute every file of the export; writes nothing (see
    :func:`pixelprune.hub_configs.exporter.export` for the arguments)."""
    if weights not in WEIGHT_MODES:
        raise ExportError(f"weights={weights!r} is invalid; allowed: {', '.join(WEIGHT_MODES)}.")
    if repo_id and push_to_hub and repo_id != push_to_hub:
        raise ExportError(f"--repo-id {repo_id!r} and --push-to-hub {push_to_hub!r} name different repos.")
    base_arg = os.fspath(base)
    checkpoint = read_base(base_arg)
    family = checkpoint.family
    out = Path(out).expanduser()
    _check_out_is_not_base(out, checkpoint.path)
    settings = resolve_settings(checkpoint, settings)
    out_state = inspect_out(out)

    try:
        remote_files = flatten_modules([family.model_module, family.processor_module], version=__version__)
    except RemoteCodeError as exc:
        raise ExportError(str(exc)) from None
    remote_names = {f.name for f in remote_files}
    base_dir = checkpoint.path
    base_files = sorted(
        p.name for p in base_dir.iterdir()
        if p.is_file() and not p.name.startswith(".") and not p.name.endswith(".py") and p.name not in REWRITTEN
    )
    skipped = sorted(p.name for p in base_dir.iterdir() if p.name not in base_files and p.name not in REWRITTEN)
    if skipped:
        logger.info("Not copied from BASE (folders, hidden files, BASE's own code): %s", ", ".join(skipped))
    clashes = remote_names & set(base_files)
    if clashes:
        raise ExportError(f"BASE has files named like the generated remote code: {', '.join(sorted(clashes))}.")

    files: list[PlannedFile] = []
    for name in base_files:
        if name in checkpoint.weights:
            files.append(PlannedFile(name, source=base_dir / name))
        elif name in PROCESSOR_CLASS_CONFIGS:
            files.append(PlannedFile(name, json_bytes(_with_processor_class(read_json(base_dir / name), family), name)))
        else:
            files.append(PlannedFile(name, (base_dir / name).read_bytes()))
    model_config = {k: v for k, v in checkpoint.config.items() if k not in ("auto_map", "_name_or_path")}
    model_config["architectures"] = [family.architecture]
    model_config["auto_map"] = dict(family.auto_map)
    files.append(PlannedFile("config.json", json_bytes(model_config, "config.json")))
    files.append(PlannedFile("processor_config.json", json_bytes(_processor_config(checkpoint, settings), "processor_config.json")))
    files += [PlannedFile(remote.name, remote.text.encode("utf-8")) for remote in remote_files]

    tower = VisionTowerConfig.from_vision_config(checkpoint.vision_config)
    images = default_sample_images() if sample_images is None else [Path(p) for p in sample_images]
    retention = {setting_label(settings): measure_retention(images, settings, checkpoint, tower)}
    if settings.threshold > 0:
        retention[setting_label(PixelPruneSettings())] = measure_retention(images, PixelPruneSettings(), checkpoint, tower)

    card_base = base_model or infer_base_model(checkpoint)
    card_license = license or base_card_license(base_dir)
    card_repo = push_to_hub or repo_id
    if card_repo is None:
        card_repo = f"{PLACEHOLDER_OWNER}/{out.resolve().name}"
        logger.warning("The card's snippets use the placeholder repo id %r: pass --repo-id (or --push-to-hub).", card_repo)
    if card_base is None:
        logger.warning("The card has no base_model (BASE is a local folder without a Hub id): pass --base-model.")
    if card_license is None:
        logger.warning("The card has no license (BASE's card names none): pass --license.")
    card = CardContext(
        family=family,
        settings=settings,
        repo_id=card_repo,
        base_model=card_base,
        base_label=card_base or base_dir.name,
        license=card_license,
        export_command=_export_command(card_base or "path/to/base", out.resolve().name, settings, weights, repo_id, push_to_hub),
        vision_tower=tower,
        retention=retention,
    )
    files.append(PlannedFile("README.md", render_model_card(card).encode("utf-8")))

    names = [f.name for f in files]
    assert MARKER not in names and len(set(names)) == len(names)
    remove = _check_out_entries(out, out_state, names, force)
    return ExportPlan(
        base=checkpoint, base_arg=base_arg, out=out, out_state=out_state, settings=settings,
        weights_mode=weights, files=tuple(files), remove=remove, retention=retention,
    )
