"""Where the emulator keeps audiences and their members: in memory, or in SQLite.

An audience is kept as Talon.One's Audience object (``{"id", "accountId",
"created", "name", "sandbox", "createdIn3rdParty"}`` and, when set,
``description``, ``integration``, ``integrationId``, ``lastUpdate``); its
members are integrationIds in the order they joined. With ``db`` the
audiences live in the same SQLite file as the profiles (tables of their
own), so ``--db`` keeps them across restarts. Each store is thread-safe;
every method that checks and changes does both under one lock, so two
requests cannot both create the audience with one integrationId.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import threading
from typing import Any, Protocol

from talon_classic.emulator.store import now

#: One membership change: ``(action, profileIntegrationId, audienceId)``, action ``add``
#: or ``delete``.
Action = tuple[str, str, int]

#: Fields of an audience that may be set on creation, besides ``name``.
OPTIONAL_FIELDS = ("description", "sandbox", "integration", "integrationId", "createdIn3rdParty")


class AudienceStore(Protocol):
    """What the emulator needs from an audience store."""

    def create(self, fields: dict[str, Any]) -> dict[str, Any] | None:
        """A new audience from ``name`` and :data:`OPTIONAL_FIELDS`; None (nothing created)
        when one with the same ``integration`` and ``integrationId`` exists."""
        ...

    def get(self, audience_id: int) -> dict[str, Any] | None:
        """One audience, or None."""
        ...

    def rename(self, audience_id: int, name: str) -> dict[str, Any] | None:
        """The renamed audience, or None when there is none with that id."""
        ...

    def delete(self, audience_id: int) -> bool:
        """Delete an audience and its memberships; False when there is none with that id."""
        ...

    def clear_members(self, audience_id: int) -> bool:
        """Remove every member; False when there is no audience with that id."""
        ...

    def apply(self, actions: list[Action]) -> set[int]:
        """Apply every action in order, or none: the audience ids that do not exist (when
        there are any, nothing is changed). Adding a member twice or deleting a
        non-member changes nothing."""
        ...

    def page(self, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        """Up to ``limit`` audiences from ``offset``, by id, and how many there are."""
        ...

    def members(self, audience_id: int, limit: int, offset: int) -> list[str] | None:
        """Up to ``limit`` member ids from ``offset``, in joining order; None for no audience."""
        ...

    def member_counts(self) -> dict[int, int]:
        """How many members each audience has, by id."""
        ...

    def memberships(self, ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        """``{"id", "name"}`` of each audience each of ``ids`` belongs to (Talon.One's
        ``audienceMemberships``), by integrationId; ids in none are left out."""
        ...

    def count(self) -> int:
        """How many audiences there are."""
        ...

    def clear(self) -> None:
        """Delete every audience and membership, and restart ids at 1."""
        ...

    def close(self) -> None:
        """Release what the store holds."""
        ...


#: SQLite's INTEGER (and Talon.One's ids) are signed 64-bit: a larger id is no audience.
_ID_RANGE = range(-(2**63), 2**63)


def _fits(audience_id: int) -> bool:
    """Can ``audience_id`` be an audience's id (64 bits)? Else it is none, as in Talon.One
    (a 404), rather than an OverflowError from SQLite (a 500)."""
    return audience_id in _ID_RANGE


def open_audiences(db: str | os.PathLike[str] | None) -> AudienceStore:
    """A :class:`SqliteAudiences` in the file ``db``, or :class:`MemoryAudiences` for None."""
    return SqliteAudiences(db) if db else MemoryAudiences()


def _new_audience(audience_id: int, fields: dict[str, Any]) -> dict[str, Any]:
    audience = {"id": audience_id, "accountId": 1, "created": now(), "name": fields["name"],
                "sandbox": bool(fields.get("sandbox", False)),
                "createdIn3rdParty": bool(fields.get("createdIn3rdParty", False))}
    for key in ("description", "integration", "integrationId"):
        if fields.get(key) is not None:
            audience[key] = fields[key]
    return audience


def _same_source(audience: dict[str, Any], fields: dict[str, Any]) -> bool:
    """Do both come from one third-party audience (``integration`` + ``integrationId``)?"""
    return (fields.get("integrationId") is not None
            and audience.get("integrationId") == fields["integrationId"]
            and audience.get("integration") == fields.get("integration"))


class MemoryAudiences:
    """Audiences in a dict by id; members in insertion-ordered dicts (ordered sets)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._audiences: dict[int, dict[str, Any]] = {}
        self._members: dict[int, dict[str, None]] = {}
        self._next_id = 1

    def create(self, fields: dict[str, Any]) -> dict[str, Any] | None:
        with self._lock:
            if any(_same_source(a, fields) for a in self._audiences.values()):
                return None
            audience = _new_audience(self._next_id, fields)
            self._next_id += 1
            self._audiences[audience["id"]] = audience
            self._members[audience["id"]] = {}
            return dict(audience)

    def get(self, audience_id: int) -> dict[str, Any] | None:
        with self._lock:
            found = self._audiences.get(audience_id)
            return dict(found) if found else None

    def rename(self, audience_id: int, name: str) -> dict[str, Any] | None:
        with self._lock:
            found = self._audiences.get(audience_id)
            if found is None:
                return None
            found["name"] = name
            return dict(found)

    def delete(self, audience_id: int) -> bool:
        with self._lock:
            self._members.pop(audience_id, None)
            return self._audiences.pop(audience_id, None) is not None

    def clear_members(self, audience_id: int) -> bool:
        with self._lock:
            if audience_id not in self._audiences:
                return False
            self._members[audience_id].clear()
            self._audiences[audience_id]["lastUpdate"] = now()
            return True

    def apply(self, actions: list[Action]) -> set[int]:
        with self._lock:
            missing = {aid for _, _, aid in actions if aid not in self._audiences}
            if missing:
                return missing
            stamp = now()
            for action, iid, aid in actions:
                if action == "add":
                    self._members[aid][iid] = None
                else:
                    self._members[aid].pop(iid, None)
                self._audiences[aid]["lastUpdate"] = stamp
            return set()

    def page(self, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        with self._lock:
            chosen = itertools.islice(sorted(self._audiences), offset, offset + limit)
            return [dict(self._audiences[aid]) for aid in chosen], len(self._audiences)

    def members(self, audience_id: int, limit: int, offset: int) -> list[str] | None:
        with self._lock:
            found = self._members.get(audience_id)
            if found is None:
                return None
            return list(itertools.islice(found, offset, offset + limit))

    def member_counts(self) -> dict[int, int]:
        with self._lock:
            return {aid: len(members) for aid, members in self._members.items()}

    def memberships(self, ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        wanted = set(ids)
        out: dict[str, list[dict[str, Any]]] = {}
        with self._lock:
            for aid in sorted(self._members):
                name = self._audiences[aid]["name"]
                for iid in wanted.intersection(self._members[aid]):
                    out.setdefault(iid, []).append({"id": aid, "name": name})
        return out

    def count(self) -> int:
        with self._lock:
            return len(self._audiences)

    def clear(self) -> None:
        with self._lock:
            self._audiences.clear()
            self._members.clear()
            self._next_id = 1

    def close(self) -> None:
        """Nothing to release."""


_COLUMNS = ("id, account_id, created, name, sandbox, created_in_3rd_party, description, "
            "integration, integration_id, last_update")


class SqliteAudiences:
    """Audiences and memberships in two tables of an SQLite file (WAL)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                                   timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(
            "CREATE TABLE IF NOT EXISTS audiences (id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "account_id INTEGER NOT NULL, created TEXT NOT NULL, name TEXT NOT NULL, "
            "sandbox INTEGER NOT NULL, created_in_3rd_party INTEGER NOT NULL, description TEXT, "
            "integration TEXT, integration_id TEXT, last_update TEXT);"
            "CREATE INDEX IF NOT EXISTS audiences_source ON audiences (integration_id);"
            "CREATE TABLE IF NOT EXISTS audience_members (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
            "audience_id INTEGER NOT NULL REFERENCES audiences (id) ON DELETE CASCADE, "
            "integration_id TEXT NOT NULL, UNIQUE (audience_id, integration_id));"
            "CREATE INDEX IF NOT EXISTS audience_members_profile "
            "ON audience_members (integration_id);"
        )

    @staticmethod
    def _audience(row: tuple[Any, ...]) -> dict[str, Any]:
        audience = {"id": row[0], "accountId": row[1], "created": row[2], "name": row[3],
                    "sandbox": bool(row[4]), "createdIn3rdParty": bool(row[5])}
        for key, value in zip(("description", "integration", "integrationId", "lastUpdate"),
                              row[6:], strict=True):
            if value is not None:
                audience[key] = value
        return audience

    def _transaction(self) -> sqlite3.Cursor:
        cur = self._db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        return cur

    def _fetch(self, cur: sqlite3.Cursor, audience_id: int) -> dict[str, Any] | None:
        row = cur.execute(f"SELECT {_COLUMNS} FROM audiences WHERE id = ?",
                          (audience_id,)).fetchone()
        return self._audience(row) if row else None

    def create(self, fields: dict[str, Any]) -> dict[str, Any] | None:
        audience = _new_audience(0, fields)
        with self._lock:
            cur = self._transaction()
            try:
                if fields.get("integrationId") is not None and cur.execute(
                        "SELECT 1 FROM audiences WHERE integration_id = ? AND "
                        "integration IS ?", (fields["integrationId"],
                                             fields.get("integration"))).fetchone():
                    cur.execute("COMMIT")
                    return None
                cur.execute(
                    "INSERT INTO audiences (account_id, created, name, sandbox, "
                    "created_in_3rd_party, description, integration, integration_id) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (1, audience["created"], audience["name"], audience["sandbox"],
                     audience["createdIn3rdParty"], audience.get("description"),
                     audience.get("integration"), audience.get("integrationId")))
                audience["id"] = cur.lastrowid
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        return audience

    def get(self, audience_id: int) -> dict[str, Any] | None:
        if not _fits(audience_id):
            return None
        with self._lock:
            return self._fetch(self._db.cursor(), audience_id)

    def rename(self, audience_id: int, name: str) -> dict[str, Any] | None:
        if not _fits(audience_id):
            return None
        with self._lock:
            self._db.execute("UPDATE audiences SET name = ? WHERE id = ?", (name, audience_id))
            return self._fetch(self._db.cursor(), audience_id)

    def delete(self, audience_id: int) -> bool:
        if not _fits(audience_id):
            return False
        with self._lock:  # the members go with it (ON DELETE CASCADE)
            return self._db.execute("DELETE FROM audiences WHERE id = ?",
                                    (audience_id,)).rowcount > 0

    def clear_members(self, audience_id: int) -> bool:
        if not _fits(audience_id):
            return False
        with self._lock:
            cur = self._transaction()
            try:
                found = cur.execute("UPDATE audiences SET last_update = ? WHERE id = ?",
                                    (now(), audience_id)).rowcount > 0
                cur.execute("DELETE FROM audience_members WHERE audience_id = ?",
                            (audience_id,))
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        return found

    def apply(self, actions: list[Action]) -> set[int]:
        wanted = sorted({aid for _, _, aid in actions})
        too_wide = {aid for aid in wanted if not _fits(aid)}
        if too_wide:
            return too_wide
        with self._lock:
            cur = self._transaction()
            try:
                known = {row[0] for start in range(0, len(wanted), 500)
                         for row in cur.execute(
                             "SELECT id FROM audiences WHERE id IN "
                             f"({','.join('?' * len(wanted[start:start + 500]))})",
                             wanted[start:start + 500])}
                missing = set(wanted) - known
                if not missing:
                    for action, iid, aid in actions:  # in order: add then delete is a delete
                        if action == "add":
                            cur.execute("INSERT OR IGNORE INTO audience_members (audience_id, "
                                        "integration_id) VALUES (?, ?)", (aid, iid))
                        else:
                            cur.execute("DELETE FROM audience_members WHERE audience_id = ? "
                                        "AND integration_id = ?", (aid, iid))
                    cur.executemany("UPDATE audiences SET last_update = ? WHERE id = ?",
                                    [(now(), aid) for aid in wanted])
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        return missing

    def page(self, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM audiences ORDER BY id LIMIT ? "
                                    "OFFSET ?", (limit, offset)).fetchall()
            total = self._db.execute("SELECT COUNT(*) FROM audiences").fetchone()[0]
        return [self._audience(r) for r in rows], total

    def members(self, audience_id: int, limit: int, offset: int) -> list[str] | None:
        if not _fits(audience_id):
            return None
        with self._lock:
            if not self._db.execute("SELECT 1 FROM audiences WHERE id = ?",
                                    (audience_id,)).fetchone():
                return None
            rows = self._db.execute(
                "SELECT integration_id FROM audience_members WHERE audience_id = ? "
                "ORDER BY seq LIMIT ? OFFSET ?", (audience_id, limit, offset)).fetchall()
        return [r[0] for r in rows]

    def member_counts(self) -> dict[int, int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT a.id, COUNT(m.seq) FROM audiences a LEFT JOIN audience_members m "
                "ON m.audience_id = a.id GROUP BY a.id").fetchall()
        return dict(rows)

    def memberships(self, ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        unique = list(dict.fromkeys(ids))
        out: dict[str, list[dict[str, Any]]] = {}
        with self._lock:
            for start in range(0, len(unique), 500):
                chunk = unique[start:start + 500]
                for iid, aid, name in self._db.execute(
                        "SELECT m.integration_id, a.id, a.name FROM audience_members m JOIN "
                        "audiences a ON a.id = m.audience_id WHERE m.integration_id IN "
                        f"({','.join('?' * len(chunk))}) ORDER BY a.id", chunk):
                    out.setdefault(iid, []).append({"id": aid, "name": name})
        return out

    def count(self) -> int:
        with self._lock:
            count: int = self._db.execute("SELECT COUNT(*) FROM audiences").fetchone()[0]
        return count

    def clear(self) -> None:
        with self._lock:
            self._db.execute("DELETE FROM audience_members")
            self._db.execute("DELETE FROM audiences")
            self._db.execute("DELETE FROM sqlite_sequence WHERE name IN "
                             "('audiences', 'audience_members')")

    def close(self) -> None:
        with self._lock:
            self._db.close()
