"""The PixelPrune settings options shared by ``pixelprune inspect`` and ``pixelprune export``.

Only flags the user gave become overrides (``None`` = not given), so each command layers them on
its own lower-precedence sources; every value is validated by :class:`PixelPruneSettings`.
"""

from __future__ import annotations

import argparse
from typing import Any

from .core.settings import METHODS, METRIC_ALIASES, METRICS

__all__ = ["add_settings_arguments", "settings_overrides"]


def add_settings_arguments(parser: argparse.ArgumentParser, *, defaults_from: str, video_flag: bool = False) -> None:
    """Add ``--threshold``, ``--metric``, ``--method`` and ``--anchored`` / ``--sliding``; with
    ``video_flag``, also ``--video`` / ``--no-video`` (the saved ``video`` setting: for commands
    that write settings, not for ``inspect``, which prunes the files it is given).

    ``defaults_from`` completes the help's "default:" clauses (where unset values come from).
    """
    metrics = ", ".join((*METRICS, *METRIC_ALIASES))
    parser.add_argument(
        "--threshold", type=float, default=None, metavar="T",
        help=f"similarity threshold tau in [0, 1] pixel units; 0 = pixel-exact, lossless (default: {defaults_from})",
    )
    parser.add_argument(
        "--metric", default=None, metavar="M",
        help=f"token distance: {metrics} (exact = max with threshold 0; default: {defaults_from})",
    )
    parser.add_argument(
        "--method", default=None, metavar="NAME",
        help=f"predictor: {', '.join(METHODS)} (default: {defaults_from})",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--anchored", dest="anchored", action="store_const", const=True, default=None,
        help="compare with reconstructions (automatic default: anchored when threshold > 0)",
    )
    mode.add_argument(
        "--sliding", dest="anchored", action="store_const", const=False,
        help="compare with the original neighbours",
    )
    if video_flag:
        parser.add_argument(
            "--video", action=argparse.BooleanOptionalAction, default=None,
            help=f"prune videos too (docs/ALGORITHM.md section 7; opt-in; default: {defaults_from})",
        )


def settings_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the user set on the command line, as ``PixelPruneSettings`` field names."""
    given = {"threshold": args.threshold, "metric": args.metric, "method": args.method, "anchored": args.anchored,
             "video": getattr(args, "video", None)}
    return {name: value for name, value in given.items() if value is not None}
