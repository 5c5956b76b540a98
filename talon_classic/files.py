"""Files that hold users' data: created readable by their owner only, replaced atomically.

Dead letters, dry-run requests, checkpoints and caches hold traits (emails,
names) or describe a user's runs, so they are created 0600, like the
server's spool. An existing file keeps the mode its owner gave it.
"""

from __future__ import annotations

import contextlib
import os
from typing import IO


def open_private(path: str | os.PathLike[str], mode: str = "w") -> IO[str]:
    """Open a UTF-8 text file for writing (``"w"`` truncates, ``"a"`` appends), 0600 if new."""
    if mode not in ("w", "a"):
        raise ValueError(f"mode must be 'w' or 'a', not {mode!r}")
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if mode == "a" else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    return os.fdopen(fd, mode, encoding="utf-8")


def write_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Replace ``path`` with ``text`` in one step, durably: a crash leaves the old or the new.

    Written to ``<path>.tmp`` (0600), fsynced, then renamed over ``path``.
    """
    tmp = f"{os.fspath(path)}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # a leftover keeps its old mode; start from a fresh 0600 file
    with open_private(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
