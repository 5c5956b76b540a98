"""SQLite URIs for opening a database file read-only (``mode=ro``).

A read-only connection never creates the file, its tables or its WAL, so
a dry run or a check leaves another program's file exactly as it was.
SQLite reads ``?``, ``#`` and ``%`` in a URI's path as syntax: they are
percent-encoded here, so any file name works.
"""

from __future__ import annotations

import os
from urllib.parse import quote


def read_only(path: str | os.PathLike[str]) -> str:
    """The URI that opens ``path`` read-only: ``sqlite3.connect(read_only(p), uri=True)``."""
    return "file:" + quote(os.path.abspath(path), safe="/") + "?mode=ro"
