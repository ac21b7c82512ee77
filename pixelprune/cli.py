"""The ``pixelprune`` command (also ``python -m pixelprune``).

Subcommands:

* ``inspect``: show what PixelPrune keeps of your images and videos (table, ``--json``, ``--overlay``);
* ``export``: write a Hub-ready model folder (:mod:`pixelprune.hub_configs.export_cli`, imported
  only when this subcommand runs, so ``inspect`` never depends on it).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from types import ModuleType

from ._version import __version__

__all__ = ["build_parser", "main"]

logger = logging.getLogger("pixelprune")

EXPORTER_MODULE = "pixelprune.hub_configs.export_cli"


class _StderrHandler(logging.Handler):
    """Writes to the *current* ``sys.stderr`` (so in-process callers that swap it see the logs)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def _configure_logging(verbosity: int) -> None:
    level = logging.DEBUG if verbosity >= 1 else logging.WARNING
    handler = next((h for h in logger.handlers if isinstance(h, _StderrHandler)), None)
    if handler is None:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
    handler.setLevel(level)
    logger.setLevel(level)


def _load_exporter() -> tuple[ModuleType | None, str]:
    """The exporter module, or ``None`` and why it is not available."""
    try:
        return importlib.import_module(EXPORTER_MODULE), ""
    except ModuleNotFoundError as exc:
        if exc.name and EXPORTER_MODULE.startswith(exc.name):
            return None, "this installation of pixelprune has no Hub exporter"
        return None, f"it needs the module {exc.name!r} (install the extras; from a clone: pip install '.[hub,transformers]')"


def build_parser(*, with_exporter: bool = False) -> argparse.ArgumentParser:
    """The ``pixelprune`` argument parser. The ``export`` subcommand's own arguments are added only
    when ``with_exporter`` (its module is imported then)."""
    from . import inspect_images

    parser = argparse.ArgumentParser(
        prog="pixelprune",
        description="PixelPrune: training-free, pixel-exact visual-token pruning for Qwen3-VL and Qwen3.5.",
    )
    parser.add_argument("--version", action="version", version=f"pixelprune {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help="debug logging")

    inspect = sub.add_parser(
        "inspect", parents=[verbose],
        help="show which tokens PixelPrune keeps for your images and videos (no model needed)",
        description=(
            "Preprocess each image as the stock Qwen3-VL image processor does (32x32-pixel tokens), and each "
            "video as the stock Qwen3-VL video processor does (2 frames per second, each pair of frames one "
            "temporal slice of tokens), select the tokens PixelPrune keeps and report them; optionally draw "
            "overlays."
        ),
        epilog=(
            "PIXELPRUNE_THRESHOLD, PIXELPRUNE_METRIC, PIXELPRUNE_METHOD and PIXELPRUNE_ANCHORED set "
            "defaults that the flags override. Exit status: 0 if every file was inspected, 1 if any "
            "could not be (each gets a one-line error), 2 for invalid arguments."
        ),
    )
    inspect_images.configure_parser(inspect)
    inspect.set_defaults(handler=lambda args: inspect_images.run(args, inspect), command_parser=inspect)

    export = sub.add_parser(
        "export", parents=[verbose],
        help="write a Hub-ready PixelPrune model folder from a base checkpoint",
        description="Write a Hub-ready PixelPrune model folder from a stock Qwen3-VL / Qwen3.5 checkpoint.",
    )
    export.set_defaults(command_parser=export)
    if with_exporter:
        exporter, why = _load_exporter()
        if exporter is not None:
            exporter.configure_parser(export)
            export.set_defaults(handler=exporter.run)
        else:
            # Accept whatever follows: the only answer is that export is not available.
            export.set_defaults(handler=lambda args: _export_unavailable(why), accepts_any=True)
    return parser


def _export_unavailable(why: str) -> int:
    print(f"pixelprune export: error: not available: {why}.", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pixelprune`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(with_exporter="export" in argv)
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "accepts_any", False):
        getattr(args, "command_parser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    _configure_logging(args.verbose)
    return int(args.handler(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
