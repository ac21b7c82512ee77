"""``pixelprune inspect`` for video files: the video options, the table and the overlay files
(:mod:`pixelprune.inspect_images` runs the command and calls these for every video it is given).

Overlay files (``--overlay DIR``) per video: ``DIR/<stem>_overlay.png``, a contact sheet of the
temporal slices (each slice's first frame with its kept and pruned tokens, labelled with its time
and kept count), and ``DIR/<stem>_overlay.gif``, every frame the model sees with its slice's
overlay, at the sampled frame rate. Same naming, refusal and replacement rules as images.
"""

from __future__ import annotations

import argparse
import io

from .core.settings import PixelPruneSettings
from .inspection import VideoInspectResult
from .video_files import STOCK_VIDEO_PROCESSOR_CONFIG, VideoConfig

__all__ = ["add_video_arguments", "format_video_table", "render_video_overlays", "video_config_from_args"]


def add_video_arguments(parser: argparse.ArgumentParser) -> None:
    """The stock video processor's settings a user may change (``None``: the checkpoints' value)."""
    stock = STOCK_VIDEO_PROCESSOR_CONFIG
    group = parser.add_argument_group(
        "videos",
        "Videos (.mp4, .mkv, .webm, .mov, .avi, ...) are decoded with PyAV and preprocessed by the stock Qwen3-VL "
        "video processor (needs the optional packages: pip install \"pixelprune[video]\", and torchvision). "
        "They are always pruned here: the `video` setting (PIXELPRUNE_VIDEO) switches video pruning in models "
        "and processors, and is not consulted by inspect.",
    )
    group.add_argument(
        "--fps", type=float, default=None, metavar="F",
        help=f"video frames sampled per second (default {stock['fps']}, as the stock video processor)",
    )
    group.add_argument(
        "--video-min-pixels", type=int, default=None, metavar="N",
        help=f"video processor's minimum pixels of all sampled frames together (default {stock['size']['shortest_edge']})",
    )
    group.add_argument(
        "--video-max-pixels", type=int, default=None, metavar="N",
        help=f"video processor's maximum pixels of all sampled frames together (default {stock['size']['longest_edge']})",
    )


def video_config_from_args(args: argparse.Namespace) -> VideoConfig:
    """Raises ``ValueError`` naming an invalid value."""
    return VideoConfig(
        fps=getattr(args, "fps", None), min_pixels=getattr(args, "video_min_pixels", None),
        max_pixels=getattr(args, "video_max_pixels", None),
    )


def _seconds(value: float) -> str:
    return f"{value:.1f} s"


def format_video_table(result: VideoInspectResult, tflops) -> str:
    """The human-readable block printed for one video (``tflops`` formats FLOPs as the image table does)."""
    t, rows, cols = result.token_grid
    duration = result.total_frames / result.fps if result.fps else 0.0
    sampled = len(result.frame_indices)
    lines = [
        result.video,
        f"  video            {result.width} x {result.height} px, {result.total_frames} frames at {result.fps:g} fps "
        f"({_seconds(duration)}); {sampled} frames sampled, resized to {result.resized_width} x {result.resized_height} px",
        f"  token grid       {t} slices x {rows} x {cols} tokens of 32 x 32 px x 2 frames (grid_thw {result.grid_thw})",
        f"  tokens kept      {result.kept} / {result.tokens} ({100 * result.retention:.1f} %), {result.pruned} pruned",
        "  per slice        slice    time  kept / tokens",
    ]
    width = len(str(rows * cols))
    for entry in result.slices:
        lines.append(
            f"                   {entry['slice']:>5}  {entry['timestamp']:>5.1f} s  {entry['kept']:>{width}} / {entry['tokens']}"
            f"  ({100 * entry['kept'] / entry['tokens']:.1f} %)"
        )
    lines += [
        f"  ViT FLOPs saved  {100 * result.vit_flops_saved:.1f} % "
        f"({tflops(result.vit_flops_full)} -> {tflops(result.vit_flops_kept)} TFLOPs, "
        "Qwen3-VL-2B vision tower, attention per slice, estimated)",
        f"  selector time    {result.selector_ms:.1f} ms (decoding + video processor {result.preprocess_ms:.0f} ms)",
    ]
    if result.overlay:
        lines.append(f"  overlay          {result.overlay}")
    if result.animation:
        lines.append(f"  animation        {result.animation}")
    return "\n".join(lines)


def _caption(result: VideoInspectResult, settings: PixelPruneSettings) -> str:
    t, rows, cols = result.token_grid
    threshold = "lossless" if settings.threshold == 0 else f"threshold {settings.threshold:g} {settings.metric}"
    return (
        f"PixelPrune: {result.kept} / {result.tokens} tokens kept ({100 * result.retention:.1f} %), "
        f"{t} slices of {rows} x {cols}, {threshold}, {settings.method}"
    )


def render_video_overlays(result: VideoInspectResult, frames, keep, settings: PixelPruneSettings,
                          token_size: int) -> tuple[bytes, bytes]:
    """The contact sheet (PNG bytes) and the animation (GIF bytes) of one inspected video:
    ``frames`` ``(t * T, H, W, 3)`` and ``keep`` ``(t, rows, cols)`` as :func:`~pixelprune.inspection.inspect_video`
    returns them."""
    from .overlay import render_animation, render_contact_sheet

    per_slice = len(frames) // len(result.slices)  # temporal_patch_size frames per slice
    labels = [f"slice {e['slice']} at {_seconds(e['timestamp'])}: {e['kept']}/{e['tokens']} kept" for e in result.slices]
    sheet = render_contact_sheet(frames[::per_slice], keep, labels, token_size=token_size,
                                 caption=_caption(result, settings))
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG", optimize=True)
    captions = [
        f"frame {i} (slice {e['slice']}) at {_seconds(i / result.fps if result.fps else 0.0)}: "
        f"{e['kept']} / {e['tokens']} tokens kept"
        for e in result.slices for i in e["frames"]
    ]
    sampled_fps = len(result.frame_indices) * result.fps / result.total_frames if result.total_frames else 2.0
    animation = render_animation(frames, keep.repeat(per_slice, axis=0), captions, token_size=token_size,
                                 frame_ms=round(1000 / sampled_fps))
    return buffer.getvalue(), animation
