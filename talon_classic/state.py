"""Where talon-classic keeps state between runs, and how it writes files there.

The state directory is ``$XDG_STATE_HOME/talon-classic/`` when
``XDG_STATE_HOME`` is set to an absolute path (the XDG Base Directory
specification ignores relative ones), else ``~/.local/state/talon-classic/``.
It holds things worth keeping but cheap to lose (the attribute-schema cache;
later, the ordering ledger). It is created mode 0700, and files in it are
written atomically, mode 0600: they may hold users' data.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

APP_NAME = "talon-classic"
ENV_STATE_HOME = "XDG_STATE_HOME"


def state_dir(env: Mapping[str, str] | None = None, home: str | os.PathLike[str] | None = None) -> Path:
    """The state directory's path (not created). ``env`` and ``home`` are injectable for tests."""
    env = os.environ if env is None else env
    base = env.get(ENV_STATE_HOME, "")
    if base and os.path.isabs(base):
        return Path(base) / APP_NAME
    root = Path(home) if home is not None else Path.home()
    return root / ".local" / "state" / APP_NAME


def ensure_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` (and its parents) if missing, the last one mode 0700; return it."""
    where = Path(path)
    where.mkdir(mode=0o700, parents=True, exist_ok=True)
    return where


def write_atomic(path: str | os.PathLike[str], data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new, never half.

    A temporary file in the same directory is written, flushed to disk, given
    ``mode`` and renamed over ``path``. On any failure the temporary file is
    removed and the old ``path`` is left as it was.
    """
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
            os.fchmod(fh.fileno(), mode)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
