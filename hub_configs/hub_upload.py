"""``pixelprune export --push-to-hub``: upload an exported folder with ``huggingface_hub``."""

from __future__ import annotations

from pathlib import Path

from .errors import ExportError
from .out_folder import MARKER, STAGING_PREFIX

__all__ = ["push_folder"]


def push_folder(out: Path, repo_id: str, *, private: bool = False) -> str:
    """Create ``repo_id`` on the Hub if needed and upload ``out`` (without the export marker);
    returns the repo URL. Needs a token (``hf auth login`` or ``HF_TOKEN``)."""
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise ExportError("--push-to-hub needs huggingface_hub (pip install huggingface_hub).") from None
    api = HfApi()
    try:
        url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(
            folder_path=str(out),
            repo_id=repo_id,
            repo_type="model",
            ignore_patterns=[MARKER, f"{STAGING_PREFIX}*"],
            commit_message="PixelPrune export (pixelprune export)",
        )
    except Exception as exc:  # noqa: BLE001 - auth / network / permission errors: one clear message
        raise ExportError(f"Uploading {out} to the Hub repo {repo_id!r} failed: {exc}") from exc
    return str(url)
