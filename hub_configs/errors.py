"""The one exception ``pixelprune export`` raises for everything it refuses."""

from __future__ import annotations

__all__ = ["ExportError"]


class ExportError(Exception):
    """The export cannot be done; the message says why and what to do."""
