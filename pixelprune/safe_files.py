"""Writing files without following symlinks or clobbering what the user did not ask to replace.

Both helpers write the whole content to a fresh temporary file in the target's folder first (so a
reader never sees a half-written file), then move it into place:

* :func:`create_new` links it to ``path`` only if nothing is there yet (no file, no symlink);
* :func:`replace_file` renames it over ``path``, which replaces a regular file but never writes
  *through* a symlink (a rename replaces the link itself; we refuse links anyway, so a link the
  user made stays theirs).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["create_new", "replace_file"]


def _staged(path: Path, data: bytes) -> Path:
    """``data`` in a new temporary file next to ``path`` (created exclusively, mode 0o644 & umask)."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(name, 0o666 & ~umask)
    except BaseException:
        os.unlink(name)
        raise
    return Path(name)


def create_new(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``, which must not exist (not even as a dangling symlink).

    Raises ``FileExistsError`` when something is at ``path``; nothing is changed then.
    """
    staged = _staged(path, data)
    try:
        os.link(staged, path)  # atomic; fails if path exists, and never follows a link at path
    except FileExistsError:
        raise
    except OSError:  # a filesystem without hard links: exclusive create, no symlink following
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
    finally:
        os.unlink(staged)


def replace_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``, replacing a regular file there (atomically, by rename).

    Raises ``IsADirectoryError`` for a folder and ``FileExistsError`` for a symlink at ``path``
    (whatever it points to stays untouched).
    """
    if path.is_symlink():
        raise FileExistsError(f"{path} is a symbolic link; it is never written through or replaced.")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder.")
    staged = _staged(path, data)
    try:
        os.replace(staged, path)
    except BaseException:
        os.unlink(staged)
        raise
