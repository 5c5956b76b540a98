"""Where talon-classic keeps state between runs, and how it writes files there.

The state directory is ``$XDG_STATE_HOME/talon-classic/`` when
``XDG_STATE_HOME`` is set to an absolute path (the XDG Base Directory
specification ignores relative ones), else ``~/.local/state/talon-classic/``.
It holds things worth keeping but cheap to lose (the attribute-schema cache;
later, the ordering ledger). It is created mode 0700, and files in it are
written atomically, mode 0600: they may hold users' data.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from talon_classic.files import write_atomic

__all__ = ["APP_NAME", "ENV_STATE_HOME", "ensure_dir", "state_dir", "state_file", "write_atomic"]

APP_NAME = "talon-classic"
ENV_STATE_HOME = "XDG_STATE_HOME"
_UNSAFE = re.compile(r"[^A-Za-z0-9.-]+")


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


def state_file(deployment: str, id_prefix: str = "", *, state: str | os.PathLike[str] | None = None
               ) -> Path:
    """The state database of one Talon.One deployment and id prefix (not created).

    ``<state>/<host>-<hash>.db``: the host keeps it recognisable, the hash of
    the deployment URL and the id prefix keeps two deployments (or two
    prefixes sharing one deployment) apart. One file holds everything
    talon-classic remembers of what that deployment acknowledged (the
    ordering ledger, audience memberships).
    """
    host = _UNSAFE.sub("_", urlsplit(deployment).netloc) or "deployment"
    digest = hashlib.sha256(f"{deployment}\0{id_prefix}".encode()).hexdigest()[:12]
    base = Path(state) if state is not None else state_dir()
    return base / f"{host[:100]}-{digest}.db"
