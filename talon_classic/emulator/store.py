"""Where the emulator keeps customer profiles: in memory, or in SQLite across restarts.

Both stores hold a profile as ``{"id", "integrationId", "created",
"lastActivity", "attributes"}`` (the rest of Talon.One's CustomerProfile is
constant and added when answering). Each is thread-safe on its own:
waitress calls the app from many threads, and every method takes the
store's lock, so a page and its total are read together.
"""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import threading
from datetime import UTC, datetime
from typing import Any, Protocol

#: ``(integrationId, attributes)`` of each profile a request writes, in request order.
Items = list[tuple[str, dict[str, Any]]]


def now() -> str:
    """The current time as Talon.One writes it: ISO 8601, UTC, milliseconds, ``Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ProfileStore(Protocol):
    """What the emulator needs from a store."""

    def upsert(self, items: Items, snapshot: bool) -> list[dict[str, Any]]:
        """Merge each item's attributes in (creating missing profiles), in one step.

        With ``snapshot``, the resulting profiles, one per item; else ``[]``.
        """
        ...

    def get(self, iid: str) -> dict[str, Any] | None:
        """A copy of one profile, or None."""
        ...

    def get_many(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        """Copies of the profiles of ``ids`` that exist, by integrationId."""
        ...

    def create_missing(self, ids: list[str]) -> int:
        """Create the profiles of ``ids`` that do not exist (no attributes); existing
        ones are left as they are. Returns how many were created."""
        ...

    def page(self, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        """Up to ``limit`` profiles from ``offset`` in creation order, and the total."""
        ...

    def count(self) -> int:
        """How many profiles are stored."""
        ...

    def clear(self) -> None:
        """Delete every profile and restart ids at 1, like a fresh store."""
        ...

    def close(self) -> None:
        """Release what the store holds."""
        ...


def open_store(db: str | os.PathLike[str] | None) -> ProfileStore:
    """A :class:`SqliteStore` at ``db``, or a :class:`MemoryStore` when ``db`` is None."""
    return SqliteStore(db) if db else MemoryStore()


class MemoryStore:
    """Profiles in a dict; insertion order is creation order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._profiles: dict[str, dict[str, Any]] = {}
        self._next_id = 1

    def upsert(self, items: Items, snapshot: bool) -> list[dict[str, Any]]:
        stamp = now()
        with self._lock:
            touched = []
            for iid, attrs in items:
                profile = self._profiles.get(iid)
                if profile is None:
                    profile = self._profiles[iid] = {
                        "id": self._next_id, "created": stamp, "integrationId": iid,
                        "attributes": {},
                    }
                    self._next_id += 1
                profile["attributes"].update(attrs)
                profile["lastActivity"] = stamp
                touched.append(profile)
            return [self._copy(p) for p in touched] if snapshot else []

    @staticmethod
    def _copy(profile: dict[str, Any]) -> dict[str, Any]:
        return {**profile, "attributes": dict(profile["attributes"])}

    def get(self, iid: str) -> dict[str, Any] | None:
        with self._lock:
            found = self._profiles.get(iid)
            return self._copy(found) if found is not None else None

    def get_many(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {iid: self._copy(self._profiles[iid]) for iid in ids if iid in self._profiles}

    def create_missing(self, ids: list[str]) -> int:
        stamp = now()
        created = 0
        with self._lock:
            for iid in ids:
                if iid not in self._profiles:
                    self._profiles[iid] = {"id": self._next_id, "created": stamp,
                                           "integrationId": iid, "attributes": {},
                                           "lastActivity": stamp}
                    self._next_id += 1
                    created += 1
        return created

    def page(self, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        with self._lock:
            chosen = itertools.islice(self._profiles.values(), offset, offset + limit)
            return [self._copy(p) for p in chosen], len(self._profiles)

    def count(self) -> int:
        with self._lock:
            return len(self._profiles)

    def clear(self) -> None:
        with self._lock:
            self._profiles.clear()
            self._next_id = 1

    def close(self) -> None:
        """Nothing to release."""


_COLUMNS = "id, integration_id, created, last_activity, attributes"


class SqliteStore:
    """Profiles in SQLite (WAL): one transaction and one ``executemany`` per request."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS profiles (id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "integration_id TEXT UNIQUE NOT NULL, created TEXT NOT NULL, "
            "last_activity TEXT NOT NULL, attributes TEXT NOT NULL)"
        )

    @staticmethod
    def _row(row: tuple[Any, ...]) -> dict[str, Any]:
        return {"id": row[0], "integrationId": row[1], "created": row[2],
                "lastActivity": row[3], "attributes": json.loads(row[4])}

    @staticmethod
    def _select(cur: sqlite3.Cursor, ids: list[str]) -> dict[str, tuple[Any, ...]]:
        found = {}
        for start in range(0, len(ids), 500):  # well under SQLite's bound-parameter limit
            chunk = ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for row in cur.execute(
                    f"SELECT {_COLUMNS} FROM profiles WHERE integration_id IN ({marks})", chunk):
                found[row[1]] = row
        return found

    def upsert(self, items: Items, snapshot: bool) -> list[dict[str, Any]]:
        """Read the touched rows, merge in Python, write them back in one ``executemany``."""
        stamp = now()
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                ids = list(dict.fromkeys(iid for iid, _ in items))
                existing = self._select(cur, ids)
                merged = {iid: json.loads(existing[iid][4]) if iid in existing else {}
                          for iid in ids}
                for iid, attrs in items:
                    merged[iid].update(attrs)
                cur.executemany(
                    "INSERT INTO profiles (integration_id, created, last_activity, attributes) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT(integration_id) DO UPDATE SET "
                    "last_activity = excluded.last_activity, attributes = excluded.attributes",
                    [(iid, stamp, stamp, json.dumps(merged[iid])) for iid in ids])
                rows = self._select(cur, ids) if snapshot else {}
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        return [self._row(rows[iid]) for iid, _ in items] if snapshot else []

    def get(self, iid: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM profiles WHERE integration_id = ?",
                                   (iid,)).fetchone()
        return self._row(row) if row else None

    def get_many(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        with self._lock:
            rows = self._select(self._db.cursor(), list(dict.fromkeys(ids)))
        return {iid: self._row(row) for iid, row in rows.items()}

    def create_missing(self, ids: list[str]) -> int:
        stamp = now()
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                before = cur.execute("SELECT COUNT(*) FROM profiles").fetchone()[0]
                cur.executemany(
                    "INSERT OR IGNORE INTO profiles (integration_id, created, last_activity, "
                    "attributes) VALUES (?, ?, ?, '{}')",
                    [(iid, stamp, stamp) for iid in dict.fromkeys(ids)])
                created: int = cur.execute("SELECT COUNT(*) FROM profiles").fetchone()[0] - before
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        return created

    def page(self, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM profiles ORDER BY id LIMIT ? OFFSET ?",
                (limit, offset)).fetchall()
            total = self._db.execute("SELECT COUNT(*) FROM profiles").fetchone()[0]
        return [self._row(r) for r in rows], total

    def count(self) -> int:
        with self._lock:
            count: int = self._db.execute("SELECT COUNT(*) FROM profiles").fetchone()[0]
        return count

    def clear(self) -> None:
        with self._lock:
            self._db.execute("DELETE FROM profiles")
            self._db.execute("DELETE FROM sqlite_sequence WHERE name = 'profiles'")

    def close(self) -> None:
        with self._lock:
            self._db.close()
