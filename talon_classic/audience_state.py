"""What talon-classic remembers of audiences, in the state database, and list diffs done in SQL.

The state database is one SQLite file per deployment and id prefix
(:func:`talon_classic.state.state_file`), shared with the delivery ledger:
each keeps to its own tables, created with ``CREATE TABLE IF NOT EXISTS``,
and the file is in WAL mode so both can use it at once. The tables here:

* ``audience_members (audience_id, integration_id)``: each audience's
  membership as Talon.One last acknowledged it to talon-classic: an add or
  a delete is recorded only once its request was acknowledged, so a sync
  that was interrupted and run again sends only what is still needed.
* ``audience_known (audience_id, source, since)``: the audiences whose
  recorded membership is taken as their whole membership (after a mirror,
  a read from Talon.One, or an ``audience clear``). Only for these can a
  mirror remove members who left the list.
* ``audience_ids (integration, integration_id, audience_id)``: the Talon.One
  id of an audience created for another platform's audience (an Engage
  audience is ``segment`` + its ``computation_id``), so it is created once.

A list to sync is loaded into a temporary table and compared with the
recorded membership in SQL (:meth:`AudienceState.plan`): a million ids are
never held in Python, twice or even once. Temporary tables live in a
temporary file, so memory stays flat whatever the list's size.

Without a file (``--no-state``, or a dry run with no state yet) the same
code runs on a private temporary database that is gone when closed.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from talon_classic.audiences import ADD, DELETE
from talon_classic.state import ensure_dir

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audience_members (
    audience_id INTEGER NOT NULL,
    integration_id TEXT NOT NULL,
    PRIMARY KEY (audience_id, integration_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audience_known (
    audience_id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    since TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audience_ids (
    integration TEXT NOT NULL,
    integration_id TEXT NOT NULL,
    audience_id INTEGER NOT NULL,
    PRIMARY KEY (integration, integration_id)
) WITHOUT ROWID;
"""

_TEMP_SCHEMA = """
CREATE TEMP TABLE IF NOT EXISTS sync_list (
    integration_id TEXT PRIMARY KEY,
    source INTEGER NOT NULL,
    line INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TEMP TABLE IF NOT EXISTS sync_talon (
    integration_id TEXT PRIMARY KEY
) WITHOUT ROWID;
CREATE TEMP TABLE IF NOT EXISTS sync_pending (
    seq INTEGER PRIMARY KEY,
    action TEXT NOT NULL,
    integration_id TEXT NOT NULL,
    source INTEGER,
    line INTEGER
);
"""

#: Where the membership a list is compared with comes from.
BASELINE_STATE = "state"
BASELINE_TALON = "talon"
#: Rows given to SQLite at once while loading.
_CHUNK = 10_000
#: Pages of the temporary database kept in memory (negative: KiB), enough for a fast
#: diff of millions of ids and still small.
_TEMP_CACHE_KIB = 64 * 1024


@dataclass(frozen=True)
class Plan:
    """What a sync must send: counts of the adds and deletes queued, and what needs nothing."""

    adds: int
    removes: int
    unchanged: int


@dataclass(frozen=True)
class Pending:
    """One queued action: ``seq`` orders them; ``source``/``line`` say where in the list it came
    from (None for a member a mirror removes because it is not in the list)."""

    seq: int
    action: str
    integration_id: str
    source: int | None
    line: int | None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class AudienceState:
    """Recorded memberships, known audiences and created audiences' ids, in one SQLite file.

    ``path`` None: a private temporary database, gone when closed. A
    ``path`` whose directory is missing has it created (mode 0700); a new
    file is created 0600 (it names users). Thread-safe (one lock around the
    connection).
    """

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = Path(path) if path is not None else None
        if self.path is not None:
            ensure_dir(self.path.parent)
            if not self.path.exists():
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        self._lock = threading.RLock()
        self._db = sqlite3.connect(os.fspath(self.path) if self.path is not None else "",
                                   isolation_level=None, check_same_thread=False, timeout=30)
        if self.path is not None:
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA temp_store=FILE")
        self._db.execute(f"PRAGMA temp.cache_size=-{_TEMP_CACHE_KIB}")
        self._db.executescript(_SCHEMA)
        self._db.executescript(_TEMP_SCHEMA)

    @property
    def persistent(self) -> bool:
        """Does what is recorded outlive this object (a file, not ``--no-state``)?"""
        return self.path is not None

    def close(self) -> None:
        """Close the database (a temporary one is deleted)."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> AudienceState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, statements: Iterable[tuple[str, Iterable[tuple[object, ...]]]]) -> None:
        """Run ``(sql, rows)`` pairs (executemany) in one transaction."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for sql, rows in statements:
                    self._db.executemany(sql, rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    # -- recorded memberships ---------------------------------------------------
    def is_known(self, audience_id: int) -> bool:
        """Is the recorded membership of ``audience_id`` taken as its whole membership?"""
        with self._lock:
            return self._db.execute("SELECT 1 FROM audience_known WHERE audience_id = ?",
                                    (audience_id,)).fetchone() is not None

    def known_source(self, audience_id: int) -> str | None:
        """Where the known membership started (``mirror``, ``talon``, ``clear``), or None."""
        with self._lock:
            row = self._db.execute("SELECT source FROM audience_known WHERE audience_id = ?",
                                   (audience_id,)).fetchone()
        return row[0] if row else None

    def mark_known(self, audience_id: int, source: str) -> None:
        """Take the recorded membership as the whole from now on (kept if already so)."""
        self._write([("INSERT OR IGNORE INTO audience_known (audience_id, source, since) "
                      "VALUES (?, ?, ?)", [(audience_id, source, _now())])])

    def record(self, audience_id: int, actions: Iterable[tuple[str, str]],
               known: str | None = None) -> None:
        """Record acknowledged ``(action, integration_id)`` pairs, in one transaction.

        ``known`` also marks the audience as known (see :meth:`mark_known`) in
        the same transaction, so a mirror's first acknowledged request and
        that mark are never separated by a crash.
        """
        adds: list[tuple[object, ...]] = []
        deletes: list[tuple[object, ...]] = []
        for action, iid in actions:
            (adds if action == ADD else deletes).append((audience_id, iid))
        statements: list[tuple[str, Iterable[tuple[object, ...]]]] = [
            ("INSERT OR IGNORE INTO audience_members (audience_id, integration_id) VALUES (?, ?)",
             adds),
            ("DELETE FROM audience_members WHERE audience_id = ? AND integration_id = ?",
             deletes)]
        if known is not None:
            statements.append(("INSERT OR IGNORE INTO audience_known (audience_id, source, "
                               "since) VALUES (?, ?, ?)", [(audience_id, known, _now())]))
        self._write(statements)

    def reset(self, audience_id: int, source: str = "clear") -> None:
        """The audience is empty (``audience clear``): no members, and that is known."""
        self._write([
            ("DELETE FROM audience_members WHERE audience_id = ?", [(audience_id,)]),
            ("DELETE FROM audience_known WHERE audience_id = ?", [(audience_id,)]),
            ("INSERT INTO audience_known (audience_id, source, since) VALUES (?, ?, ?)",
             [(audience_id, source, _now())])])

    def forget(self, audience_id: int) -> None:
        """Forget everything about an audience (``audience delete``), its id mapping too."""
        self._write([
            ("DELETE FROM audience_members WHERE audience_id = ?", [(audience_id,)]),
            ("DELETE FROM audience_known WHERE audience_id = ?", [(audience_id,)]),
            ("DELETE FROM audience_ids WHERE audience_id = ?", [(audience_id,)])])

    def member_count(self, audience_id: int) -> int:
        """How many members are recorded for ``audience_id``."""
        with self._lock:
            count: int = self._db.execute(
                "SELECT COUNT(*) FROM audience_members WHERE audience_id = ?",
                (audience_id,)).fetchone()[0]
        return count

    def members(self, audience_id: int) -> Iterator[str]:
        """The recorded members, sorted (fetched in pages, never all at once)."""
        last = ""
        while True:
            with self._lock:
                rows = self._db.execute(
                    "SELECT integration_id FROM audience_members WHERE audience_id = ? AND "
                    "integration_id > ? ORDER BY integration_id LIMIT ?",
                    (audience_id, last, _CHUNK)).fetchall()
            if not rows:
                return
            for (iid,) in rows:
                yield iid
            last = rows[-1][0]

    # -- a list to sync ---------------------------------------------------------
    def start_list(self) -> None:
        """Empty the temporary tables of a previous sync on this connection."""
        with self._lock:
            self._db.executescript("DELETE FROM temp.sync_list; DELETE FROM temp.sync_talon; "
                                   "DELETE FROM temp.sync_pending;")

    def add_to_list(self, rows: list[tuple[str, int, int]]) -> int:
        """Load ``(integration_id, source, line)`` rows; return how many were new (not duplicates)."""
        with self._lock:
            before = self._db.total_changes
            self._db.execute("BEGIN")
            try:
                self._db.executemany("INSERT OR IGNORE INTO temp.sync_list (integration_id, "
                                     "source, line) VALUES (?, ?, ?)", rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return self._db.total_changes - before

    def add_talon_members(self, ids: Iterable[str]) -> int:
        """Load members read from Talon.One into the temporary baseline; return how many."""
        total = 0
        chunk: list[tuple[str]] = []
        for iid in ids:
            chunk.append((iid,))
            if len(chunk) >= _CHUNK:
                total += self._load_talon(chunk)
                chunk = []
        if chunk:
            total += self._load_talon(chunk)
        return total

    def _load_talon(self, rows: list[tuple[str]]) -> int:
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR IGNORE INTO temp.sync_talon (integration_id) "
                                 "VALUES (?)", rows)
            self._db.execute("COMMIT")
        return len(rows)

    def adopt_talon(self, audience_id: int) -> None:
        """Replace the recorded membership with what was read from Talon.One, and know it."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("DELETE FROM audience_members WHERE audience_id = ?",
                                 (audience_id,))
                self._db.execute("INSERT INTO audience_members (audience_id, integration_id) "
                                 "SELECT ?, integration_id FROM temp.sync_talon", (audience_id,))
                self._db.execute("DELETE FROM audience_known WHERE audience_id = ?",
                                 (audience_id,))
                self._db.execute("INSERT INTO audience_known (audience_id, source, since) "
                                 "VALUES (?, 'talon', ?)", (audience_id, _now()))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def plan(self, audience_id: int, mode: str, baseline: str = BASELINE_STATE,
             removes: bool = True) -> Plan:
        """Queue what the loaded list needs against ``baseline``, in SQL; return the counts.

        ``mode`` ``add``: the listed ids not in the baseline. ``remove``: the
        listed ids in it (every listed id when ``removes`` is False, i.e. the
        baseline is not the whole membership). ``mirror``: both ways; the
        members to remove only when ``removes`` (otherwise it can only add).
        Adds come first, each kind in id order.
        """
        if baseline == BASELINE_TALON:
            base = "temp.sync_talon b WHERE b.integration_id = l.integration_id"
            members = "SELECT b.integration_id FROM temp.sync_talon b"
        else:
            base = ("audience_members b WHERE b.audience_id = :aid AND "
                    "b.integration_id = l.integration_id")
            members = "SELECT b.integration_id FROM audience_members b WHERE b.audience_id = :aid"
        params = {"aid": audience_id, "add": ADD, "delete": DELETE}
        with self._lock:
            db = self._db
            db.execute("DELETE FROM temp.sync_pending")
            db.execute("BEGIN")
            try:
                if mode in ("add", "mirror"):
                    db.execute("INSERT INTO temp.sync_pending (action, integration_id, source, "
                               "line) SELECT :add, l.integration_id, l.source, l.line FROM "
                               f"temp.sync_list l WHERE NOT EXISTS (SELECT 1 FROM {base})",
                               params)
                adds = db.execute("SELECT COUNT(*) FROM temp.sync_pending").fetchone()[0]
                if mode == "remove":
                    where = f"WHERE EXISTS (SELECT 1 FROM {base})" if removes else ""
                    db.execute("INSERT INTO temp.sync_pending (action, integration_id, source, "
                               "line) SELECT :delete, l.integration_id, l.source, l.line FROM "
                               f"temp.sync_list l {where}", params)
                elif mode == "mirror" and removes:
                    db.execute("INSERT INTO temp.sync_pending (action, integration_id) "
                               f"SELECT :delete, m.integration_id FROM ({members}) m WHERE NOT "
                               "EXISTS (SELECT 1 FROM temp.sync_list l WHERE l.integration_id "
                               "= m.integration_id)", params)
                total = db.execute("SELECT COUNT(*) FROM temp.sync_pending").fetchone()[0]
                listed = db.execute("SELECT COUNT(*) FROM temp.sync_list").fetchone()[0]
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        removed = total - adds
        unchanged = listed - adds if mode != "remove" else listed - removed
        return Plan(adds, removed, unchanged)

    def pending(self, batch_size: int) -> Iterator[list[Pending]]:
        """The queued actions in batches of ``batch_size``, in order.

        Each batch is one finished query, so recording acknowledged actions
        between batches (on this connection) is safe.
        """
        last = 0
        while True:
            with self._lock:
                rows = self._db.execute(
                    "SELECT seq, action, integration_id, source, line FROM temp.sync_pending "
                    "WHERE seq > ? ORDER BY seq LIMIT ?", (last, batch_size)).fetchall()
            if not rows:
                return
            yield [Pending(*row) for row in rows]
            last = rows[-1][0]

    # -- audiences created for another platform's ------------------------------
    def audience_id_for(self, integration: str, integration_id: str) -> int | None:
        """The remembered Talon.One id of ``integration``'s audience ``integration_id``, or None."""
        with self._lock:
            row = self._db.execute("SELECT audience_id FROM audience_ids WHERE integration = ? "
                                   "AND integration_id = ?",
                                   (integration, integration_id)).fetchone()
        return row[0] if row else None

    def remember_audience_id(self, integration: str, integration_id: str,
                             audience_id: int) -> None:
        """Remember (or correct) the Talon.One id of ``integration``'s audience ``integration_id``."""
        self._write([("INSERT OR REPLACE INTO audience_ids (integration, integration_id, "
                      "audience_id) VALUES (?, ?, ?)", [(integration, integration_id,
                                                          audience_id)])])

    def forget_audience_id(self, integration: str, integration_id: str) -> None:
        """Forget a remembered id (its audience was deleted in Talon.One)."""
        self._write([("DELETE FROM audience_ids WHERE integration = ? AND integration_id = ?",
                      [(integration, integration_id)])])
