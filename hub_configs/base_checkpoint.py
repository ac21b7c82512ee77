"""Reading the base checkpoint of ``pixelprune export`` (never written to).

BASE is a local folder or a Hub id (downloaded with ``huggingface_hub.snapshot_download``). Its
processor configuration is read the way transformers' ``AutoProcessor`` reads it, so every layout
transformers loads is accepted:

* the Hub layout: ``preprocessor_config.json`` (image processor), ``video_preprocessor_config.json``
  and an optional ``processor_config.json`` holding only the processor's own keys;
* the transformers 5.x ``save_pretrained`` layout: one ``processor_config.json`` with the image and
  video processor configs nested under ``image_processor`` / ``video_processor`` (a nested entry
  wins over a separate file, as in ``ImageProcessingMixin.get_image_processor_dict``).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.settings import PixelPruneSettings
from .errors import ExportError
from .families import Family, FamilyError, detect_family

__all__ = ["BaseCheckpoint", "find_weights", "read_base", "read_json", "resolve_base"]

logger = logging.getLogger(__name__)

WEIGHT_SUFFIXES: tuple[str, ...] = (".safetensors", ".bin", ".pt", ".pth")
WEIGHT_INDEXES: tuple[str, ...] = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
IMAGE_PROCESSOR_FILE = "preprocessor_config.json"
PROCESSOR_FILE = "processor_config.json"
TOKENIZER_FILES: tuple[str, ...] = ("tokenizer.json", "tokenizer_config.json", "vocab.json")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(frozen=True)
class BaseCheckpoint:
    """What the exporter needs to know about BASE, all checked."""

    path: Path
    hub_id: str | None  # the Hub id BASE was downloaded from, None for a local folder
    config: dict[str, Any]
    family: Family
    weights: tuple[str, ...]  # weight files and shard indexes
    processor_config: dict[str, Any]  # processor_config.json ({} when absent)
    image_processor: dict[str, Any]  # the image processor config, wherever it is kept
    saved_settings: dict[str, Any] | None  # a ``pixelprune`` block BASE already carries

    @property
    def vision_config(self) -> dict[str, Any]:
        return dict(self.config.get("vision_config") or {})


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; :class:`ExportError` naming the file otherwise."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"{path} is not readable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ExportError(f"{path} must hold a JSON object, not {type(data).__name__}.")
    return data


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
            "(pip install huggingface_hub)."
        ) from None
    logger.info("Downloading %s from the Hub", base)
    try:
        return Path(snapshot_download(repo_id=base, repo_type="model")).resolve(), base
    except Exception as exc:  # noqa: BLE001 - many hub/network errors; one clear message
        raise ExportError(f"BASE {base!r}: no such folder, and downloading it from the Hub failed: {exc}") from exc


def find_weights(base: Path) -> list[str]:
    """Names of BASE's weight files (shard indexes included); :class:`ExportError` when there are
    none or an index names a missing shard."""
    names = sorted(p.name for p in base.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    for index_name in WEIGHT_INDEXES:
        index_path = base / index_name
        if not index_path.is_file():
            continue
        shards = sorted(set(read_json(index_path).get("weight_map", {}).values()))
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


def _image_processor_config(base: Path, processor_config: dict[str, Any]) -> dict[str, Any]:
    """The image processor config as ``AutoImageProcessor`` finds it: nested in
    ``processor_config.json`` first, else ``preprocessor_config.json``."""
    nested = processor_config.get("image_processor")
    if nested is not None:
        if not isinstance(nested, dict):
            raise ExportError(f"{base / PROCESSOR_FILE}: 'image_processor' must be a JSON object.")
        return nested
    if (base / IMAGE_PROCESSOR_FILE).is_file():
        return read_json(base / IMAGE_PROCESSOR_FILE)
    raise ExportError(
        f"BASE {base} has no image processor ({IMAGE_PROCESSOR_FILE}, or an 'image_processor' entry in "
        f"{PROCESSOR_FILE} as transformers' save_pretrained writes it)."
    )


def _saved_settings(base: Path, processor_config: dict[str, Any]) -> dict[str, Any] | None:
    saved = processor_config.get("pixelprune")
    if saved is None:
        return None
    try:
        return PixelPruneSettings.from_dict(saved).to_dict()
    except (TypeError, ValueError) as exc:
        raise ExportError(f"{base / PROCESSOR_FILE}: its saved 'pixelprune' settings are invalid: {exc}") from None


def read_base(base: str) -> BaseCheckpoint:
    """Resolve and check BASE: config and family, weights, image processor, tokenizer."""
    path, hub_id = resolve_base(base)
    config_path = path / "config.json"
    if not config_path.is_file():
        raise ExportError(f"BASE {path} has no config.json: it is not a transformers checkpoint folder.")
    config = read_json(config_path)
    try:
        family = detect_family(config, source=str(config_path))
    except FamilyError as exc:
        raise ExportError(str(exc)) from None
    weights = find_weights(path)
    processor_config = read_json(path / PROCESSOR_FILE) if (path / PROCESSOR_FILE).is_file() else {}
    image_processor = _image_processor_config(path, processor_config)
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise ExportError(f"BASE {path} has no tokenizer ({' or '.join(TOKENIZER_FILES)}).")
    return BaseCheckpoint(
        path=path, hub_id=hub_id, config=config, family=family, weights=tuple(weights),
        processor_config=processor_config, image_processor=image_processor,
        saved_settings=_saved_settings(path, processor_config),
    )


def base_card_license(base: Path) -> str | None:
    """The ``license`` of BASE's model card metadata, if any."""
    card = base / "README.md"
    if not card.is_file():
        return None
    try:
        from huggingface_hub import ModelCard

        license_ = ModelCard.load(card).data.license
    except Exception as exc:  # noqa: BLE001 - a broken base card only loses its metadata
        logger.warning("Cannot read the license from %s: %s", card, exc)
        return None
    return license_ if isinstance(license_, str) and license_ else None


def _hub_id_or_none(value: Any) -> str | None:
    """``value`` if it is an ``org/name`` Hub id (never a local path)."""
    if not isinstance(value, str) or value.count("/") != 1 or not _HUB_ID.match(value):
        return None
    if value.startswith((".", "~")) or Path(value).exists():
        return None
    return value


def _hub_id_of_cache_path(base: Path) -> str | None:
    """``org/name`` when BASE is a huggingface_hub cache snapshot (``models--org--name/snapshots/...``)."""
    for part in base.parts:
        if part.startswith("models--"):
            return part[len("models--"):].replace("--", "/", 1)
    return None


def infer_base_model(base: BaseCheckpoint) -> str | None:
    """The Hub id BASE came from: the id it was downloaded by, a Hub cache path, or the
    ``_name_or_path`` its config carries (when that is a Hub id, not a local path)."""
    return (
        base.hub_id
        or _hub_id_of_cache_path(base.path)
        or _hub_id_or_none(base.config.get("_name_or_path"))
        or _hub_id_or_none(base.processor_config.get("_name_or_path"))
    )
