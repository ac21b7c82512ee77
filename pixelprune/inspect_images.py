"""``pixelprune inspect``: what PixelPrune does to a person's own images, with no model weights.

Each image is preprocessed exactly as the stock Qwen3-VL image processor does by default
(:mod:`pixelprune.processing.image_preprocessing`), then :func:`pixelprune.select_tokens` picks the
tokens to keep. Per image the command reports sizes, the token grid, kept tokens, the estimated
vision-tower FLOPs saved (:mod:`pixelprune.vit_flops`) and the selector's time, as a readable table
or as JSON lines, and can draw an overlay picture (:mod:`pixelprune.overlay`).

Why our own preprocessing rather than transformers' processor even when transformers is installed:
it is bit-identical to transformers' PIL backend (tested), needs neither transformers nor
torchvision, and gives the same answer on every machine. transformers picks its torchvision backend
when torchvision is installed, whose resampling differs slightly from PIL's (see
:mod:`pixelprune.processing.image_preprocessing`); images whose sides are already multiples of
32 px within the pixel budget are not resampled and are identical under both.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

from .processing.image_preprocessing import ImagePreprocessConfig, PreprocessedImage, preprocess_image
from .core.selector import select_tokens
from .core.settings import PixelPruneSettings
from .vit_flops import estimate_vit_flops

__all__ = ["InspectError", "InspectResult", "configure_parser", "format_table", "inspect_image", "run"]

logger = logging.getLogger(__name__)


class InspectError(Exception):
    """An image that cannot be inspected; the message names the reason (the caller adds the path)."""


@dataclass
class InspectResult:
    """What ``pixelprune inspect`` reports for one image (also its ``--json`` object)."""

    image: str
    width: int
    height: int
    resized_width: int
    resized_height: int
    grid_thw: list[int]  # the processor's patch grid (1, H/16, W/16)
    token_grid: list[int]  # merged tokens (rows, columns) = grid / merge_size
    tokens: int
    kept: int
    pruned: int
    retention: float  # kept / tokens
    kept_indices: list[int] = field(repr=False)  # raster order over token_grid
    selector_ms: float = 0.0
    preprocess_ms: float = 0.0
    vit_flops_full: int = 0
    vit_flops_kept: int = 0
    vit_flops_saved: float = 0.0  # fraction of vit_flops_full
    settings: dict[str, Any] = field(default_factory=dict)
    overlay: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(", ", ": "))


def load_image(path: Path) -> Any:
    """Open ``path`` with PIL and decode it fully; :class:`InspectError` says why it can't be."""
    from PIL import Image, UnidentifiedImageError

    if path.is_dir():
        raise InspectError("is a directory, not an image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
            image.load()
    except FileNotFoundError:
        raise InspectError("no such file") from None
    except PermissionError:
        raise InspectError("permission denied") from None
    except UnidentifiedImageError:
        raise InspectError("not an image (Pillow cannot identify the file format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InspectError(f"too large to decode safely ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt data
        raise InspectError(f"cannot decode image data ({exc})") from None
    if getattr(image, "n_frames", 1) > 1:
        logger.info("%s has %d frames; inspecting the first", path, image.n_frames)
    return image


def inspect_image(
    path: Path,
    settings: PixelPruneSettings,
    config: ImagePreprocessConfig,
) -> tuple[InspectResult, PreprocessedImage, np.ndarray]:
    """Preprocess and select one image. Returns the result, the preprocessed image and the keep
    grid ``(rows, columns)`` bool. Raises :class:`InspectError` for unusable files."""
    image = load_image(path)
    start = time.perf_counter()
    try:
        pre = preprocess_image(image, config)
    except ValueError as exc:
        raise InspectError(str(exc)) from None
    preprocess_ms = (time.perf_counter() - start) * 1e3
    pixel_values = torch.from_numpy(pre.pixel_values)
    grid = torch.tensor([pre.grid_thw], dtype=torch.int64)
    start = time.perf_counter()
    kept_indices = select_tokens(
        pixel_values, grid,
        merge_size=config.merge_size, temporal_patch_size=config.temporal_patch_size,
        patch_size=config.patch_size, image_mean=config.image_mean, image_std=config.image_std,
        threshold=settings.threshold, metric=settings.metric, method=settings.method,
        anchored=settings.anchored,
    )[0]
    selector_ms = (time.perf_counter() - start) * 1e3
    _, gh, gw = pre.grid_thw
    rows, cols = gh // config.merge_size, gw // config.merge_size
    tokens, kept = rows * cols, int(kept_indices.numel())
    keep = np.zeros(tokens, dtype=bool)
    keep[kept_indices.numpy()] = True
    patches_per_token = config.merge_size**2
    flops = estimate_vit_flops([tokens * patches_per_token], [kept * patches_per_token])
    width, height = pre.original_size
    resized_width, resized_height = pre.resized_size
    result = InspectResult(
        image=str(path), width=width, height=height,
        resized_width=resized_width, resized_height=resized_height,
        grid_thw=list(pre.grid_thw), token_grid=[rows, cols],
        tokens=tokens, kept=kept, pruned=tokens - kept, retention=round(kept / tokens, 6),
        kept_indices=kept_indices.tolist(),
        selector_ms=round(selector_ms, 3), preprocess_ms=round(preprocess_ms, 3),
        vit_flops_full=flops.full, vit_flops_kept=flops.kept,
        vit_flops_saved=round(flops.saved_fraction, 6),
        settings=_settings_dict(settings),
    )
    logger.debug("%s: %s", path, {k: v for k, v in asdict(result).items() if k != "kept_indices"})
    return result, pre, keep.reshape(rows, cols)


def _settings_dict(settings: PixelPruneSettings) -> dict[str, Any]:
    return {
        "threshold": settings.threshold,
        "metric": settings.metric,
        "method": settings.method,
        "anchored": settings.is_anchored,
    }


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


def _overlay_path(directory: Path, image: Path, used: set[Path]) -> Path:
    """``DIR/<stem>_overlay.png``; a numbered suffix keeps same-named inputs apart."""
    candidate = directory / f"{image.stem}_overlay.png"
    n = 2
    while candidate in used:
        candidate = directory / f"{image.stem}_overlay-{n}.png"
        n += 1
    used.add(candidate)
    return candidate


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``pixelprune inspect``."""
    parser.add_argument("images", metavar="IMAGE", nargs="+", type=Path, help="image files (PNG, JPEG, ...)")
    parser.add_argument(
        "--threshold", type=float, default=None, metavar="T",
        help="similarity threshold tau >= 0 in [0, 1] pixel units (default 0: pixel-exact, lossless)",
    )
    parser.add_argument("--metric", default=None, metavar="M", help="distance: max (default), mae, rmse, exact")
    parser.add_argument(
        "--method", default=None, metavar="NAME", help="predictor: pred_2d (default), raster, serpentine"
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--anchored", dest="anchored", action="store_const", const=True, default=None,
        help="compare with reconstructions (default when threshold > 0)",
    )
    mode.add_argument(
        "--sliding", dest="anchored", action="store_const", const=False,
        help="compare with the original neighbours",
    )
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
        help="write DIR/<image>_overlay.png showing kept and pruned tokens",
    )


def settings_from_args(args: argparse.Namespace) -> PixelPruneSettings:
    """Defaults < ``PIXELPRUNE_*`` environment variables < command-line flags. Raises ``ValueError``
    naming an invalid value and the allowed ones."""
    overrides: dict[str, Any] = {
        "threshold": args.threshold, "metric": args.metric, "method": args.method,
    }
    if args.anchored is not None:
        overrides["anchored"] = args.anchored
    return PixelPruneSettings().with_env().replace(**overrides)


def run(
    args: argparse.Namespace,
    parser: argparse.ArgumentParser | None = None,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run ``pixelprune inspect``. Returns 0 if every image was inspected, 1 if any failed.

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
    if args.overlay is not None:
        try:
            args.overlay.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            print(f"{prog}: error: cannot create overlay directory {args.overlay}: {exc.strerror or exc}", file=err)
            return 1
    logger.debug("settings %s, preprocessing %s", settings, config)
    _warm_up()
    used: set[Path] = set()
    failed = 0
    results: list[InspectResult] = []
    for path in args.images:
        try:
            result, pre, keep = inspect_image(path, settings, config)
        except InspectError as exc:
            failed += 1
            print(f"{prog}: error: {path}: {exc}", file=err)
            continue
        if args.overlay is not None:
            from .overlay import render_overlay

            target = _overlay_path(args.overlay, path, used)
            picture = render_overlay(
                pre.resized, keep, token_size=config.factor, caption=_overlay_caption(result, settings)
            )
            try:
                picture.save(target, optimize=True)
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


_WARMED_UP = False


def _warm_up() -> None:
    """Run the selector once on a tiny grid so the first image's time excludes one-off start-up."""
    global _WARMED_UP
    if not _WARMED_UP:
        select_tokens(torch.zeros(16, 1536), [[1, 4, 4]])
        _WARMED_UP = True
