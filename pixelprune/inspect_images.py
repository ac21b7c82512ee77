"""``pixelprune inspect``: the command line around :mod:`pixelprune.inspection` (argument parsing,
the table / JSON output and the overlay files).

Overlay files (``--overlay DIR``): ``DIR/<stem>_overlay.png`` per image, ``<stem>_overlay-2.png``,
``-3`` ... for later inputs with the same stem. Every target is checked before any image is
processed: an existing file there is refused unless ``--force`` (then it is replaced atomically),
and a symbolic link or a folder there is always refused (never written through or replaced).
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
from pathlib import Path
from typing import TextIO

import torch

from .core.selector import select_tokens
from .core.settings import PixelPruneSettings, resolve_settings
from .inspection import InspectError, InspectResult, inspect_image
from .processing.image_preprocessing import ImagePreprocessConfig
from .safe_files import create_new, replace_file
from .settings_options import add_settings_arguments, settings_overrides

__all__ = ["configure_parser", "format_table", "overlay_paths", "run", "settings_from_args"]

logger = logging.getLogger(__name__)


def _describe_settings(settings: PixelPruneSettings) -> str:
    threshold = "0 (lossless)" if settings.threshold == 0 else f"{settings.threshold:g}"
    mode = "anchored" if settings.is_anchored else "sliding"
    return f"threshold {threshold}, metric {settings.metric}, method {settings.method}, {mode}"


def _tflops(flops: int) -> str:
    return f"{flops / 1e12:.2f}" if flops >= 1e10 else f"{flops / 1e12:.4f}"


def format_table(result: InspectResult) -> str:
    """The human-readable block printed for one image."""
    rows, cols = result.token_grid
    lines = [
        result.image,
        f"  image size       {result.width} x {result.height} px, "
        f"resized to {result.resized_width} x {result.resized_height} px",
        f"  token grid       {rows} x {cols} tokens of 32 x 32 px (grid_thw {result.grid_thw})",
        f"  tokens kept      {result.kept} / {result.tokens} ({100 * result.retention:.1f} %), "
        f"{result.pruned} pruned",
        f"  ViT FLOPs saved  {100 * result.vit_flops_saved:.1f} % "
        f"({_tflops(result.vit_flops_full)} -> {_tflops(result.vit_flops_kept)} TFLOPs, "
        "Qwen3-VL-2B vision tower, estimated)",
        f"  selector time    {result.selector_ms:.1f} ms",
    ]
    if result.overlay:
        lines.append(f"  overlay          {result.overlay}")
    return "\n".join(lines)


def _overlay_caption(result: InspectResult, settings: PixelPruneSettings) -> str:
    threshold = "lossless" if settings.threshold == 0 else f"threshold {settings.threshold:g} {settings.metric}"
    return (
        f"PixelPrune: {result.kept} / {result.tokens} tokens kept ({100 * result.retention:.1f} %), "
        f"{result.token_grid[0]} x {result.token_grid[1]} grid, {threshold}, {settings.method}"
    )


def overlay_paths(directory: Path, images: list[Path]) -> list[Path]:
    """``DIR/<stem>_overlay.png`` per image; later images with an already used stem get
    ``<stem>_overlay-2.png``, ``-3``, ... (in input order, so reruns name them the same)."""
    used: set[Path] = set()
    paths = []
    for image in images:
        candidate, n = directory / f"{image.stem}_overlay.png", 2
        while candidate in used:
            candidate, n = directory / f"{image.stem}_overlay-{n}.png", n + 1
        used.add(candidate)
        paths.append(candidate)
    return paths


def _overlay_conflicts(targets: list[Path], force: bool) -> list[str]:
    """Why each target cannot be written: a link or folder always, an existing file without force."""
    problems = []
    for target in targets:
        if target.is_symlink():
            problems.append(f"{target} is a symbolic link (never written through or replaced)")
        elif target.is_dir():
            problems.append(f"{target} is a folder")
        elif target.exists() and not force:
            problems.append(f"{target} exists (pass --force to replace it)")
    return problems


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``pixelprune inspect``."""
    parser.add_argument("images", metavar="IMAGE", nargs="+", type=Path, help="image files (PNG, JPEG, ...)")
    add_settings_arguments(parser, defaults_from="PIXELPRUNE_* environment, else threshold 0, max, pred_2d")
    defaults = ImagePreprocessConfig()
    parser.add_argument(
        "--min-pixels", type=int, default=defaults.min_pixels, metavar="N",
        help=f"processor's minimum pixels per image (default {defaults.min_pixels})",
    )
    parser.add_argument(
        "--max-pixels", type=int, default=defaults.max_pixels, metavar="N",
        help=f"processor's maximum pixels per image (default {defaults.max_pixels})",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object per image per line")
    parser.add_argument(
        "--overlay", type=Path, default=None, metavar="DIR",
        help="write DIR/<image stem>_overlay.png showing kept and pruned tokens (same stems: _overlay-2, ...)",
    )
    parser.add_argument(
        "--force", action="store_true",
        help="replace existing overlay files (symbolic links and folders are never replaced)",
    )


def settings_from_args(args: argparse.Namespace) -> PixelPruneSettings:
    """Defaults < ``PIXELPRUNE_*`` environment variables < command-line flags (explicit arguments,
    :func:`~pixelprune.core.settings.resolve_settings`). Raises ``ValueError`` naming an invalid
    value and the allowed ones."""
    return resolve_settings(explicit=settings_overrides(args))


def run(
    args: argparse.Namespace,
    parser: argparse.ArgumentParser | None = None,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run ``pixelprune inspect``. Returns 0 if every image was inspected, 1 if any failed or the
    overlay targets are refused (nothing is inspected then).

    Invalid settings go to ``parser.error`` (exit status 2) when a parser is given, else raise
    ``ValueError``.
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    prog = parser.prog if parser is not None else "pixelprune inspect"
    try:
        settings = settings_from_args(args)
        config = ImagePreprocessConfig(min_pixels=args.min_pixels, max_pixels=args.max_pixels)
    except ValueError as exc:
        if parser is None:
            raise
        parser.error(str(exc))
    targets: list[Path | None] = [None] * len(args.images)
    if args.overlay is not None:
        targets = overlay_paths(args.overlay, list(args.images))
        problems = _overlay_conflicts(targets, getattr(args, "force", False))
        if problems:
            for problem in problems:
                print(f"{prog}: error: overlay {problem}; nothing was written.", file=err)
            return 1
        try:
            args.overlay.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            print(f"{prog}: error: cannot create overlay directory {args.overlay}: {exc.strerror or exc}", file=err)
            return 1
    logger.debug("settings %s, preprocessing %s", settings, config)
    _warm_up()
    failed = 0
    results: list[InspectResult] = []
    for path, target in zip(args.images, targets):
        try:
            result, pre, keep = inspect_image(path, settings, config)
        except InspectError as exc:
            failed += 1
            print(f"{prog}: error: {path}: {exc}", file=err)
            continue
        if target is not None:
            try:
                _write_overlay(target, pre.resized, keep, config.factor, _overlay_caption(result, settings),
                               replace=getattr(args, "force", False))
            except OSError as exc:
                failed += 1
                print(f"{prog}: error: {path}: cannot write overlay {target}: {exc}", file=err)
                continue
            result.overlay = str(target)
            logger.info("wrote %s", target)
        results.append(result)
        if args.json:
            print(result.to_json(), file=out)
        else:
            if len(results) == 1:
                print(f"PixelPrune inspect: {_describe_settings(settings)}", file=out)
            print("", file=out)
            print(format_table(result), file=out)
        out.flush()
    if not args.json and len(results) > 1:
        tokens, kept = sum(r.tokens for r in results), sum(r.kept for r in results)
        print(f"\nTotal: {kept} / {tokens} tokens kept ({100 * kept / tokens:.1f} %) in {len(results)} images", file=out)
    if failed:
        logger.info("%d of %d image(s) failed", failed, len(args.images))
    return 1 if failed else 0


def _write_overlay(target: Path, resized, keep, token_size: int, caption: str, *, replace: bool) -> None:
    """Render and write one overlay PNG without following a symlink at ``target``; an existing file
    is replaced only when ``replace`` (checked again at write time: ``FileExistsError`` otherwise)."""
    from .overlay import render_overlay

    buffer = io.BytesIO()
    render_overlay(resized, keep, token_size=token_size, caption=caption).save(buffer, format="PNG", optimize=True)
    if replace and target.exists() and not target.is_symlink():
        replace_file(target, buffer.getvalue())
    else:
        create_new(target, buffer.getvalue())


_WARMED_UP = False


def _warm_up() -> None:
    """Run the selector once on a tiny grid so the first image's time excludes one-off start-up."""
    global _WARMED_UP
    if not _WARMED_UP:
        select_tokens(torch.zeros(16, 1536), [[1, 4, 4]])
        _WARMED_UP = True
