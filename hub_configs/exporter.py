"""``pixelprune export BASE OUT``: a Hub-ready PixelPrune repo from a stock Qwen3-VL / Qwen3.5 checkpoint.

OUT receives (DESIGN.md, "Hub repos"):

* ``config.json``: the base config with the stock ``model_type`` kept, ``architectures`` naming our
  class and ``auto_map`` pointing the auto classes at the flat remote files;
* ``processor_config.json``: our processor class, its ``auto_map`` and the ``pixelprune`` settings
  (``processor_class`` in the image/video/tokenizer configs is renamed to match);
* flat remote-code files generated from the package's sources (:mod:`.remote_code`);
* every other top-level file of BASE (tokenizer, chat template, generation config, ...) copied;
  weights (``*.safetensors`` / ``*.bin`` and their shard index) linked or copied with a progress bar;
* ``README.md``: the model card (:mod:`.model_card`), with retention measured on the sample images;
* ``.pixelprune_export.json``: what this command wrote, so that re-exporting is allowed and replaces
  exactly those files (a non-empty OUT without it is refused unless ``--force``).

BASE is never written to. A Hub id BASE is downloaded with ``huggingface_hub.snapshot_download``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shlex
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._version import __version__
from ..core.settings import METHODS, METRICS, PixelPruneSettings
from .families import Family, FamilyError, detect_family
from .model_card import (
    CardContext,
    default_sample_images,
    measure_retention,
    preprocess_config_from_dict,
    render_model_card,
)
from .remote_code import RemoteCodeError, flatten_modules

if TYPE_CHECKING:
    from ..inspect_images import InspectResult

__all__ = ["ExportError", "ExportResult", "configure_parser", "export", "run"]

logger = logging.getLogger(__name__)

MARKER = ".pixelprune_export.json"
WEIGHT_SUFFIXES: tuple[str, ...] = (".safetensors", ".bin", ".pt", ".pth")
WEIGHT_INDEXES: tuple[str, ...] = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
# Base files the exporter writes itself instead of copying.
REWRITTEN = frozenset({"config.json", "processor_config.json", "README.md"})
# Configs whose ``processor_class`` names the processor class to use.
PROCESSOR_CLASS_CONFIGS: tuple[str, ...] = (
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "tokenizer_config.json",
)
REQUIRED_PROCESSOR_FILES: dict[str, tuple[str, ...]] = {
    "image processor": ("preprocessor_config.json",),
    "tokenizer": ("tokenizer.json", "tokenizer_config.json", "vocab.json"),
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_WEIGHT_MODES = ("link", "copy")


class ExportError(Exception):
    """The export cannot be done; the message says why and what to do."""


@dataclass
class ExportResult:
    """What :func:`export` wrote."""

    out: Path
    family: Family
    files: list[str]
    weights: list[str]
    weights_mode: str
    retention: dict[str, list[InspectResult]] = field(default_factory=dict)
    pushed_to: str | None = None


# --------------------------------------------------------------------------------------- reading BASE


def resolve_base(base: str) -> tuple[Path, str | None]:
    """The local folder of ``base`` and its Hub id (``None`` for a local folder).

    An existing path is used as is; anything else that looks like a Hub id is downloaded with
    ``huggingface_hub.snapshot_download`` (cached; honours ``HF_HUB_OFFLINE``).
    """
    path = Path(base).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ExportError(f"BASE {base!r} is a file; pass a checkpoint folder or a Hub model id.")
        return path.resolve(), None
    if not _HUB_ID.match(base) or base.startswith((".", "~")):
        raise ExportError(f"BASE {base!r}: no such folder, and it is not a Hub model id (org/name).")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ExportError(
            f"BASE {base!r} is not a local folder; downloading it from the Hub needs huggingface_hub "
            "(pip install 'pixelprune[hub]')."
        ) from None
    logger.info("Downloading %s from the Hub", base)
    try:
        return Path(snapshot_download(repo_id=base, repo_type="model")).resolve(), base
    except Exception as exc:  # noqa: BLE001 - many hub/network errors; one clear message
        raise ExportError(f"BASE {base!r}: no such folder, and downloading it from the Hub failed: {exc}") from exc


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"{path} is not readable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ExportError(f"{path} must hold a JSON object, not {type(data).__name__}.")
    return data


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def find_weights(base: Path) -> list[str]:
    """Names of BASE's weight files (shard indexes included); :class:`ExportError` when there are
    none or an index names a missing shard."""
    names = sorted(p.name for p in base.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    for index_name in WEIGHT_INDEXES:
        index_path = base / index_name
        if not index_path.is_file():
            continue
        shards = sorted(set(_read_json(index_path).get("weight_map", {}).values()))
        missing = [s for s in shards if not (base / s).is_file()]
        if missing:
            raise ExportError(f"{index_path} names shard(s) missing from BASE: {', '.join(missing)}.")
        names.append(index_name)
    if not any(n.endswith(WEIGHT_SUFFIXES) for n in names):
        raise ExportError(
            f"BASE {base} has no weights: expected model.safetensors, sharded model-*.safetensors with "
            "model.safetensors.index.json, or pytorch_model*.bin."
        )
    return sorted(names)


def _base_license(base: Path) -> str | None:
    """The ``license:`` of BASE's model card front matter, if any (no YAML library needed)."""
    card = base / "README.md"
    if not card.is_file():
        return None
    text = card.read_text(encoding="utf-8", errors="replace")
    front = re.match(r"^---\s*\n(.*?)\n---", text, flags=re.DOTALL)
    match = front and re.search(r"^license:\s*['\"]?([^'\"\n]+?)['\"]?\s*$", front.group(1), flags=re.MULTILINE)
    return match.group(1) if match else None


def _hub_id_of_cache_path(base: Path) -> str | None:
    """``org/name`` when BASE is a huggingface_hub cache snapshot (``models--org--name/snapshots/...``)."""
    for part in base.parts:
        if part.startswith("models--"):
            return part[len("models--"):].replace("--", "/", 1)
    return None


# -------------------------------------------------------------------------------------- writing OUT


def _check_out(out: Path, base: Path, force: bool) -> list[str]:
    """Refuse an OUT that would touch BASE or clobber files this command did not write; return the
    files of a previous export into OUT (to be replaced)."""
    resolved = out.resolve()
    if resolved == base or base in resolved.parents or resolved in base.parents:
        raise ExportError(f"OUT {out} must not be BASE, inside it or above it (BASE is never modified).")
    if out.exists() and not out.is_dir():
        raise ExportError(f"OUT {out} exists and is not a folder.")
    if not out.exists() or not any(out.iterdir()):
        return []
    marker = out / MARKER
    if marker.is_file():
        return list(_read_json(marker).get("files", []))
    if not force:
        raise ExportError(
            f"OUT {out} is not empty and was not written by pixelprune export; choose an empty folder "
            "or pass --force to overwrite the files the export writes there."
        )
    return []


def _remove(path: Path) -> None:
    # Unlink first: writing through a symlink left by --link-weights would modify BASE.
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        raise ExportError(f"{path} is a folder where the export writes a file; remove it first.")


def _transfer_weights(base: Path, out: Path, names: Sequence[str], mode: str) -> str:
    """Link (symlink, falling back to a copy where links fail) or copy the weight files, with a
    progress bar over the bytes copied; returns the mode actually used."""
    to_copy = []
    for name in names:
        if mode == "link":
            try:
                os.symlink((base / name).resolve(), out / name)
                continue
            except OSError as exc:
                logger.warning("Cannot link %s (%s); copying instead", name, exc)
                mode = "copy"
        to_copy.append(name)
    if not to_copy:
        return mode
    total = sum((base / n).stat().st_size for n in to_copy)
    try:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="Copying weights", disable=None)
    except ImportError:  # the progress bar is optional: log each file instead
        bar = None
    chunk = 16 * 1024 * 1024
    for name in to_copy:
        logger.info("Copying %s", name)
        with open(base / name, "rb") as src, open(out / name, "wb") as dst:
            while block := src.read(chunk):
                dst.write(block)
                if bar is not None:
                    bar.update(len(block))
        shutil.copystat(base / name, out / name)
    if bar is not None:
        bar.close()
    return mode


def _with_processor_class(data: dict[str, Any], family: Family) -> dict[str, Any]:
    return {**data, "processor_class": family.processor_class} if "processor_class" in data else data


def _export_command(base: str, out: Path, settings: PixelPruneSettings, weights: str, push_to_hub: str | None) -> str:
    parts = ["pixelprune", "export", base, str(out), "--threshold", f"{settings.threshold:g}",
             "--metric", settings.metric, "--method", settings.method, f"--{weights}-weights"]
    if push_to_hub:
        parts += ["--push-to-hub", push_to_hub]
    return shlex.join(parts)


def export(
    base: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    settings: PixelPruneSettings | None = None,
    weights: str = "link",
    force: bool = False,
    sample_images: Sequence[str | os.PathLike[str]] | None = None,
    base_model: str | None = None,
    license: str | None = None,
    push_to_hub: str | None = None,
    private: bool = False,
) -> ExportResult:
    """Write a Hub-ready PixelPrune repo for ``base`` (local checkpoint folder or Hub id) into ``out``.

    Args:
        settings: PixelPrune settings saved in ``processor_config.json`` (default: defaults, lossless).
        weights: ``"link"`` (symlinks into BASE; copies where links are impossible) or ``"copy"``.
        force: allow a non-empty ``out`` that this command did not write (its other files stay).
        sample_images: images for the card's retention table (default: pixelprune's samples).
        base_model / license: card metadata when they cannot be read from BASE.
        push_to_hub: upload ``out`` to this Hub repo id (created if needed; ``private`` then applies).

    Raises:
        ExportError: one message saying what is wrong (bad BASE, unsupported model type, missing
            weights, OUT not ours, remote code that would not load).
    """
    if weights not in _WEIGHT_MODES:
        raise ExportError(f"weights={weights!r} is invalid; allowed: {', '.join(_WEIGHT_MODES)}.")
    settings = settings or PixelPruneSettings()
    base_arg = os.fspath(base)
    base_dir, hub_id = resolve_base(base_arg)
    out = Path(out).expanduser()

    config_path = base_dir / "config.json"
    if not config_path.is_file():
        raise ExportError(f"BASE {base_dir} has no config.json: it is not a transformers checkpoint folder.")
    config = _read_json(config_path)
    try:
        family = detect_family(config, source=str(config_path))
    except FamilyError as exc:
        raise ExportError(str(exc)) from None
    weight_files = find_weights(base_dir)
    for what, candidates in REQUIRED_PROCESSOR_FILES.items():
        if not any((base_dir / c).is_file() for c in candidates):
            raise ExportError(f"BASE {base_dir} has no {what} ({' or '.join(candidates)}).")
    previous = _check_out(out, base_dir, force)

    # Everything that can fail is computed before OUT is touched.
    try:
        remote_files = flatten_modules([family.model_module, family.processor_module], version=__version__)
    except RemoteCodeError as exc:
        raise ExportError(str(exc)) from None
    remote_names = {f.name for f in remote_files}
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
    images = default_sample_images() if sample_images is None else [Path(p) for p in sample_images]
    geometry = preprocess_config_from_dict(_read_json(base_dir / "preprocessor_config.json"))
    retention = {_setting_label(settings): measure_retention(images, settings, geometry)}
    if settings.threshold > 0:
        retention[_setting_label(PixelPruneSettings())] = measure_retention(images, PixelPruneSettings(), geometry)

    out.mkdir(parents=True, exist_ok=True)
    written = sorted({*base_files, *REWRITTEN, *remote_names})
    for name in sorted(set(previous) | set(written)):
        _remove(out / name)

    for name in base_files:
        if name in weight_files:
            continue
        if name in PROCESSOR_CLASS_CONFIGS:
            _write_json(out / name, _with_processor_class(_read_json(base_dir / name), family))
        else:
            shutil.copyfile(base_dir / name, out / name)
    mode = _transfer_weights(base_dir, out, [n for n in weight_files if n in base_files], weights)

    model_config = {k: v for k, v in config.items() if k != "auto_map"}
    model_config["architectures"] = [family.architecture]
    model_config["auto_map"] = dict(family.auto_map)
    _write_json(out / "config.json", model_config)

    processor_path = base_dir / "processor_config.json"
    processor_config = _read_json(processor_path) if processor_path.is_file() else {}
    processor_config.update(
        processor_class=family.processor_class,
        auto_map={**processor_config.get("auto_map", {}), **family.processor_auto_map},
        pixelprune=settings.to_dict(),
    )
    _write_json(out / "processor_config.json", processor_config)

    for remote in remote_files:
        (out / remote.name).write_text(remote.text, encoding="utf-8")

    card_base = base_model or hub_id or _hub_id_of_cache_path(base_dir)
    card = CardContext(
        family=family,
        settings=settings,
        repo_name=push_to_hub or str(out),
        base_model=card_base,
        base_label=card_base or base_dir.name,
        license=license or _base_license(base_dir),
        export_command=_export_command(base_arg, out, settings, weights, push_to_hub),
        retention=retention,
    )
    (out / "README.md").write_text(render_model_card(card), encoding="utf-8")
    _write_json(out / MARKER, {
        "generator": "pixelprune export",
        "pixelprune_version": __version__,
        "model_type": family.model_type,
        "base": base_arg,
        "settings": settings.to_dict(),
        "weights": mode,
        "files": written,
    })
    logger.info("Exported %s (%s) to %s", base_arg, family.display_name, out)
    result = ExportResult(out=out, family=family, files=written, weights=weight_files, weights_mode=mode, retention=retention)
    if push_to_hub:
        result.pushed_to = push_folder(out, push_to_hub, private=private)
    return result


def _setting_label(settings: PixelPruneSettings) -> str:
    if settings.threshold == 0:
        return "threshold 0 (lossless)"
    return f"threshold {settings.threshold:g} ({settings.metric}, {'anchored' if settings.is_anchored else 'sliding'})"


def push_folder(out: Path, repo_id: str, *, private: bool = False) -> str:
    """Create ``repo_id`` on the Hub if needed and upload ``out`` (without the export marker);
    returns the repo URL. Needs a token (``huggingface-cli login`` or ``HF_TOKEN``)."""
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise ExportError("--push-to-hub needs huggingface_hub (pip install 'pixelprune[hub]').") from None
    api = HfApi()
    try:
        url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(
            folder_path=str(out),
            repo_id=repo_id,
            repo_type="model",
            ignore_patterns=[MARKER],
            commit_message="PixelPrune export (pixelprune export)",
        )
    except Exception as exc:  # noqa: BLE001 - auth / network / permission errors: one clear message
        raise ExportError(f"Uploading {out} to the Hub repo {repo_id!r} failed: {exc}") from exc
    return str(url)


# ------------------------------------------------------------------------------------------- the CLI


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add ``pixelprune export``'s arguments to ``parser``."""
    parser.add_argument("base", metavar="BASE", help="stock checkpoint: a local folder or a Hub model id")
    parser.add_argument("out", metavar="OUT", help="folder to write the PixelPrune repo into")
    parser.add_argument("--threshold", type=float, default=0.0,
                        help="saved threshold tau >= 0 in [0, 1] pixel units (default 0: lossless)")
    parser.add_argument("--metric", default="max", help=f"saved distance metric: {', '.join(METRICS)} (default max)")
    parser.add_argument("--method", default="pred_2d", help=f"saved selection method: {', '.join(METHODS)} (default pred_2d)")
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument("--link-weights", dest="weights", action="store_const", const="link",
                         help="symlink the weight files to BASE's (default; copies where links fail)")
    weights.add_argument("--copy-weights", dest="weights", action="store_const", const="copy",
                         help="copy the weight files (with a progress bar)")
    parser.set_defaults(weights="link")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="upload OUT to this Hub repo (created if needed)")
    parser.add_argument("--private", action="store_true", help="create the Hub repo private (with --push-to-hub)")
    parser.add_argument("--force", action="store_true",
                        help="write into a non-empty OUT that pixelprune export did not write")
    parser.add_argument("--sample-images", nargs="+", metavar="IMAGE",
                        help="images for the model card's retention table (default: pixelprune's samples)")
    parser.add_argument("--base-model", metavar="REPO_ID",
                        help="base_model for the model card when BASE is a local folder")
    parser.add_argument("--license", help="license for the model card when BASE's README has none")


def run(args: argparse.Namespace) -> int:
    """Run ``pixelprune export``; 0 on success, 1 with a one-line error otherwise, 2 for bad usage."""
    if args.private and not args.push_to_hub:
        print("pixelprune export: error: --private only applies with --push-to-hub REPO_ID.", file=sys.stderr)
        return 2
    try:
        settings = PixelPruneSettings(threshold=args.threshold, metric=args.metric, method=args.method)
    except ValueError as exc:
        print(f"pixelprune export: error: {exc}", file=sys.stderr)
        return 2
    try:
        result = export(
            args.base, args.out, settings=settings, weights=args.weights, force=args.force,
            sample_images=args.sample_images, base_model=args.base_model, license=args.license,
            push_to_hub=args.push_to_hub, private=args.private,
        )
    except ExportError as exc:
        print(f"pixelprune export: error: {exc}", file=sys.stderr)
        return 1
    print(f"Exported {result.family.display_name} ({result.family.model_type}) to {result.out}: "
          f"{len(result.files)} files, weights {'linked' if result.weights_mode == 'link' else 'copied'}.")
    for label, rows in result.retention.items():
        kept, total = sum(r.kept for r in rows), sum(r.tokens for r in rows)
        if total:
            print(f"Sample images, {label}: {kept} / {total} tokens kept ({kept / total:.1%}).")
    if result.pushed_to:
        print(f"Uploaded to {result.pushed_to}")
    return 0
