"""``pixelprune inspect``: the command line around :mod:`pixelprune.inspection` (argument parsing,
the table / JSON output and the overlay files), for images and videos (the video parts are in
:mod:`pixelprune.inspect_videos`).

Overlay files (``--overlay DIR``): ``DIR/<stem>_overlay.png`` per image (per video, also
``<stem>_overlay.gif``), ``<stem>_overlay-2.png``, ``-3`` ... for later inputs with the same stem.
Every target is checked before any file is processed: an existing file there is refused unless
``--force`` (then it is replaced atomically), and a symbolic link or a folder there is always
refused (never written through or replaced). Nothing else is ever written.
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
from pathlib import Path
from typing import TextIO

import torch

from .core.selector import PatchGeometry, select_masks
from .core.settings import PixelPruneSettings, resolve_settings
from .core.video_selector import select_video_masks
from .inspect_videos import add_video_arguments, format_video_table, render_video_overlays, video_config_from_args
from .inspection import InspectError, InspectResult, VideoInspectResult, inspect_image, inspect_video, is_video
from .processing.image_preprocessing import ImagePreprocessConfig
from .safe_files import create_new, replace_file
from .settings_options import add_settings_arguments, settings_overrides
from .video_files import VideoError

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


def overlay_paths(directory: Path, files: list[Path], videos: list[bool] | None = None) -> list[list[Path]]:
    """Per input, its overlay files: ``DIR/<stem>_overlay.png`` (a video also ``.gif``); later inputs
    with an already used name get ``<stem>_overlay-2``, ``-3``, ... (in input order, so reruns name
    them the same)."""
    videos = [False] * len(files) if videos is None else videos
    used: set[Path] = set()
    paths = []
    for file, video in zip(files, videos):
        suffixes = (".png", ".gif") if video else (".png",)
        name, n = f"{file.stem}_overlay", 2
        while any(directory / f"{name}{suffix}" in used for suffix in (".png", ".gif")):
            name, n = f"{file.stem}_overlay-{n}", n + 1
        targets = [directory / f"{name}{suffix}" for suffix in suffixes]
        used.update(targets)
        paths.append(targets)
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
    parser.add_argument(
        "images", metavar="FILE", nargs="+", type=Path,
        help="image files (PNG, JPEG, ...) and video files (.mp4, .mkv, .webm, .mov, .avi, ...)",
    )
    add_settings_arguments(parser, defaults_from="PIXELPRUNE_* environment, else threshold 0, max, pred_2d")
    defaults = ImagePreprocessConfig()
    parser.add_argument(
        "--min-pixels", type=int, default=None, metavar="N",
        help=f"image processor's minimum pixels per image (default {defaults.min_pixels}; videos: --video-min-pixels)",
    )
    parser.add_argument(
        "--max-pixels", type=int, default=None, metavar="N",
        help=f"image processor's maximum pixels per image (default {defaults.max_pixels}; videos: --video-max-pixels)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object per file per line")
    parser.add_argument(
        "--overlay", type=Path, default=None, metavar="DIR",
        help="write DIR/<stem>_overlay.png showing kept and pruned tokens (videos: a contact sheet of the slices, "
             "and DIR/<stem>_overlay.gif, animated; same stems: _overlay-2, ...)",
    )
    parser.add_argument(
        "--force", action="store_true",
        help="replace existing overlay files (symbolic links and folders are never replaced)",
    )
    add_video_arguments(parser)


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
    """Run ``pixelprune inspect``. Returns 0 if every file was inspected, 1 if any failed or the
    overlay targets are refused (nothing is inspected then).

    Invalid settings go to ``parser.error`` (exit status 2) when a parser is given, else raise
    ``ValueError``.
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    prog = parser.prog if parser is not None else "pixelprune inspect"
    try:
        settings = settings_from_args(args)
        config = ImagePreprocessConfig(**{
            name: value for name, value in (("min_pixels", args.min_pixels), ("max_pixels", args.max_pixels))
            if value is not None
        })
        video_config = video_config_from_args(args)
    except ValueError as exc:
        if parser is None:
            raise
        parser.error(str(exc))
    files: list[Path] = list(args.images)
    videos = [is_video(path) for path in files]
    _warn_unused_options(args, videos)
    targets: list[list[Path]] = [[] for _ in files]
    if args.overlay is not None:
        targets = overlay_paths(args.overlay, files, videos)
        problems = _overlay_conflicts([t for group in targets for t in group], getattr(args, "force", False))
        if problems:
            for problem in problems:
                print(f"{prog}: error: overlay {problem}; nothing was written.", file=err)
            return 1
        try:
            args.overlay.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            print(f"{prog}: error: cannot create overlay directory {args.overlay}: {exc.strerror or exc}", file=err)
            return 1
    logger.debug("settings %s, preprocessing %s, videos %s", settings, config, video_config)
    _warm_up(video=any(videos))
    failed = 0
    results: list[InspectResult | VideoInspectResult] = []
    for path, video, paths in zip(files, videos, targets):
        try:
            if video:
                result, frames, keep = inspect_video(path, settings, video_config)
            else:
                result, pre, keep = inspect_image(path, settings, config)
        except (InspectError, VideoError) as exc:
            failed += 1
            print(f"{prog}: error: {path}: {exc}", file=err)
            continue
        if paths:
            replace = getattr(args, "force", False)
            try:
                if video:
                    contents = render_video_overlays(result, frames, keep, settings, config.factor)
                else:
                    contents = (_image_overlay(pre.resized, keep, config.factor, _overlay_caption(result, settings)),)
                for target, data in zip(paths, contents):
                    _write_overlay(target, data, replace=replace)
                    logger.info("wrote %s", target)
            except OSError as exc:
                failed += 1
                print(f"{prog}: error: {path}: cannot write overlay {target}: {exc}", file=err)
                continue
            result.overlay = str(paths[0])
            if video:
                result.animation = str(paths[1])
        results.append(result)
        if args.json:
            print(result.to_json(), file=out)
        else:
            if len(results) == 1:
                print(f"PixelPrune inspect: {_describe_settings(settings)}", file=out)
            print("", file=out)
            print(format_video_table(result, _tflops) if video else format_table(result), file=out)
        out.flush()
    if not args.json and len(results) > 1:
        tokens, kept = sum(r.tokens for r in results), sum(r.kept for r in results)
        print(f"\nTotal: {kept} / {tokens} tokens kept ({100 * kept / tokens:.1f} %) in {_count_files(results)}", file=out)
    if failed:
        logger.info("%d of %d file(s) failed", failed, len(files))
    return 1 if failed else 0


def _warn_unused_options(args: argparse.Namespace, videos: list[bool]) -> None:
    """Options for one kind of file given when there is no file of that kind: say so (never drop a
    setting silently)."""
    unused = []
    if all(videos):
        unused += [flag for flag, name in (("--min-pixels", "min_pixels"), ("--max-pixels", "max_pixels"))
                   if getattr(args, name, None) is not None]
    if not any(videos):
        unused += [flag for flag, name in (("--fps", "fps"), ("--video-min-pixels", "video_min_pixels"),
                                           ("--video-max-pixels", "video_max_pixels"))
                   if getattr(args, name, None) is not None]
    if unused:
        kind = "images" if all(videos) else "videos"
        logger.warning("%s only apply to %s, and there are none among the files", ", ".join(unused), kind)


def _count_files(results: list[InspectResult | VideoInspectResult]) -> str:
    """``"3 images"``, ``"1 video"``, ``"2 images and 1 video"``."""
    n_videos = sum(isinstance(r, VideoInspectResult) for r in results)
    counts = [(len(results) - n_videos, "image"), (n_videos, "video")]
    return " and ".join(f"{n} {noun}{'s' if n > 1 else ''}" for n, noun in counts if n)


def _image_overlay(resized, keep, token_size: int, caption: str) -> bytes:
    """One image's overlay PNG."""
    from .overlay import render_overlay

    buffer = io.BytesIO()
    render_overlay(resized, keep, token_size=token_size, caption=caption).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _write_overlay(target: Path, data: bytes, *, replace: bool) -> None:
    """Write one overlay file without following a symlink at ``target``; an existing file is
    replaced only when ``replace`` (checked again at write time: ``FileExistsError`` otherwise)."""
    if replace and target.exists() and not target.is_symlink():
        replace_file(target, data)
    else:
        create_new(target, data)


_WARMED_UP: set[str] = set()


def _warm_up(*, video: bool = False) -> None:
    """Run the selector once on a tiny grid so the first file's time excludes one-off start-up."""
    geometry, settings = PatchGeometry(), PixelPruneSettings()
    if "image" not in _WARMED_UP:
        select_masks(torch.zeros(16, 1536), [[1, 4, 4]], geometry, settings)
        _WARMED_UP.add("image")
    if video and "video" not in _WARMED_UP:
        select_video_masks(torch.zeros(32, 1536), [[2, 4, 4]], geometry, settings)
        _WARMED_UP.add("video")
