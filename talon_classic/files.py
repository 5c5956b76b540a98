"""Files that hold users' data: created readable by their owner only, replaced atomically.

Dead letters, dry-run requests, checkpoints and caches hold traits (emails,
names) or describe a user's runs, so they are created 0600, like the
server's spool. An existing file keeps the mode its owner gave it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import IO


def open_private(path: str | os.PathLike[str], mode: str = "w") -> IO[str]:
    """Open a UTF-8 text file for writing (``"w"`` truncates, ``"a"`` appends), 0600 if new."""
    if mode not in ("w", "a"):
        raise ValueError(f"mode must be 'w' or 'a', not {mode!r}")
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if mode == "a" else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    return os.fdopen(fd, mode, encoding="utf-8")


def write_atomic(path: str | os.PathLike[str], data: bytes | str, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` in one step, durably: readers see the old file or the new.

    A temporary file in the same directory is written (text as UTF-8),
    flushed to disk, given ``mode`` and renamed over ``path``. On any failure
    the temporary file is removed and the old ``path`` is left as it was.
    """
    target = os.fspath(path)
    directory, name = os.path.split(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory or ".")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
            os.fchmod(fh.fileno(), mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
