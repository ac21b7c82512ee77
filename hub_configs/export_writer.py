"""Step 2 of ``pixelprune export``: carry out an :class:`~.export_plan.ExportPlan`.

OUT is always either the previous export or the new one, and the marker says which:

1. the marker is rewritten as ``"in progress"`` (still listing the previous export's files) and
   every new file is written into a fresh staging folder inside OUT
   (``.pixelprune_export.partial-<random>``): the long part (weight copies) leaves the previous
   export untouched;
2. the marker lists the staged files' fingerprints as ``incoming``; each file is then renamed into
   place (a rename per file: the only moment OUT mixes old and new files), and the previous
   export's files this one no longer writes are removed;
3. the staging folder is removed and the marker rewritten as ``"complete"``.

Killed at any point, a rerun finds the ``"in progress"`` marker, explains it, clears the staging
folder and accepts the old and incoming files as its own (:func:`.out_folder.inspect_out`).
Nothing outside OUT is ever written or removed, and nothing inside it that the plan did not name.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..safe_files import replace_file
from .export_plan import ExportPlan, PlannedFile
from .out_folder import COMPLETE, IN_PROGRESS, MARKER, MARKER_FORMAT, STAGING_PREFIX, Fingerprint, fingerprint

__all__ = ["write_plan"]

logger = logging.getLogger(__name__)

COPY_CHUNK = 16 * 1024 * 1024


def _write_marker(out: Path, plan: ExportPlan, state: str, files: dict[str, Fingerprint], **extra: Any) -> None:
    marker = {**plan.marker(), "format": MARKER_FORMAT, "state": state, **extra, "files": files}
    replace_file(out / MARKER, (json.dumps(marker, indent=2, allow_nan=False) + "\n").encode("utf-8"))


def _copy_weights(staging: Path, files: Sequence[PlannedFile]) -> None:
    """Copy weight files with a progress bar over the bytes (tqdm when installed)."""
    total = sum(f.source.stat().st_size for f in files)
    try:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="Copying weights", disable=None)
    except ImportError:  # the progress bar is optional: log each file instead
        bar = None
    for planned in files:
        logger.info("Copying %s", planned.name)
        with open(planned.source, "rb") as src, open(staging / planned.name, "xb") as dst:
            while block := src.read(COPY_CHUNK):
                dst.write(block)
                if bar is not None:
                    bar.update(len(block))
        shutil.copystat(planned.source, staging / planned.name)
    if bar is not None:
        bar.close()


def _stage(staging: Path, plan: ExportPlan) -> str:
    """Write every planned file into ``staging``; returns the weights mode actually used."""
    mode = plan.weights_mode
    to_copy = []
    for planned in plan.files:
        if planned.source is None:
            with open(staging / planned.name, "xb") as handle:
                handle.write(planned.data)
            continue
        if mode == "link":
            try:
                os.symlink(planned.source.resolve(), staging / planned.name)
                continue
            except OSError as exc:
                logger.warning("Cannot link %s (%s); copying instead", planned.name, exc)
                mode = "copy"
        to_copy.append(planned)
    if to_copy:
        _copy_weights(staging, to_copy)
    return mode


def _move_into_place(out: Path, staging: Path, names: Sequence[str]) -> None:
    for name in names:
        os.replace(staging / name, out / name)  # replaces a file or a link itself, never its target


def write_plan(plan: ExportPlan) -> str:
    """Write the planned export into OUT; returns the weights mode used ("link" or "copy")."""
    out, state = plan.out, plan.out_state
    out.mkdir(parents=True, exist_ok=True)
    previous = dict(state.ours)
    if state.staging is not None:  # an interrupted export's staging folder (verified: named by its marker)
        logger.info("Removing the staging folder %s of an interrupted export", out / state.staging)
        shutil.rmtree(out / state.staging)
    staging = out / f"{STAGING_PREFIX}{secrets.token_hex(8)}"
    _write_marker(out, plan, IN_PROGRESS, previous, staging=staging.name)
    staging.mkdir()
    mode = _stage(staging, plan)
    incoming = {name: fingerprint(staging / name) for name in plan.names}
    _write_marker(out, plan, IN_PROGRESS, previous, staging=staging.name, incoming=incoming)
    _move_into_place(out, staging, plan.names)
    for name in plan.remove:
        (out / name).unlink()
    staging.rmdir()
    _write_marker(out, plan, COMPLETE, {name: fingerprint(out / name) for name in plan.names}, weights=mode)
    return mode
