"""OUT of ``pixelprune export``: which of its files the exporter may replace or remove.

The marker ``OUT/.pixelprune_export.json`` records every file the exporter wrote with a
fingerprint (size and modification time, or the target of a weight symlink). It is **untrusted
input** (a folder cloned from the Hub can carry one): a name is only ever acted on when it is a
plain file name inside OUT (no separators, not hidden, not ``..``), and a file only counts as
the exporter's when it still matches its recorded fingerprint. Anything else is refused with an
error naming it, before anything is written.

The marker also tells an interrupted export (``"state": "in progress"``, written before the first
file moves into OUT) from a finished one; :func:`inspect_out` then accepts the old and the
incoming fingerprints alike and names the staging folder to clear (see :mod:`.export_writer`).
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ExportError

__all__ = ["MARKER", "MARKER_FORMAT", "OutState", "fingerprint", "inspect_out", "safe_name"]

logger = logging.getLogger(__name__)

MARKER = ".pixelprune_export.json"
MARKER_FORMAT = 2
STAGING_PREFIX = ".pixelprune_export.partial-"
_STAGING = re.compile(r"^\.pixelprune_export\.partial-[0-9a-f]{8,64}$")
COMPLETE, IN_PROGRESS = "complete", "in progress"

Fingerprint = dict[str, Any]  # {"size": int, "mtime_ns": int} or {"link": str}


def safe_name(name: Any) -> bool:
    """A plain, non-hidden file name directly inside a folder."""
    return (
        isinstance(name, str) and name != "" and name not in (".", "..") and not name.startswith(".")
        and "/" not in name and "\\" not in name and "\0" not in name and Path(name).name == name
    )


def fingerprint(path: Path) -> Fingerprint | None:
    """What the marker records for ``path`` (``None`` when nothing, or a folder, is there)."""
    try:
        stat = path.lstat()
    except FileNotFoundError:
        return None
    if path.is_symlink():
        return {"link": os.readlink(path)}
    if not path.is_file():
        return None
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


@dataclass
class OutState:
    """OUT as found before an export (nothing is changed by reading it)."""

    exists: bool
    ours: dict[str, Fingerprint] = field(default_factory=dict)  # verified files of a previous export
    foreign: set[str] = field(default_factory=set)  # entries the exporter did not write (or that changed)
    staging: str | None = None  # an interrupted export's staging folder, to clear
    interrupted: bool = False
    marker: dict[str, Any] | None = None


def _marker_error(out: Path, problem: str) -> ExportError:
    return ExportError(
        f"{out / MARKER} {problem}. It is not a marker pixelprune export wrote (or it was edited), so "
        "nothing in OUT was changed; delete that file to treat OUT as a folder pixelprune did not "
        "write (then --force), or choose another OUT."
    )


def _files(out: Path, marker: dict[str, Any], key: str) -> dict[str, Fingerprint]:
    files = marker.get(key, {})
    if not isinstance(files, dict):
        raise _marker_error(out, f"has a '{key}' entry that is not an object")
    for name, print_ in files.items():
        if not safe_name(name) or name == MARKER:
            raise _marker_error(out, f"lists {name!r}, which is not a plain file name inside OUT")
        valid = isinstance(print_, dict) and (
            set(print_) == {"link"} and isinstance(print_["link"], str)
            or set(print_) == {"size", "mtime_ns"} and all(type(v) is int for v in print_.values())
        )
        if not valid:
            raise _marker_error(out, f"has an invalid fingerprint for {name!r}")
    return files


def read_marker(out: Path) -> dict[str, Any]:
    """The validated marker of OUT; :class:`ExportError` for anything not written by this exporter."""
    path = out / MARKER
    if path.is_symlink() or not path.is_file():
        raise _marker_error(out, "is not a regular file")
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _marker_error(out, f"is not readable JSON ({exc})") from None
    if not isinstance(marker, dict) or marker.get("generator") != "pixelprune export":
        raise _marker_error(out, "does not name pixelprune export as its generator")
    if marker.get("format") != MARKER_FORMAT:
        raise _marker_error(
            out, f"has format {marker.get('format')!r}, not {MARKER_FORMAT} (older pixelprune versions "
            "recorded no fingerprints)"
        )
    if marker.get("state") not in (COMPLETE, IN_PROGRESS):
        raise _marker_error(out, f"has an unknown state {marker.get('state')!r}")
    staging = marker.get("staging")
    if staging is not None and not (isinstance(staging, str) and _STAGING.match(staging)):
        raise _marker_error(out, f"names {staging!r} as its staging folder")
    _files(out, marker, "files")
    _files(out, marker, "incoming")
    return marker


def inspect_out(out: Path) -> OutState:
    """Classify every entry of OUT as the exporter's (verified) or foreign."""
    if out.is_symlink() and not out.exists():
        raise ExportError(f"OUT {out} is a dangling symbolic link.")
    if out.exists() and not out.is_dir():
        raise ExportError(f"OUT {out} exists and is not a folder.")
    if not out.exists():
        return OutState(exists=False)
    entries = {p.name for p in out.iterdir()}
    state = OutState(exists=True)
    if MARKER not in entries:
        state.foreign = entries
        return state
    marker = read_marker(out)
    state.marker = marker
    state.interrupted = marker["state"] == IN_PROGRESS
    recorded = _files(out, marker, "files")
    incoming = _files(out, marker, "incoming") if state.interrupted else {}
    for name in entries - {MARKER}:
        current = fingerprint(out / name)
        if current is not None and current in (recorded.get(name), incoming.get(name)):
            state.ours[name] = current
        elif state.interrupted and name == marker.get("staging") and (out / name).is_dir() and not (out / name).is_symlink():
            state.staging = name
        else:
            state.foreign.add(name)
    changed = sorted(n for n in state.foreign if n in recorded or n in incoming)
    if changed:
        logger.warning("Changed in OUT since pixelprune export wrote them (kept, treated as not ours): %s", ", ".join(changed))
    if state.interrupted:
        logger.warning(
            "OUT %s holds an interrupted pixelprune export (killed before it finished); this export "
            "replaces it: files the interrupted run wrote are cleared, the others are kept.", out
        )
    return state
