"""The server's durable queue: accepted events in SQLite until Talon.One has them.

``talon-classic serve`` acknowledges an event only after :meth:`Spool.append`
has committed it: WAL mode with ``synchronous=FULL``, so the commit is on
disk (the WAL is fsynced) before the HTTP answer goes out, and a ``kill -9``
(or a power cut) at any moment loses nothing acknowledged.

An fsync costs milliseconds whatever it writes, so concurrent requests share
one (group commit): while one request's transaction is being committed,
the others queue their events; the next committer writes all of them in one
transaction. Each request still waits for its own events to be on disk.

Tables: ``pending`` (events waiting for delivery, in arrival order),
``seen`` (messageIds, to drop duplicates within a window, as Segment does),
``dead`` (events Talon.One rejected, for ``talon-classic deadletter``) and
``probe`` (one row, rewritten to find out whether writes work again).

A write that fails (disk full, I/O error, locked) is rolled back and
raised, and the spool remembers it (:attr:`Spool.write_error`) until a
write succeeds, so ``/health`` and the metrics can say so.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from talon_classic.exceptions import SpoolError
from talon_classic.groupcommit import GroupCommit

SCHEMA = """
CREATE TABLE IF NOT EXISTS pending (seq INTEGER PRIMARY KEY AUTOINCREMENT,
    received REAL NOT NULL, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS seen (message_id TEXT PRIMARY KEY, received REAL NOT NULL);
CREATE INDEX IF NOT EXISTS seen_received ON seen (received);
CREATE TABLE IF NOT EXISTS dead (seq INTEGER PRIMARY KEY, received REAL NOT NULL,
    body BLOB NOT NULL, reason TEXT NOT NULL, error TEXT, failed REAL NOT NULL);
CREATE TABLE IF NOT EXISTS probe (id INTEGER PRIMARY KEY, at REAL NOT NULL);
"""

#: SQLite's result code for "database or disk is full".
SQLITE_FULL = 13


def describe_write_error(exc: sqlite3.Error) -> str:
    """SQLite's own one-line reason (it never holds user data), "disk full" for SQLITE_FULL."""
    if getattr(exc, "sqlite_errorcode", None) == SQLITE_FULL or "disk is full" in str(exc):
        return "disk full"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


@dataclass
class _Ticket:
    """One caller's events waiting in a group commit."""

    events: list[tuple[bytes, str | None]]
    stored: int = 0
    dupes: int = 0
    done: bool = False
    error: BaseException | None = None


@dataclass
class DeadLetter:
    """One event Talon.One would not take."""

    seq: int
    body: bytes
    reason: str
    error: str | None
    failed: float


class Spool:
    """A thread-safe SQLite spool; one connection, one writer at a time."""

    def __init__(self, path: str | os.PathLike[str], dedupe_window: float = 24 * 3600,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = os.fspath(path)
        self.dedupe_window = dedupe_window
        self._clock = clock
        self._lock = threading.Lock()
        self._db, self._depth = self._open()
        self._pruned = 0.0
        self._commits: GroupCommit[_Ticket] = GroupCommit(self._commit)
        #: Why the last write failed ("disk full", ...); None once a write succeeds.
        self.write_error: str | None = None
        #: Writes that failed since the spool was opened.
        self.write_errors = 0

    @property
    def depth(self) -> int:
        """Events waiting for delivery (kept as a counter; see :meth:`recount`)."""
        return self._depth

    def recount(self) -> int:
        """Count waiting events again (another process, e.g. ``deadletter retry``, may add).

        ``COUNT(*)`` walks the table: call it when the queue is short.
        """
        with self._lock:
            self._depth = self._db.execute("SELECT COUNT(*) FROM pending").fetchone()[0]
        return self._depth

    def append(self, events: Iterable[tuple[bytes, str | None]]) -> tuple[int, int]:
        """Store ``(body, messageId)`` pairs durably; return (stored, duplicates).

        Group commit (:mod:`talon_classic.groupcommit`): concurrent callers'
        events go in one transaction and one fsync. Each caller returns only
        once its own events are on disk, so acknowledging after this call is
        safe.
        """
        ticket = _Ticket(list(events))
        self._commits.submit(ticket)
        if ticket.error is not None:
            raise ticket.error
        return ticket.stored, ticket.dupes

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Cursor]:
        """One write transaction under the lock: committed, or rolled back on any error.

        A failed write (disk full, I/O error) must not leave the connection
        inside a transaction, or every later write would fail too.
        """
        with self._lock:
            cur = self._db.cursor()
            try:
                cur.execute("BEGIN IMMEDIATE")
                yield cur
                cur.execute("COMMIT")
            except BaseException as exc:
                if self._db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        cur.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    self.write_errors += 1
                    self.write_error = describe_write_error(exc)
                raise
            self.write_error = None

    def _commit(self, group: list[_Ticket]) -> None:
        now = self._clock()
        try:
            with self._write() as cur:
                if now - self._pruned > 60:
                    cur.execute("DELETE FROM seen WHERE received < ?", (now - self.dedupe_window,))
                    self._pruned = now
                ids = [m for t in group for _, m in t.events if m is not None]
                known: set[str] = set()
                for start in range(0, len(ids), 500):  # SQLite's host-parameter limit
                    chunk = ids[start:start + 500]
                    known.update(row[0] for row in cur.execute(
                        f"SELECT message_id FROM seen WHERE message_id IN "
                        f"({','.join('?' * len(chunk))}) AND received >= ?",
                        (*chunk, now - self.dedupe_window)))
                rows: list[tuple[float, bytearray]] = []
                fresh: list[tuple[str, float]] = []
                for ticket in group:
                    for body, message_id in ticket.events:
                        if message_id is not None:
                            if message_id in known:
                                ticket.dupes += 1
                                continue
                            known.add(message_id)
                            fresh.append((message_id, now))
                        # a bytearray binds directly; bytes go through sqlite3's adapter
                        # lookup first, which costs more than the copy
                        rows.append((now, bytearray(body)))
                        ticket.stored += 1
                cur.executemany("INSERT OR REPLACE INTO seen VALUES (?, ?)", fresh)
                cur.executemany("INSERT INTO pending (received, body) VALUES (?, ?)", rows)
        except BaseException:
            for ticket in group:
                ticket.stored = ticket.dupes = 0
            raise
        self._depth += len(rows)

    def note_failure(self, reason: str) -> None:
        """Another writer of this database file (the ordering ledger) failed: report it
        as the spool's own write error (``reason``, e.g. "disk full") until a write works."""
        self.write_errors += 1
        self.write_error = reason

    def take(self, limit: int) -> list[tuple[int, float, bytes]]:
        """The oldest ``limit`` pending events as ``(seq, received, body)``; kept until acked."""
        with self._lock:
            return self._db.execute(
                "SELECT seq, received, body FROM pending ORDER BY seq LIMIT ?", (limit,)).fetchall()

    def ack(self, seqs: Iterable[int]) -> None:
        """Forget delivered (or skipped) events."""
        rows = [(s,) for s in seqs]
        if not rows:
            return
        with self._write() as cur:
            before = self._db.total_changes
            cur.executemany("DELETE FROM pending WHERE seq = ?", rows)
            removed = self._db.total_changes - before
        self._depth -= removed

    def bury(self, failures: Iterable[tuple[int, str, str | None]]) -> None:
        """Move events to the dead-letter table: ``(seq, reason, error)``."""
        rows = list(failures)
        if not rows:
            return
        now = self._clock()
        moved = 0
        with self._write() as cur:
            for seq, reason, error in rows:
                cur.execute(
                    "INSERT OR REPLACE INTO dead SELECT seq, received, body, ?, ?, ? "
                    "FROM pending WHERE seq = ?", (reason, error, now, seq))
                cur.execute("DELETE FROM pending WHERE seq = ?", (seq,))
                moved += cur.rowcount
        self._depth -= moved

    def _open(self) -> tuple[sqlite3.Connection, int]:
        """The spool's database (created 0600 if new) and how many events wait in it;
        :class:`SpoolError` (one line) if it is a directory, not a database, or cannot be
        created."""
        path = self.path
        if os.path.isdir(path):
            raise SpoolError(f"{path}: is a directory, not a spool (give a file for --spool)")
        db = None
        try:
            if path != ":memory:" and not os.path.exists(path):
                # the spool holds users' traits: readable by this user only (SQLite
                # gives the -wal and -shm files the database file's permissions)
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
            db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(SCHEMA)
            depth = db.execute("SELECT COUNT(*) FROM pending").fetchone()[0]
        except OSError as exc:
            raise SpoolError(f"{path}: cannot create the spool: {exc.strerror or exc}") from None
        except sqlite3.Error as exc:
            if db is not None:
                db.close()
            raise SpoolError(f"{path}: not a usable spool ({describe_write_error(exc)}); "
                             "give another --spool "
                             "or move this file away") from None
        return db, depth

    def dead_letters(self, limit: int = 1000, offset: int = 0) -> list[DeadLetter]:
        """Dead letters, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, body, reason, error, failed FROM dead ORDER BY seq LIMIT ? OFFSET ?",
                (limit, offset)).fetchall()
        return [DeadLetter(*row) for row in rows]

    def dead_count(self) -> int:
        """How many dead letters there are."""
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM dead").fetchone()[0]

    def retry_dead(self) -> int:
        """Queue every dead letter again (after the cause is fixed); return how many.

        They join the end of the queue with new sequence numbers, as if they
        had just arrived: events that came after them keep their place, and
        the merge's per-attribute timestamps still keep newer values on top.
        """
        now = self._clock()
        with self._write() as cur:
            cur.execute("INSERT INTO pending (received, body) SELECT ?, body "
                        "FROM dead ORDER BY seq", (now,))
            moved = cur.rowcount
            cur.execute("DELETE FROM dead")
        self._depth += moved
        return moved

    def writable(self) -> bool:
        """Can the spool take the write lock right now (not locked, not read-only)? (for /health)"""
        try:
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute("ROLLBACK")
            return True
        except sqlite3.Error:
            return False

    def probe(self) -> bool:
        """Try one small real write (a row of ``probe``); True when it worked.

        For finding out that a full disk has space again when nothing else
        writes (:meth:`writable` only takes the write lock, which works on a
        full disk too).
        """
        try:
            with self._write() as cur:
                cur.execute("INSERT OR REPLACE INTO probe (id, at) VALUES (1, ?)", (self._clock(),))
        except sqlite3.Error:
            return False
        return True

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
