"""Read-only SQLite URIs: any file name opens, and nothing is written."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from talon_classic.sqliteuri import read_only


@pytest.mark.parametrize("name", ["plain.db", "a?b.db", "a#b.db", "100%25.db", "50%.db",
                                  "with space.db", "é.db"])
def test_any_file_name_opens_read_only(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (x)")
        db.execute("INSERT INTO t VALUES (7)")
    db = sqlite3.connect(read_only(path), uri=True)
    try:
        assert db.execute("SELECT x FROM t").fetchall() == [(7,)]
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            db.execute("INSERT INTO t VALUES (8)")
    finally:
        db.close()


def test_a_missing_file_is_not_created(tmp_path: Path) -> None:
    with pytest.raises(sqlite3.OperationalError):
        sqlite3.connect(read_only(tmp_path / "none.db"), uri=True)
    assert not (tmp_path / "none.db").exists()
