"""``pixelprune export BASE OUT``: a Hub-ready PixelPrune repo from a stock Qwen3-VL / Qwen3.5 checkpoint.

OUT receives (docs/DESIGN.md, "Hub repos"):

* ``config.json``: the base config with the stock ``model_type`` kept, ``architectures`` naming our
  class and ``auto_map`` pointing the auto classes at the flat remote files;
* ``processor_config.json``: our processor class, its ``auto_map`` and the ``pixelprune`` settings
  (``processor_class`` in the image/video/tokenizer configs is renamed to match; nested image and
  video processor configs, as transformers 5.x saves them, are kept);
* flat remote-code files generated from the package's sources (:mod:`.remote_code`);
* every other top-level file of BASE (tokenizer, chat template, generation config, ...) copied;
  weights (``*.safetensors`` / ``*.bin`` and their shard index) linked or copied with a progress bar;
* ``README.md``: the model card (:mod:`.model_card`), with retention measured on the sample images;
* ``.pixelprune_export.json``: what this command wrote, with fingerprints (:mod:`.out_folder`), so
  that re-exporting replaces exactly those files (a non-empty OUT without it is refused unless
  ``--force``).

An export is a plan (:mod:`.export_plan`: every check, nothing written) followed by a write
(:mod:`.export_writer`: staged, then moved into place; an interrupted export is recovered by a
rerun). BASE is never written to, nor anything outside OUT. The command line is
:mod:`.export_cli`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.settings import PixelPruneSettings
from .errors import ExportError
from .export_plan import plan_export
from .export_writer import write_plan
from .families import Family
from .hub_upload import push_folder
from .out_folder import MARKER

if TYPE_CHECKING:
    from ..inspection import InspectResult

__all__ = ["MARKER", "ExportError", "ExportResult", "export"]

logger = logging.getLogger(__name__)


@dataclass
class ExportResult:
    """What :func:`export` wrote."""

    out: Path
    family: Family
    settings: PixelPruneSettings
    files: list[str]
    weights: list[str]
    weights_mode: str
    retention: dict[str, list[InspectResult]] = field(default_factory=dict)
    pushed_to: str | None = None


def export(
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
    private: bool = False,
) -> ExportResult:
    """Write a Hub-ready PixelPrune repo for ``base`` (local checkpoint folder or Hub id) into ``out``.

    Args:
        settings: PixelPrune settings saved in ``processor_config.json``: a
            :class:`PixelPruneSettings` is used as given; a mapping of setting names overrides the
            settings BASE already carries (if any), else the defaults (lossless); ``None``: BASE's
            or the defaults.
        weights: ``"link"`` (symlinks into BASE; copies where links are impossible) or ``"copy"``.
        force: allow a non-empty ``out`` that this command did not write (its other files stay).
        sample_images: images for the card's retention table (default: pixelprune's samples).
        base_model / license: card metadata when they cannot be inferred from BASE.
        repo_id: the Hub id the card's snippets use (default: ``push_to_hub``, else a placeholder).
        push_to_hub: upload ``out`` to this Hub repo id (created if needed; ``private`` then applies).

    Raises:
        ExportError: one message saying what is wrong (bad BASE, unsupported model type, missing
            weights, OUT not ours, remote code that would not load); nothing is written then.
    """
    plan = plan_export(
        base, out, settings=settings, weights=weights, force=force, sample_images=sample_images,
        base_model=base_model, license=license, repo_id=repo_id, push_to_hub=push_to_hub,
    )
    try:
        mode = write_plan(plan)
    except OSError as exc:  # disk full, permissions, ...: the marker says "in progress"
        raise ExportError(
            f"Writing into OUT {plan.out} failed: {exc}. OUT still holds the previous export (if any); "
            "rerun the same command once the cause is fixed to finish the export."
        ) from exc
    logger.info("Exported %s (%s) to %s", plan.base_arg, plan.family.display_name, plan.out)
    result = ExportResult(
        out=plan.out, family=plan.family, settings=plan.settings, files=sorted(plan.names),
        weights=list(plan.base.weights), weights_mode=mode, retention=plan.retention,
    )
    if push_to_hub:
        result.pushed_to = push_folder(plan.out, push_to_hub, private=private)
    return result
