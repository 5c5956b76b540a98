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
* ``audience_inflight (id, audience_id, actions)``: one row per membership
  request in flight, its ``(action, integration_id)`` pairs as JSON,
  committed before the request is sent and deleted in the transaction that
  records its acknowledgement (:meth:`AudienceState.begin_request`,
  :meth:`AudienceState.record`). A row left behind is a request whose
  process died (``kill -9``, a crash) or whose answer never came: Talon.One
  may or may not have applied it.
* ``audience_unsure (audience_id, integration_id)``: ids whose recorded
  membership cannot be trusted, because a request about them was left in
  flight or ran out of retries. The next sync of the audience turns its
  in-flight rows into these (:meth:`AudienceState.load_unsure`) and sends
  each of them the action the list asks for whatever is recorded; an
  acknowledgement (or a membership read from Talon.One, or a clear) makes
  an id sure again.
* ``audience_ids (integration, integration_id, audience_id)``: the Talon.One
  id of an audience created for another platform's audience (an Engage
  audience is ``segment`` + its ``computation_id``), so it is created once.

A list to sync is loaded into a temporary table and compared with the
recorded membership in SQL (:meth:`AudienceState.changes`): a million ids
are never held in Python, twice or even once. Temporary tables live in a
temporary file, so memory stays flat whatever the list's size.

The changes stream out of one query while they are delivered, so delivery
starts with the first thousand rather than after the whole diff. Two
connections make that safe: the diff reads through one (holding the list's
temporary tables; in WAL mode its query sees the database as it was when
it started), and acknowledged actions are recorded through the other, each
request's in its own transaction, as soon as it is acknowledged.

An in-flight row is committed like every other write here: in WAL mode with
``synchronous=NORMAL``, a commit is written to the WAL file (the operating
system has it) without waiting for ``fsync``. That outlives the process
(``kill -9``, a crash), which is what a row must survive: the requests it
describes come from that process. A power cut may lose the last commits,
the in-flight rows and the recorded acknowledgements alike, as it may
anything not yet on disk; waiting for ``fsync`` before every request would
not be cheap on every disk.

Without a file (``--no-state``, or a dry run with no state yet) the same
code runs on a private temporary database, deleted when closed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import tempfile
import threading
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

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
CREATE TABLE IF NOT EXISTS audience_inflight (
    id INTEGER PRIMARY KEY,
    audience_id INTEGER NOT NULL,
    actions TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audience_unsure (
    audience_id INTEGER NOT NULL,
    integration_id TEXT NOT NULL,
    PRIMARY KEY (audience_id, integration_id)
) WITHOUT ROWID;
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
CREATE TEMP TABLE IF NOT EXISTS sync_unsure (
    integration_id TEXT PRIMARY KEY
) WITHOUT ROWID;
"""

#: Where the membership a list is compared with comes from.
BASELINE_STATE = "state"
BASELINE_TALON = "talon"
#: Rows given to SQLite at once while loading.
_CHUNK = 10_000
#: Pages of the temporary database kept in memory (negative: KiB), enough for a fast
#: diff of millions of ids and still small.
_TEMP_CACHE_KIB = 64 * 1024


class Pending(NamedTuple):
    """One action a sync must send: ``source``/``line`` say where in the list its id came
    from (None for a member a mirror removes because it is not in the list)."""

    action: str
    integration_id: str
    source: int | None
    line: int | None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection, begin: str) -> Iterator[None]:
    """``begin`` (``BEGIN`` or ``BEGIN IMMEDIATE``), the block, then ``COMMIT``; on any
    error (Ctrl-C too) ``ROLLBACK``, and the error goes on. The caller holds the lock."""
    db.execute(begin)
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


class AudienceState:
    """Recorded memberships, known audiences and created audiences' ids, in one SQLite file.

    ``path`` None: a private temporary database, gone when closed. A
    ``path`` whose directory is missing has it created (mode 0700); a new
    file is created 0600 (it names users). Thread-safe (one lock around the
    connection).
    """

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = Path(path) if path is not None else None
        self._scratch: str | None = None
        if self.path is not None:
            ensure_dir(self.path.parent)
            if not self.path.exists():
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
            file = os.fspath(self.path)
        else:
            self._scratch = tempfile.mkdtemp(prefix="talon-classic-state-")
            file = os.path.join(self._scratch, "state.db")
        # One lock per connection: a long step of the diff (on _list, perhaps in another
        # thread) must not hold up recording (on _main).
        self._lock = threading.RLock()
        self._list_lock = threading.RLock()
        # _main: the lasting tables, always a fresh view; _list: the list's temporary
        # tables and the diff's query (see the module's docstring).
        self._main = self._connect(file)
        self._main.executescript(_SCHEMA)
        self._list = self._connect(file)
        self._list.execute("PRAGMA temp_store=FILE")
        self._list.execute(f"PRAGMA temp.cache_size=-{_TEMP_CACHE_KIB}")
        self._list.executescript(_TEMP_SCHEMA)

    @staticmethod
    def _connect(file: str) -> sqlite3.Connection:
        db = sqlite3.connect(file, isolation_level=None, check_same_thread=False, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    @property
    def persistent(self) -> bool:
        """Does what is recorded outlive this object (a file, not ``--no-state``)?"""
        return self.path is not None

    def close(self) -> None:
        """Close the database (a temporary one is deleted)."""
        with self._list_lock, self._lock:
            self._list.close()
            self._main.close()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)

    def __enter__(self) -> AudienceState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, statements: Iterable[tuple[str, Iterable[tuple[object, ...]]]]) -> None:
        """Run ``(sql, rows)`` pairs (executemany) in one transaction."""
        with self._lock, _transaction(self._main, "BEGIN IMMEDIATE"):
            for sql, rows in statements:
                self._main.executemany(sql, rows)

    # -- recorded memberships ---------------------------------------------------
    def is_known(self, audience_id: int) -> bool:
        """Is the recorded membership of ``audience_id`` taken as its whole membership?"""
        with self._lock:
            return self._main.execute("SELECT 1 FROM audience_known WHERE audience_id = ?",
                                    (audience_id,)).fetchone() is not None

    def known_source(self, audience_id: int) -> str | None:
        """Where the known membership started (``mirror``, ``talon``, ``clear``), or None."""
        with self._lock:
            row = self._main.execute("SELECT source FROM audience_known WHERE audience_id = ?",
                                   (audience_id,)).fetchone()
        return row[0] if row else None

    def mark_known(self, audience_id: int, source: str) -> None:
        """Take the recorded membership as the whole from now on (kept if already so)."""
        self._write([("INSERT OR IGNORE INTO audience_known (audience_id, source, since) "
                      "VALUES (?, ?, ?)", [(audience_id, source, _now())])])

    def begin_request(self, audience_id: int, actions: Iterable[tuple[str, str]]) -> int:
        """Note a request's ``(action, integration_id)`` pairs as in flight, before it is sent.

        Committed when this returns (see the module's docstring for how
        durably): should the process die before the answer is recorded, the
        next sync of the audience takes these ids as unsure. Returns the
        note's id, for :meth:`record`.
        """
        text = json.dumps(list(actions), separators=(",", ":"))
        with self._lock:
            cursor = self._main.execute(
                "INSERT INTO audience_inflight (audience_id, actions) VALUES (?, ?)",
                (audience_id, text))
            request = cursor.lastrowid
        assert request is not None
        return request

    def record(self, audience_id: int, actions: Iterable[tuple[str, str]],
               known: str | None = None, *, request: int | None = None,
               unsure: Iterable[str] = (), resolves: bool = False) -> None:
        """Record acknowledged ``(action, integration_id)`` pairs, in one transaction.

        ``known`` also marks the audience as known (see :meth:`mark_known`) in
        the same transaction, so a mirror's first acknowledged request and
        that mark are never separated by a crash. ``request`` (from
        :meth:`begin_request`) is the in-flight note this answer ends, deleted
        in the same transaction; ``unsure`` the ids of that request whose
        outcome is not known (their retries ran out), which stay unsure.
        ``resolves``: some ids of the audience are unsure, and those
        acknowledged here are sure again.
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
        if resolves:
            statements.append(("DELETE FROM audience_unsure WHERE audience_id = ? AND "
                               "integration_id = ?", adds + deletes))
        if known is not None:
            statements.append(("INSERT OR IGNORE INTO audience_known (audience_id, source, "
                               "since) VALUES (?, ?, ?)", [(audience_id, known, _now())]))
        if request is not None:
            statements.append(("DELETE FROM audience_inflight WHERE id = ?", [(request,)]))
            statements.append(("INSERT OR IGNORE INTO audience_unsure (audience_id, "
                               "integration_id) VALUES (?, ?)",
                               [(audience_id, iid) for iid in unsure]))
        self._write(statements)

    def load_unsure(self, audience_id: int, settle: bool = True) -> int:
        """Take the ids of ``audience_id`` whose membership is unsure as this sync's; how many.

        ``settle``: first turn the audience's in-flight notes (requests whose
        answer was never recorded) into unsure ids, for good (a dry run
        does not: it only reads them). :meth:`changes` then sends each
        unsure id the action the list asks for, whatever is recorded.
        """
        if settle:
            with self._lock, _transaction(self._main, "BEGIN IMMEDIATE"):
                self._main.executemany(
                    "INSERT OR IGNORE INTO audience_unsure (audience_id, integration_id) "
                    "VALUES (?, ?)",
                    ((audience_id, iid) for iid in self._inflight_ids(self._main, audience_id)))
                self._main.execute("DELETE FROM audience_inflight WHERE audience_id = ?",
                                   (audience_id,))
        with self._list_lock, _transaction(self._list, "BEGIN"):
            db = self._list
            db.execute("DELETE FROM temp.sync_unsure")
            db.execute("INSERT OR IGNORE INTO temp.sync_unsure (integration_id) SELECT "
                       "integration_id FROM main.audience_unsure WHERE audience_id = ?",
                       (audience_id,))
            if not settle:
                db.executemany("INSERT OR IGNORE INTO temp.sync_unsure (integration_id) "
                               "VALUES (?)",
                               ((iid,) for iid in self._inflight_ids(db, audience_id)))
            count: int = db.execute("SELECT COUNT(*) FROM temp.sync_unsure").fetchone()[0]
        return count

    @staticmethod
    def _inflight_ids(db: sqlite3.Connection, audience_id: int) -> Iterator[str]:
        """The ids of the audience's in-flight notes (an unreadable note names none)."""
        rows = db.execute("SELECT actions FROM audience_inflight WHERE audience_id = ?",
                          (audience_id,)).fetchall()
        for (text,) in rows:
            try:
                pairs = json.loads(text)
            except ValueError:
                continue
            for pair in pairs if isinstance(pairs, list) else ():
                if isinstance(pair, list) and len(pair) == 2 and isinstance(pair[1], str):
                    yield pair[1]

    def unsure_ids(self, audience_id: int) -> list[str]:
        """The ids of ``audience_id`` marked unsure (in flight not included), sorted."""
        with self._lock:
            rows = self._main.execute("SELECT integration_id FROM audience_unsure WHERE "
                                      "audience_id = ? ORDER BY 1", (audience_id,)).fetchall()
        return [iid for (iid,) in rows]

    def inflight_count(self, audience_id: int | None = None) -> int:
        """How many requests are noted in flight (for ``audience_id``, or every audience)."""
        with self._lock:
            if audience_id is None:
                row = self._main.execute("SELECT COUNT(*) FROM audience_inflight").fetchone()
            else:
                row = self._main.execute("SELECT COUNT(*) FROM audience_inflight WHERE "
                                         "audience_id = ?", (audience_id,)).fetchone()
        count: int = row[0]
        return count

    def unknown(self, audience_id: int) -> None:
        """Record nothing of an audience's members, and not as known: what an ``audience
        clear`` does before it asks Talon.One, so a clear that fails halfway (or whose
        record afterwards fails) never leaves members recorded that Talon.One dropped."""
        self._write([
            ("DELETE FROM audience_members WHERE audience_id = ?", [(audience_id,)]),
            ("DELETE FROM audience_known WHERE audience_id = ?", [(audience_id,)])])

    def reset(self, audience_id: int, source: str = "clear") -> None:
        """The audience is empty (``audience clear``): no members, and that is known (nor
        is any id unsure any more)."""
        self._write([
            ("DELETE FROM audience_members WHERE audience_id = ?", [(audience_id,)]),
            ("DELETE FROM audience_unsure WHERE audience_id = ?", [(audience_id,)]),
            ("DELETE FROM audience_inflight WHERE audience_id = ?", [(audience_id,)]),
            ("DELETE FROM audience_known WHERE audience_id = ?", [(audience_id,)]),
            ("INSERT INTO audience_known (audience_id, source, since) VALUES (?, ?, ?)",
             [(audience_id, source, _now())])])

    def forget(self, audience_id: int) -> None:
        """Forget everything about an audience (``audience delete``), its id mapping too."""
        self._write([
            ("DELETE FROM audience_members WHERE audience_id = ?", [(audience_id,)]),
            ("DELETE FROM audience_unsure WHERE audience_id = ?", [(audience_id,)]),
            ("DELETE FROM audience_inflight WHERE audience_id = ?", [(audience_id,)]),
            ("DELETE FROM audience_known WHERE audience_id = ?", [(audience_id,)]),
            ("DELETE FROM audience_ids WHERE audience_id = ?", [(audience_id,)])])

    def member_count(self, audience_id: int) -> int:
        """How many members are recorded for ``audience_id``."""
        with self._lock:
            count: int = self._main.execute(
                "SELECT COUNT(*) FROM audience_members WHERE audience_id = ?",
                (audience_id,)).fetchone()[0]
        return count

    def members(self, audience_id: int) -> Iterator[str]:
        """The recorded members, sorted (fetched in pages, never all at once)."""
        last = ""
        while True:
            with self._lock:
                rows = self._main.execute(
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
        with self._list_lock:
            self._list.executescript("DELETE FROM temp.sync_list; DELETE FROM temp.sync_talon; "
                                     "DELETE FROM temp.sync_unsure;")

    def add_to_list(self, rows: list[tuple[str, int, int]]) -> int:
        """Load ``(integration_id, source, line)`` rows; return how many were new (not duplicates)."""
        return self._load("INSERT OR IGNORE INTO temp.sync_list (integration_id, source, line) "
                          "VALUES (?, ?, ?)", rows)

    def add_talon_members(self, ids: Iterable[str]) -> int:
        """Load members read from Talon.One into the temporary baseline; return how many."""
        total = 0
        chunk: list[tuple[str]] = []
        for iid in ids:
            chunk.append((iid,))
            if len(chunk) >= _CHUNK:
                total += self._load("INSERT OR IGNORE INTO temp.sync_talon (integration_id) "
                                    "VALUES (?)", chunk)
                chunk = []
        if chunk:
            total += self._load("INSERT OR IGNORE INTO temp.sync_talon (integration_id) "
                                "VALUES (?)", chunk)
        return total

    def _load(self, sql: str, rows: list[tuple[str, int, int]] | list[tuple[str]]) -> int:
        with self._list_lock:
            db = self._list
            before = db.total_changes
            with _transaction(db, "BEGIN"):
                db.executemany(sql, rows)
            return db.total_changes - before

    def adopt_talon(self, audience_id: int) -> None:
        """Replace the recorded membership with what was read from Talon.One, and know it.

        Ids taken as unsure before the read (:meth:`load_unsure`) are sure
        again: what was read is the truth."""
        with self._list_lock:
            db = self._list  # where the temporary baseline is
            with _transaction(db, "BEGIN IMMEDIATE"):
                db.execute("DELETE FROM audience_members WHERE audience_id = ?", (audience_id,))
                db.execute("DELETE FROM audience_unsure WHERE audience_id = ?", (audience_id,))
                db.execute("DELETE FROM temp.sync_unsure")
                db.execute("INSERT INTO audience_members (audience_id, integration_id) "
                           "SELECT ?, integration_id FROM temp.sync_talon", (audience_id,))
                db.execute("DELETE FROM audience_known WHERE audience_id = ?", (audience_id,))
                db.execute("INSERT INTO audience_known (audience_id, source, since) "
                           "VALUES (?, 'talon', ?)", (audience_id, _now()))

    def listed(self) -> int:
        """How many distinct ids the loaded list holds."""
        with self._list_lock:
            count: int = self._list.execute("SELECT COUNT(*) FROM temp.sync_list").fetchone()[0]
        return count

    def changes(self, audience_id: int, mode: str, baseline: str = BASELINE_STATE,
                removes: bool = True, batch_size: int = 1000) -> Iterator[list[Pending]]:
        """What the loaded list needs against ``baseline``, in batches, computed as they go.

        ``mode`` ``add``: the listed ids not in the baseline. ``remove``: the
        listed ids in it (every listed id when ``removes`` is False, i.e. the
        baseline is not the whole membership). ``mirror``: both ways; the
        members to remove only when ``removes`` (otherwise it can only add).
        Removes come first, then adds, each kind in id order.

        Both sides are read in id order (their primary keys), so SQLite
        compares them by merging (``EXCEPT``/``INTERSECT`` with ``ORDER BY``):
        one pass over each, no lookup per id. The queries share one read
        transaction, ``batch_size`` rows read at a time: recording
        acknowledged actions meanwhile (through the other connection)
        changes nothing they return. They may run in another thread than the
        one recording. Actions carry no list position (see :meth:`position`).

        Against the state, the unsure ids (:meth:`load_unsure`) get the
        action the list asks for whatever is recorded: a listed one is added
        (``add``, ``mirror``) or removed (``remove``), and one not listed is
        removed by a mirror that removes. An unsure id the list says nothing
        of stays unsure, for a later sync.
        """
        with self._list_lock:
            self._list.execute("BEGIN")  # one snapshot for every query
        cursor: sqlite3.Cursor | None = None
        batch: list[Pending] = []  # filled across queries: removes and adds share requests
        try:
            for action, sql in self._diff_queries(mode, baseline, removes):
                with self._list_lock:
                    cursor = self._list.execute(sql, {"aid": audience_id})
                while True:
                    with self._list_lock:
                        rows = cursor.fetchmany(batch_size - len(batch))
                    if not rows:
                        break
                    batch += [Pending(action, iid, None, None) for (iid,) in rows]
                    if len(batch) >= batch_size:
                        yield batch
                        batch = []
                with self._list_lock:
                    cursor.close()
                cursor = None
            if batch:
                yield batch
        finally:
            with self._list_lock:
                if cursor is not None:
                    cursor.close()
                self._list.execute("COMMIT")

    def _diff_queries(self, mode: str, baseline: str, removes: bool) -> list[tuple[str, str]]:
        """The queries of :meth:`changes`, in its read transaction (it sees the unsure ids)."""
        with self._list_lock:
            unsure = baseline == BASELINE_STATE and self._list.execute(
                "SELECT 1 FROM temp.sync_unsure LIMIT 1").fetchone() is not None
        if baseline == BASELINE_TALON:
            members = "SELECT integration_id FROM temp.sync_talon"
        else:
            members = "SELECT integration_id FROM main.audience_members WHERE audience_id = :aid"
        listed = "SELECT integration_id FROM temp.sync_list"
        # compound selects group from the left: (a EXCEPT b) UNION c, and so on
        also_listed = also_unlisted = ""
        if unsure:
            also_listed = (" UNION SELECT integration_id FROM temp.sync_list WHERE "
                           "integration_id IN (SELECT integration_id FROM temp.sync_unsure)")
            also_unlisted = f" UNION SELECT integration_id FROM temp.sync_unsure EXCEPT {listed}"
        queries: list[tuple[str, str]] = []
        if mode == "remove":
            queries.append((DELETE, f"{listed} INTERSECT {members}{also_listed} ORDER BY 1"
                            if removes else f"{listed} ORDER BY 1"))
        elif mode == "mirror" and removes:
            queries.append((DELETE, f"{members} EXCEPT {listed}{also_unlisted} ORDER BY 1"))
        if mode in ("add", "mirror"):
            queries.append((ADD, f"{listed} EXCEPT {members}{also_listed} ORDER BY 1"))
        return queries

    def position(self, integration_id: str) -> tuple[int, int] | None:
        """``(source, line)`` where the loaded list has ``integration_id`` first, or None."""
        with self._list_lock:
            row = self._list.execute("SELECT source, line FROM temp.sync_list WHERE "
                                     "integration_id = ?", (integration_id,)).fetchone()
        return (row[0], row[1]) if row else None

    # -- audiences created for another platform's ------------------------------
    def audience_id_for(self, integration: str, integration_id: str) -> int | None:
        """The remembered Talon.One id of ``integration``'s audience ``integration_id``, or None."""
        with self._lock:
            row = self._main.execute("SELECT audience_id FROM audience_ids WHERE integration = ? "
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
