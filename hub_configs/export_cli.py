"""The ``pixelprune export`` command line (argument parsing and printing around
:func:`.exporter.export`). Imported by :mod:`pixelprune.cli` only when the subcommand runs."""

from __future__ import annotations

import argparse
import sys

from ..settings_options import add_settings_arguments, settings_overrides
from .errors import ExportError
from .exporter import export

__all__ = ["configure_parser", "run"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add ``pixelprune export``'s arguments to ``parser``."""
    parser.add_argument("base", metavar="BASE", help="stock checkpoint: a local folder or a Hub model id")
    parser.add_argument("out", metavar="OUT", help="folder to write the PixelPrune repo into")
    add_settings_arguments(parser, defaults_from="the settings BASE carries, else threshold 0, max, pred_2d, no video",
                           video_flag=True)
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument("--link-weights", dest="weights", action="store_const", const="link",
                         help="symlink the weight files to BASE's (default; copies where links fail)")
    weights.add_argument("--copy-weights", dest="weights", action="store_const", const="copy",
                         help="copy the weight files (with a progress bar)")
    parser.set_defaults(weights="link")
    parser.add_argument("--repo-id", metavar="REPO_ID",
                        help="Hub id the model card's snippets use (default: --push-to-hub, else a placeholder)")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="upload OUT to this Hub repo (created if needed)")
    parser.add_argument("--private", action="store_true", help="create the Hub repo private (with --push-to-hub)")
    parser.add_argument("--force", action="store_true",
                        help="write into a non-empty OUT that pixelprune export did not write (its other files stay)")
    parser.add_argument("--sample-images", nargs="+", metavar="IMAGE",
                        help="images for the model card's retention table (default: pixelprune's samples)")
    parser.add_argument("--base-model", metavar="REPO_ID",
                        help="base_model for the model card when it cannot be inferred from BASE")
    parser.add_argument("--license", help="license for the model card when BASE's card names none")
    parser.epilog = (
        "PIXELPRUNE_* environment variables are not read: the saved settings are BASE's (if it carries "
        "any) overridden by the options given. Exit status: 0 on success, 1 when the export is refused "
        "(one-line error; nothing written), 2 for invalid arguments."
    )


def run(args: argparse.Namespace) -> int:
    """Run ``pixelprune export``; 0 on success, 1 with a one-line error otherwise, 2 for bad usage."""
    if args.private and not args.push_to_hub:
        print("pixelprune export: error: --private only applies with --push-to-hub REPO_ID.", file=sys.stderr)
        return 2
    try:
        from ..core.settings import PixelPruneSettings

        overrides = settings_overrides(args)
        PixelPruneSettings().replace(**overrides)  # invalid values are usage errors, before BASE is read
    except ValueError as exc:
        print(f"pixelprune export: error: {exc}", file=sys.stderr)
        return 2
    try:
        result = export(
            args.base, args.out, settings=overrides, weights=args.weights, force=args.force,
            sample_images=args.sample_images, base_model=args.base_model, license=args.license,
            repo_id=args.repo_id, push_to_hub=args.push_to_hub, private=args.private,
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
