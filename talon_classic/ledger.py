"""The delivery ledger: what Talon.One acknowledged, kept between runs.

talon-classic promises that, for one integrationId and one attribute, a value
is never replaced by a value from an older event. Inside one run the merge
(:mod:`talon_classic.merge`) keeps that promise; the ledger keeps it across
runs, replays of dead letters, ``--resume``, restarts of ``serve`` and
``deadletter retry``: for every integrationId and attribute it records the
ordering key of the last value Talon.One acknowledged, and a digest of that
value. Its in-memory cache is the merger's ordering window.

The ordering key
    A value's key is (its event's ``timestamp``, the order talon-classic read
    it in). The ledger stores the timestamp. The second part is the same for
    everything it holds: all of it was read before anything being sent now
    (one run at a time uses a ledger, see ``exclusive``; a replayed or retried
    dead letter is read again), so on equal timestamps the value being sent
    wins, as the later of two lines of one file does. An event without a
    readable timestamp counts as read last: its values take the timestamp of
    the value they replace (none for a new attribute), so they are always
    sent, and later events are judged against that timestamp. No timestamp
    sorts before every timestamp. The merge applies the same rules inside a
    run, so the two always agree.
The digest
    64 bits: the CRC-32 and the Adler-32 of the value's JSON
    (:func:`digest_pairs`). It decides ``--skip-unchanged`` (an equal digest:
    the value is not sent again). Taking it costs about a fifth of the bulk
    path's CPU, so it is taken by the runs that use it (``skip_unchanged``):
    a value acknowledged by another run has no digest ("unknown", stored as
    ``(0, 0)``; an Adler-32 of 0 never occurs) and counts as changed.
Uncertain deliveries
    A request that timed out or lost its connection after it was sent may
    still be carried out by Talon.One, later than requests sent after it
    (a retry that succeeded included). Its profiles are kept in
    ``ledger_uncertain`` with the newest acknowledged value of each attribute
    that request carried (kept up to date as later batches are
    acknowledged), and a ``due`` time (by default twice the read timeout
    after the request). Once due, those values are sent once more
    (:meth:`Ledger.pending`), so a late request cannot have the last word.

Storage: a SQLite database in WAL mode, ``synchronous=FULL``. Tables (created
with ``CREATE TABLE IF NOT EXISTS``; other parts of talon-classic keep their
own tables in the same file): ``ledger_meta`` (format, deployment, id prefix;
``open`` while a process writes, see :attr:`Ledger.unclean`),
``ledger_shapes`` (the lists of attribute names profiles have, numbered),
``ledger_profiles`` (one row per integrationId: its shape, its attributes'
timestamps and digests, packed in a few bytes) and ``ledger_uncertain``. It is written only after Talon.One
acknowledged (:meth:`Ledger.record`), before the checkpoint is, so a crash
never leaves it ahead of Talon.One.

Batched both ways: :meth:`Ledger.lookup` is one query for a whole batch of
ids, :meth:`Ledger.record` one transaction for a batch (group-committed with
the batches of other threads waiting for the write lock). Every statement
does all its rows in one SQLite step, so a thread waiting for SQLite gives
the GIL back once, not once per row (with a busy reading thread, winning it
back costs up to the switch interval each time).
"""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
import struct
import sys
import threading
import time
import zlib
from array import array
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from talon_classic.exceptions import LedgerError, first_line
from talon_classic.groupcommit import GroupCommit
from talon_classic.jsonio import BadLine, dumps, dumps_bytes, loads
from talon_classic.sqliteuri import read_only

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows
    fcntl = None  # type: ignore[assignment]

try:  # the ``fast`` extra: a C-level map over the values, no Python frame per value
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised where orjson is not installed
    _orjson = None  # type: ignore[assignment]

__all__ = ["FORMAT", "IDENTIFY_HINT", "Entries", "Ledger", "Uncertain", "digest_pairs",
           "digests"]

#: The layout of the ledger's tables and entries; a newer one is refused.
FORMAT = 1
#: How a user of ``identify`` gets past an unusable ledger.
IDENTIFY_HINT = "give --state FILE (another state file) or --no-state (none)"
_START_OVER = "move it away to start over"

SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ledger_shapes (id INTEGER PRIMARY KEY, names TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS ledger_profiles (integration_id TEXT PRIMARY KEY,
    entry BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ledger_uncertain (integration_id TEXT PRIMARY KEY,
    due REAL NOT NULL, body TEXT NOT NULL) WITHOUT ROWID;
"""

#: A background writer commits what was queued this often, or once this many entries wait...
_GROUP_SECONDS = 0.5
_GROUP_ROWS = 20_000
#: ... and holds back callers while this many entries wait (it cannot keep up).
_QUEUE_LIMIT = 100_000
#: SQLite's result code for "database or disk is full".
_SQLITE_FULL = 13
#: Rows per multi-row INSERT (two parameters each, far below SQLite's 32,766).
_CHUNK = 1000
#: The WAL is copied back after this many pages: random keys touch a page each,
#: and a larger WAL lets one copy serve several batches' changes to a page.
_AUTOCHECKPOINT = 10_000

# -- entries: one profile's attributes, packed ------------------------------------------------
#: flags, then a shape number, or (INLINE) the length of the names' JSON that follows
_HEAD = struct.Struct("<BI")
_TS = struct.Struct("<d")
#: the common entry: one timestamp for every attribute, names by shape, no digests
_PLAIN = struct.Struct("<BId")
_ONE_TS = 0x01
_DIGESTS = 0x02
_INLINE = 0x04
_NAN = float("nan")
_LITTLE = sys.byteorder == "little"
#: Shapes (distinct lists of names) numbered at most; profiles of other shapes
#: carry their names inline, so memory stays bounded whatever the data.
MAX_SHAPES = 10_000
assert array("I").itemsize == 4 and array("d").itemsize == 8

#: Packs the timestamp ending a plain entry (NaN for none).
PACK_TS = _TS.pack
NO_TS = _NAN
#: The flag of an entry's first byte that says it holds digests.
HAS_DIGESTS = _DIGESTS

#: What the ledger knows of one profile: each attribute's timestamp, and the newest.
Stamps = dict[str, float | None]


def _raw(values: array) -> bytes:
    """An array's bytes, little-endian whatever the machine."""
    if not _LITTLE:  # pragma: no cover - big-endian machines
        values = array(values.typecode, values)
        values.byteswap()
    return values.tobytes()


def _read(typecode: str, data: bytes) -> array:
    out = array(typecode)
    out.frombytes(data)
    if not _LITTLE:  # pragma: no cover - big-endian machines
        out.byteswap()
    return out


def _encoded(values: list[Any]) -> list[bytes]:
    """The JSON of each value (as :func:`talon_classic.jsonio.dumps_bytes` writes it)."""
    if _orjson is not None:
        try:
            return list(map(_orjson.dumps, values))
        except (TypeError, ValueError, RecursionError):
            pass  # e.g. a huge integer: jsonio writes what orjson cannot
    return list(map(dumps_bytes, values))


def digest_pairs(values: Iterable[Any]) -> tuple[list[int], list[int]]:
    """CRC-32s and Adler-32s of the values' JSON: the digests, as two aligned lists.

    C-level maps only (no Python frame per value): ~0.1 µs a value.
    """
    encoded = _encoded(values if isinstance(values, list) else list(values))
    return list(map(zlib.crc32, encoded)), list(map(zlib.adler32, encoded))


def digests(values: Mapping[str, Any]) -> dict[str, int]:
    """Each value's 64-bit digest (CRC-32 << 32 | Adler-32 of its JSON), by name."""
    crcs, adlers = digest_pairs(list(values.values()))
    return {name: crc << 32 | adler for name, crc, adler in zip(values, crcs, adlers, strict=True)}


@dataclass
class Uncertain:
    """A profile whose request may still be carried out: when to repair it, and with what.

    ``values`` are the newest acknowledged values of the attributes that
    request carried; ``missing`` those of its attributes with no acknowledged
    value (nothing to repair them with). ``due`` is a wall-clock time.
    """

    due: float
    values: dict[str, Any] = field(default_factory=dict)
    missing: set[str] = field(default_factory=set)

    def copy(self) -> Uncertain:
        """A copy to change (the original stays as committed)."""
        return Uncertain(self.due, dict(self.values), set(self.missing))

    def body(self) -> str:
        """As stored in ``ledger_uncertain``."""
        return dumps({"values": self.values, "missing": sorted(self.missing)})


class Entries:
    """Ledger entries (integrationId, entry) as two aligned lists.

    Not a tuple per profile: those are objects the garbage collector counts
    and scans while they wait for the writer, and with the bulk pipeline's
    raised collection threshold each collection walks tens of thousands of
    objects. Iterating gives ``(integrationId, entry)`` pairs.
    """

    __slots__ = ("ids", "blobs")

    def __init__(self, pairs: Iterable[tuple[str, bytes]] = ()) -> None:
        self.ids: list[str] = []
        self.blobs: list[bytes] = []
        for iid, blob in pairs:
            self.ids.append(iid)
            self.blobs.append(blob)

    def add(self, iid: str, blob: bytes) -> None:
        """One more entry."""
        self.ids.append(iid)
        self.blobs.append(blob)

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        return zip(self.ids, self.blobs, strict=True)

    def __repr__(self) -> str:
        return f"Entries({len(self)} profiles)"


@dataclass
class _Ticket:
    """One caller's changes waiting in a group commit."""

    entries: Entries
    sent: Sequence[Mapping[str, Any]]
    delivered: Collection[str]
    uncertain: Mapping[str, float]
    repaired: Collection[str]
    then: Callable[[], None] | None = None
    then_once: Callable[[], None] | None = None
    done: bool = False
    error: BaseException | None = None


class Ledger:
    """The ledger of one Talon.One deployment and id prefix, in one SQLite file.

    ``deployment`` (a URL, or ``emulator:PATH``) and ``id_prefix`` are
    recorded when the file is created and must match later: a ledger of
    another deployment is refused, never silently used. ``readonly`` (dry
    runs) reads and never writes, nor creates the file. ``exclusive`` holds
    an advisory lock for the ledger's lifetime, so two ``identify`` runs
    cannot interleave their orders. ``hint`` ends every error message: how
    the user gets past it.

    ``background``: :meth:`record` queues and returns; a writer thread
    commits what is queued every half second (:data:`_GROUP_SECONDS`), so a
    page of the table changed by many batches is written once, then runs
    each record's ``then`` (the bulk pipeline's checkpoint marks: so the
    checkpoint is never ahead of the ledger). After a crash the ledger may
    be up to that long behind Talon.One, never ahead of it. Without it (the
    server), :meth:`record` returns once committed.

    Thread-safe: lookups have a connection of their own, writes another
    (group-committed).
    """

    def __init__(self, path: str | os.PathLike[str], deployment: str, id_prefix: str = "", *,
                 readonly: bool = False, exclusive: bool = False,
                 hint: str = IDENTIFY_HINT, background: bool = False) -> None:
        self.path = os.fspath(path)
        self.deployment = deployment
        self.id_prefix = id_prefix
        self.readonly = readonly
        self.hint = hint
        self._lock_file: IO[bytes] | None = None
        self._shape_ids: dict[tuple[str, ...], int] = {}
        self._shapes: list[tuple[str, ...]] = []
        self._unsaved: dict[int, tuple[str, ...]] = {}
        self._plain_heads: dict[tuple[str, ...], bytes] = {}
        self._mixed_heads: dict[tuple[str, ...], bytes] = {}
        self._names_lock = threading.Lock()
        #: The ledger held no profile when opened (what it holds now, this process wrote).
        self.started_empty = False
        #: The last process that wrote this file did not close it (killed, or its machine
        #: stopped): a request it had in flight may still be carried out by Talon.One,
        #: later than what this process sends (see :meth:`overtaken_until`).
        self.unclean = False
        #: What ``ledger_meta`` held when opened (what this process knows of the last one).
        self._meta: dict[str, str] = {}
        #: Entries given to :meth:`record` since opened.
        self.recorded = 0
        self._read_lock = threading.Lock()
        #: Without the background writer: callers commit together (see record).
        self._commits: GroupCommit[_Ticket] = GroupCommit(self._commit)
        self._group = threading.Condition()
        self._queue: list[_Ticket] = []
        self._pending: dict[str, Uncertain] = {}
        self._pending_lock = threading.Lock()
        # the background writer: what is queued or being committed, by integrationId
        self._unwritten: dict[str, bytes] = {}
        self._queued_rows = 0
        self._marks_queued = 0  # queued records with uncertain deliveries, not committed yet
        self._committing = False
        self._flushing = 0
        self._closing = False
        #: close() was called: what comes after (a thread a second Ctrl-C left running) is
        #: refused with reason "closed", never run on a closed database
        self._closed = False
        self._failure: BaseException | None = None
        self._writer: threading.Thread | None = None
        self._db: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        #: No profile in the file yet: lookups need no query until one is written.
        self._empty = False
        try:
            self._open(exclusive)
        except BaseException:
            self.close()
            raise
        if background and not readonly:
            self._writer = threading.Thread(target=self._write_loop, name="talon-ledger",
                                            daemon=True)
            self._writer.start()

    # -- opening ----------------------------------------------------------------------
    def _fail(self, what: str, remedy: str | None = None,
              reason: str | None = None) -> LedgerError:
        """``PATH: what; remedy, or <hint>`` as one line."""
        return LedgerError(f"{self.path}: {what}; {remedy + ', or ' if remedy else ''}{self.hint}",
                           reason)

    def _sqlite_problem(self, exc: sqlite3.Error) -> LedgerError:
        """SQLite's reason (it never holds user data) as a :class:`LedgerError`."""
        text = first_line(exc)
        if getattr(exc, "sqlite_errorcode", None) == _SQLITE_FULL or "disk is full" in text:
            return self._fail("cannot write the state file: disk full", reason="disk full")
        if not isinstance(exc, sqlite3.OperationalError) and isinstance(exc, sqlite3.DatabaseError):
            # "file is not a database", "database disk image is malformed"
            return self._fail(f"not a usable state file ({text})", _START_OVER)
        if "locked" in text or "busy" in text:
            return self._fail(f"locked by another program ({text})", "wait for it")
        if "unable to open" in text or "readonly" in text or "permission" in text.lower():
            return self._fail(f"cannot open the state file: permission denied ({text})")
        return self._fail(f"cannot use the state file ({text})", reason=text)

    def _open(self, exclusive: bool) -> None:
        path = self.path
        if os.path.isdir(path):
            raise self._fail("is a directory, not a state file")
        exists = os.path.exists(path)
        if exists and not os.access(path, os.R_OK | (0 if self.readonly else os.W_OK)):
            raise self._fail("cannot open the state file: permission denied")
        if not exists:
            if self.readonly:
                raise self._fail("no such state file")
            try:
                # users' ids: readable by this user only (SQLite gives -wal/-shm the same mode)
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
            except OSError as exc:
                raise self._fail(f"cannot create the state file: {exc.strerror or exc}") from None
        if exclusive and not self.readonly and fcntl is not None:
            self._lock_file = open(path, "rb")  # noqa: SIM115 - held for the ledger's lifetime
            try:
                fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise self._fail("in use by another talon-classic run",
                                 "wait for it to finish") from None
        try:
            self._db = self._connect(writer=True)
            self._reader = self._connect(writer=False)
            self._load()
        except sqlite3.Error as exc:
            raise self._sqlite_problem(exc) from None

    def _connect(self, writer: bool) -> sqlite3.Connection:
        if self.readonly:
            db = sqlite3.connect(read_only(self.path), uri=True, isolation_level=None,
                                 check_same_thread=False, timeout=10)
        else:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                 timeout=10)
        # small caches: the sorted insert visits each page once, in order; lookups have the
        # operating system's cache; memory stays bounded whatever the ledger's size
        db.execute("PRAGMA cache_size=-4096" if writer else "PRAGMA cache_size=-2048")
        if writer and not self.readonly:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute(f"PRAGMA wal_autocheckpoint={_AUTOCHECKPOINT}")
            db.executescript(SCHEMA)
            # a group's entries land here first (memory, in arrival order), then go into
            # the table sorted by key in one statement: SQLite sorts, the GIL is free,
            # and each page of the table is visited once, in order
            db.execute("PRAGMA temp_store=MEMORY")
            db.execute("CREATE TEMP TABLE IF NOT EXISTS ledger_group "
                       "(integration_id TEXT NOT NULL, entry BLOB NOT NULL)")
        return db

    def _load(self) -> None:
        """Check the meta table (or write it, for a new ledger); load names and uncertain."""
        db = self._db
        assert db is not None
        try:
            meta = dict(db.execute("SELECT key, value FROM ledger_meta").fetchall())
        except sqlite3.OperationalError as exc:
            if self.readonly and "no such table" in str(exc):
                meta = {}  # a state file no ledger was written to yet
            else:
                raise
        if not meta and not self.readonly:
            with self._transaction() as cur:
                cur.executemany("INSERT OR IGNORE INTO ledger_meta VALUES (?, ?)", [
                    ("format", str(FORMAT)), ("deployment", self.deployment),
                    ("id_prefix", self.id_prefix)])
            meta = dict(db.execute("SELECT key, value FROM ledger_meta").fetchall())
        if not meta:  # read only, nothing recorded
            self._empty = True
            return
        version = meta.get("format", "")
        if not version.isdigit():
            raise self._fail("not a talon-classic ledger (no format recorded)", _START_OVER)
        if int(version) > FORMAT:
            raise self._fail(f"written by a newer talon-classic (ledger format {version})",
                             "upgrade talon-classic")
        theirs = (meta.get("deployment"), meta.get("id_prefix", ""))
        if theirs != (self.deployment, self.id_prefix):
            raise self._fail(f"holds the ordering of {_where(*theirs)}, not of "
                             f"{_where(self.deployment, self.id_prefix)}")
        for number, names in db.execute("SELECT id, names FROM ledger_shapes ORDER BY id"):
            try:
                shape = tuple(loads(names))
            except (BadLine, TypeError):
                shape = ()
            if number != len(self._shapes) or not all(isinstance(n, str) for n in shape):
                raise self._fail("damaged (attribute names cannot be read)", _START_OVER)
            self._shape_ids[shape] = number
            self._shapes.append(shape)
        for iid, due, body in db.execute("SELECT integration_id, due, body FROM ledger_uncertain"):
            try:
                data = loads(body)
                self._pending[iid] = Uncertain(float(due), dict(data["values"]),
                                               set(data["missing"]))
            except (BadLine, KeyError, TypeError, ValueError):
                raise self._fail("damaged (an uncertain delivery cannot be read)",
                                 _START_OVER) from None
        self._empty = db.execute("SELECT 1 FROM ledger_profiles LIMIT 1").fetchone() is None
        self.started_empty = self._empty
        self._meta = meta
        if not self.readonly:  # removed by close(): still there next time, it was not called
            self.unclean = meta.get("open") == "1"
            with self._transaction() as cur:
                cur.execute("INSERT OR REPLACE INTO ledger_meta VALUES ('open', '1')")

    @contextlib.contextmanager
    def _transaction(self) -> Any:
        """One write transaction: committed, or rolled back on any error."""
        db = self._db
        assert db is not None
        cur = db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
            cur.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    cur.execute("ROLLBACK")
            raise

    # -- reading -----------------------------------------------------------------------
    def lookup(self, iids: Collection[str]) -> dict[str, bytes]:
        """The recorded entries of those of ``iids`` the ledger knows: one query."""
        hits: dict[str, bytes] = {}
        if self._unwritten:  # queued for the background writer: newer than the table
            with self._group:
                unwritten = self._unwritten
                hits = {iid: unwritten[iid] for iid in iids if iid in unwritten}
            if hits:
                iids = [iid for iid in iids if iid not in hits]
        if self._empty or not iids:
            return hits
        self._refuse_if_closed()
        reader = self._reader
        assert reader is not None
        param = dumps(iids if isinstance(iids, list) else list(iids))
        try:
            with self._read_lock:
                row = reader.execute(
                    "SELECT json_group_object(p.integration_id, hex(p.entry)) FROM json_each(?) "
                    "AS j JOIN ledger_profiles AS p ON p.integration_id = j.value",
                    (param,)).fetchone()
        except sqlite3.Error as exc:
            raise self._sqlite_problem(exc) from None
        found = loads(row[0]) if row and row[0] else {}
        hits.update((iid, bytes.fromhex(hexed)) for iid, hexed in found.items())
        return hits

    def _unpack(self, blob: bytes) -> tuple[tuple[str, ...], list[float | None] | float | None,
                                            array | None, array | None]:
        """An entry: names, timestamps (one for all, or one each), CRC-32s and Adler-32s
        (None without digests)."""
        try:
            flags, number = _HEAD.unpack_from(blob)
            at = _HEAD.size
            if flags & _INLINE:
                names = tuple(loads(blob[at:at + number]))
                at += number
            else:
                names = self._shapes[number]
            count = len(names)
            one: float | None = None
            each: list[float | None] | None = None
            if flags & _ONE_TS:
                one = _TS.unpack_from(blob, at)[0]
                at += 8
                if math.isnan(one):
                    one = None
            else:
                each = [None if t != t else t for t in _read("d", blob[at:at + 8 * count])]
                at += 8 * count
                if len(each) != count:
                    raise ValueError("length")
            crcs = adlers = None
            if flags & _DIGESTS:
                crcs = _read("I", blob[at:at + 4 * count])
                adlers = _read("I", blob[at + 4 * count:at + 8 * count])
                at += 8 * count
                if len(adlers) != count:
                    raise ValueError("length")
            if len(blob) != at:
                raise ValueError("length")
        except (struct.error, ValueError, IndexError, TypeError, BadLine):
            raise self._fail("damaged (an entry cannot be read)", _START_OVER) from None
        return names, (one if each is None else each), crcs, adlers

    def stamps(self, blob: bytes) -> tuple[Stamps, float | None]:
        """An entry's timestamp of each attribute, and the newest of them (None if none)."""
        names, times, _, _ = self._unpack(blob)
        if not isinstance(times, list):
            return dict.fromkeys(names, times), times
        stamps = dict(zip(names, times, strict=True))
        known = [t for t in times if t is not None]
        return stamps, max(known) if known else None

    def digests(self, blob: bytes | None) -> dict[str, int]:
        """An entry's known 64-bit digests of its attributes' values, by name."""
        if blob is None:
            return {}
        names, _, crcs, adlers = self._unpack(blob)
        if crcs is None or adlers is None:
            return {}
        return {name: crc << 32 | adler for name, crc, adler in zip(names, crcs, adlers,
                                                                    strict=True) if adler}

    # -- writing -----------------------------------------------------------------------
    def _shape(self, names: tuple[str, ...]) -> int | None:
        """The number of a list of names (a new one is numbered), None past MAX_SHAPES."""
        number = self._shape_ids.get(names)
        if number is not None:
            return number
        with self._names_lock:
            number = self._shape_ids.get(names)
            if number is None:
                if len(self._shapes) >= MAX_SHAPES:
                    return None
                number = self._shape_ids[names] = len(self._shapes)
                self._shapes.append(names)
                self._unsaved[number] = names
            return number

    def plain(self, stamps: Mapping[str, float | None], ts: float | None) -> bytes:
        """The entry of a profile whose attributes all have timestamp ``ts``, no digests:
        a new profile's, the common case (two dict lookups and a pack)."""
        head = self._plain_heads.get(tuple(stamps))
        if head is None:
            head = self.plain_head(stamps)
            if head is None:
                return self.entry(stamps, {})
        return head + _TS.pack(_NAN if ts is None else ts)

    def plain_head(self, stamps: Mapping[str, float | None]) -> bytes | None:
        """What a plain entry of these names starts with (None past :data:`MAX_SHAPES`);
        :meth:`plain` is this plus the packed timestamp (:data:`PACK_TS`)."""
        names = tuple(stamps)
        head = self._plain_heads.get(names)
        if head is None:
            shape = self._shape(names)
            if shape is None:
                return None
            head = self._plain_heads[names] = _HEAD.pack(_ONE_TS, shape)
        return head

    def undigested(self, stamps: Mapping[str, float | None]) -> bytes:
        """The entry of a profile none of whose values has a digest: its names (a shape)
        and timestamps only; what :meth:`entry` gives then, with less work."""
        names = tuple(stamps)
        times = list(stamps.values())
        first = times[0] if times else None
        if times.count(first) == len(times):
            head = self._plain_heads.get(names) or self.plain_head(stamps)
            if head is not None:
                return head + _TS.pack(_NAN if first is None else first)
        elif None not in times:
            head = self._mixed_heads.get(names)
            if head is None:
                shape = self._shape(names)
                if shape is not None:
                    head = self._mixed_heads[names] = _HEAD.pack(0, shape)
            if head is not None:
                return head + _raw(array("d", times))
        return self.entry(stamps, {})

    @property
    def plain_heads(self) -> Mapping[tuple[str, ...], bytes]:
        """The known beginnings of plain entries, by names (read it, never change it)."""
        return self._plain_heads

    def entry(self, stamps: Mapping[str, float | None], fresh: Mapping[str, Any],
              before: bytes | None = None, digest: bool = False,
              fresh_digests: Mapping[str, int] | None = None) -> bytes:
        """The packed state of a profile: every attribute of ``stamps`` with its timestamp.

        ``fresh``: the values just acknowledged. With ``digest`` their digests
        are kept (``fresh_digests`` when given, else taken here), else they
        are unknown; the other attributes keep their digests from ``before``
        (the entry until now).
        """
        names = tuple(stamps)
        times = list(stamps.values())
        count = len(names)
        first = times[0] if count else None
        one = times.count(first) == count
        shape = self._shape(names)
        if shape is not None and not digest and (before is None or not before[0] & _DIGESTS):
            # no digest to keep (the common case): shape and timestamps only
            if one:
                return _PLAIN.pack(_ONE_TS, shape, _NAN if first is None else first)
            if None not in times:
                return _HEAD.pack(0, shape) + _raw(array("d", times))
        combined: list[int] = []
        if digest or (before is not None and before[0] & _DIGESTS):
            old = self.digests(before)
            new = dict(fresh_digests) if fresh_digests is not None else {}
            if digest:
                todo = [name for name in fresh if name not in new]
                if todo:
                    new.update(digests({name: fresh[name] for name in todo}))
            combined = [new.get(n, 0) if n in fresh else old.get(n, 0) for n in names]
        flags = _ONE_TS if one else 0
        parts: list[bytes]
        if shape is None:
            inline = dumps_bytes(list(names))
            parts = [_HEAD.pack(flags | _INLINE, len(inline)), inline]
        else:
            parts = [_HEAD.pack(flags, shape)]
        if one:
            parts.append(_TS.pack(_NAN if first is None else first))
        else:
            parts.append(_raw(array("d", [_NAN if t is None else t for t in times])))
        if any(combined):
            parts[0] = bytes([parts[0][0] | _DIGESTS]) + parts[0][1:]
            parts.append(_raw(array("I", [d >> 32 for d in combined])))
            parts.append(_raw(array("I", [d & 0xFFFFFFFF for d in combined])))
        return b"".join(parts)

    @property
    def writable(self) -> bool:
        """Does :meth:`record` write (False for a read-only ledger: dry runs)?"""
        return not self.readonly

    def record(self, entries: Entries | Sequence[tuple[str, bytes]] = (), *,
               sent: Sequence[Mapping[str, Any]] = (), delivered: Collection[str] = (),
               uncertain: Mapping[str, float] | None = None,
               repaired: Collection[str] = (), then: Callable[[], None] | None = None,
               then_once: Callable[[], None] | None = None) -> None:
        """Record what Talon.One acknowledged, durably, in one transaction; thread-safe.

        ``entries``: ``(integrationId, entry)`` of the profiles whose state
        changed (:meth:`entry`). ``sent``: the profiles of the request(s),
        ``delivered``: the integrationIds acknowledged among them. For an
        uncertain profile (:attr:`pending`), the values acknowledged now
        become the ones it is repaired with. ``uncertain``: integrationId ->
        due time of the profiles whose request may still land (timed out or
        lost its connection after sending). ``repaired``: profiles no longer
        uncertain. ``then`` runs once this is committed; ``then_once`` after
        the ``then`` of every record committed together, once per distinct
        callable (the pipeline marks each batch in its checkpoint, then saves
        the checkpoint once). Concurrent callers share one commit (and one
        fsync). A read-only ledger records nothing.
        With a background writer this returns at once (raising what an
        earlier commit failed with, if one did).
        """
        self._refuse_if_closed()
        ticket = _Ticket(entries if isinstance(entries, Entries) else Entries(entries), sent,
                         delivered, uncertain or {}, repaired, then, then_once)
        with self._names_lock:
            self.recorded += len(entries)
        if self.readonly:
            _follow_up([ticket])
            return
        if self._writer is not None:
            self._enqueue(ticket)
            return
        self._commits.submit(ticket)
        if ticket.error is not None:
            self._raise(ticket.error)
        _follow_up([ticket])

    def _refuse_if_closed(self) -> None:
        if self._closed or self._closing:
            raise LedgerError(f"{self.path}: closed while the run was ending; what was not "
                              "recorded is sent again by the next run", "closed")

    def _raise(self, error: BaseException) -> None:
        if isinstance(error, sqlite3.Error):
            raise self._sqlite_problem(error) from None
        raise error

    # -- the background writer -----------------------------------------------------------
    def _enqueue(self, ticket: _Ticket) -> None:
        with self._group:
            while (self._queued_rows > _QUEUE_LIMIT and self._failure is None
                   and not self._closing):
                self._group.wait()
            if self._failure is not None:
                self._raise(self._failure)
            self._queue.append(ticket)
            self._queued_rows += len(ticket.entries)
            if ticket.uncertain:
                self._marks_queued += 1
            self._unwritten.update(zip(ticket.entries.ids, ticket.entries.blobs, strict=True))
            if len(self._queue) == 1 or self._queued_rows >= _GROUP_ROWS:
                self._group.notify_all()  # the writer starts its half second, or commits now

    def _write_loop(self) -> None:
        """Commit what is queued, in groups, until closed; then run the records' ``then``."""
        group: list[_Ticket] = []
        while True:
            with self._group:
                while not self._queue and not self._closing:
                    self._group.wait()
                if not self._queue:
                    return  # closing, all written
                deadline = time.monotonic() + _GROUP_SECONDS
                while (self._queued_rows < _GROUP_ROWS and not self._flushing
                       and not self._closing):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._group.wait(left)
                group, self._queue = self._queue, []
                self._queued_rows = 0
                self._committing = True
                failed = self._failure is not None
                self._group.notify_all()  # room in the queue again
            error: BaseException | None = None
            if not failed:  # after a failure nothing more is written (its callers were told)
                try:
                    self._commit(group)
                    _follow_up(group)
                except BaseException as exc:  # noqa: BLE001 - handed to the next caller
                    error = exc
            with self._group:
                self._committing = False
                self._marks_queued -= sum(1 for t in group if t.uncertain)
                if error is not None and self._failure is None:
                    self._failure = error
                unwritten = self._unwritten
                for t in group:
                    for iid, blob in zip(t.entries.ids, t.entries.blobs, strict=True):
                        if unwritten.get(iid) is blob:
                            del unwritten[iid]
                self._group.notify_all()

    def flush(self) -> None:
        """Wait until everything recorded is committed (background writer); raise what a
        commit failed with, as a :class:`LedgerError` when it was SQLite's."""
        if self._writer is None:
            return
        with self._group:
            self._flushing += 1
            self._group.notify_all()
            try:
                while (self._queue or self._committing) and self._failure is None \
                        and self._writer.is_alive():
                    self._group.wait(0.5)
            finally:
                self._flushing -= 1
            if self._failure is not None:
                self._raise(self._failure)

    def _commit(self, group: list[_Ticket]) -> None:
        ids = [iid for t in group for iid in t.entries.ids]
        blobs = [blob for t in group for blob in t.entries.blobs]
        changes: dict[str, Uncertain | None] = {}
        for t in group:
            self._track(t, changes)
        with self._names_lock:
            shapes = sorted(self._unsaved.items())
        if not ids and not changes and not shapes:
            return  # nothing changed: no transaction, no fsync
        with self._transaction() as cur:
            if shapes:
                cur.executemany("INSERT OR IGNORE INTO ledger_shapes (id, names) VALUES (?, ?)",
                                [(number, dumps(list(names))) for number, names in shapes])
            for start in range(0, len(ids), _CHUNK):
                count = min(_CHUNK, len(ids) - start)
                params: list[Any] = [None] * (2 * count)  # interleaved, with no pair objects
                params[0::2] = ids[start:start + count]
                # as bytearrays: sqlite3 binds str and bytearray directly, but looks a bytes
                # value up in its adapters first (a failed attribute lookup, an exception
                # raised and cleared), which cost more than the insert itself
                params[1::2] = map(bytearray, blobs[start:start + count])
                cur.execute("INSERT INTO ledger_group VALUES " + ",".join(["(?,?)"] * count),
                            params)
            if ids:  # the later of two entries of one profile wins: rowid order
                cur.execute("INSERT OR REPLACE INTO ledger_profiles SELECT integration_id, entry "
                            "FROM ledger_group ORDER BY integration_id, rowid")
                cur.execute("DELETE FROM ledger_group")
            gone = [iid for iid, u in changes.items() if u is None]
            if gone:
                cur.execute("DELETE FROM ledger_uncertain WHERE integration_id IN "
                            "(SELECT value FROM json_each(?))", (dumps(gone),))
            kept = [(iid, u.due, u.body()) for iid, u in changes.items() if u is not None]
            for start in range(0, len(kept), _CHUNK):
                chunk3 = kept[start:start + _CHUNK]
                cur.execute("INSERT OR REPLACE INTO ledger_uncertain VALUES "
                            + ",".join(["(?,?,?)"] * len(chunk3)),
                            [v for row in chunk3 for v in row])
        with self._names_lock:
            for number, _ in shapes:
                self._unsaved.pop(number, None)
        with self._pending_lock:
            for iid, u in changes.items():
                if u is None:
                    self._pending.pop(iid, None)
                else:
                    self._pending[iid] = u
        if ids:
            self._empty = False

    def _track(self, t: _Ticket, changes: dict[str, Uncertain | None]) -> None:
        """What ``t`` changes in the uncertain deliveries (into ``changes``)."""
        if not t.uncertain and not t.repaired and not (self._pending or changes):
            return  # the common case: nothing uncertain anywhere

        def current(iid: str) -> Uncertain | None:
            found = changes[iid] if iid in changes else self._pending.get(iid)
            return None if found is None else found.copy()

        delivered = t.delivered if isinstance(t.delivered, set | frozenset) else set(t.delivered)
        # the delivered among the uncertain (never a walk over all that is uncertain: with a
        # million of them, that was 90 ms per batch)
        pending = self._pending
        watched = {iid for iid in delivered if iid in pending or iid in changes} if (
            pending or changes) else set()
        for profile in t.sent:
            iid = profile["integrationId"]
            attributes = profile["attributes"]
            if iid in watched:  # newer acknowledged values to repair it with
                u = current(iid)
                if u is not None:
                    for name in (u.values.keys() | u.missing) & attributes.keys():
                        u.values[name] = attributes[name]
                        u.missing.discard(name)
                    changes[iid] = u
            due = t.uncertain.get(iid)
            if due is not None:
                u = current(iid) or Uncertain(due)
                u.due = max(u.due, due)
                for name, value in attributes.items():
                    if iid in delivered:
                        u.values[name] = value
                        u.missing.discard(name)
                    elif name not in u.values:
                        u.missing.add(name)
                changes[iid] = u
        for iid in t.repaired:
            if iid not in t.uncertain:
                changes[iid] = None

    def count(self) -> int:
        """How many profiles the ledger holds (committed): one query, walks the table."""
        reader = self._reader
        assert reader is not None
        try:
            with self._read_lock:
                return int(reader.execute("SELECT COUNT(*) FROM ledger_profiles").fetchone()[0])
        except sqlite3.Error as exc:
            raise self._sqlite_problem(exc) from None

    # -- uncertain deliveries --------------------------------------------------------------
    @property
    def watching(self) -> bool:
        """Are uncertain deliveries waiting (so :meth:`record` needs ``delivered``)?"""
        return bool(self._pending) or self._marks_queued > 0

    @property
    def pending(self) -> dict[str, Uncertain]:
        """The uncertain deliveries not repaired yet, by integrationId (a copy; with a
        background writer, as of the last commit: :meth:`flush` first)."""
        with self._pending_lock:
            return {iid: u.copy() for iid, u in self._pending.items()}

    def due(self, now: float) -> dict[str, Uncertain]:
        """The uncertain deliveries whose time has come at ``now`` (wall clock)."""
        with self._pending_lock:
            return {iid: u.copy() for iid, u in self._pending.items() if u.due <= now}

    def overtaken_until(self, repair_after: float) -> float:
        """Until when (wall clock) a request of an earlier process may still land; 0.0 if
        none can. What this process delivers before then may be overtaken by it, with
        older values, so it must be repaired once that moment has passed.

        A process that is about to deliver calls this once, with its own
        ``repair_after`` (how long one of its requests may take to land: twice its
        read timeout). When the last process was killed (:attr:`unclean`), its
        request may land until its own ``repair_after`` from now (recorded when it
        called this). Both are kept in the state file, so the deadline holds for
        every later process until it has passed, even if this one ends first
        (Ctrl-C, a wrong key), and the next process knows this one's window.
        """
        if self.readonly:
            return 0.0
        now = time.time()
        until = _number(self._meta.get("overtaken_until"))
        if self.unclean:
            last = _number(self._meta.get("repair_after")) or repair_after
            until = max(until, now + last)
        self._refuse_if_closed()
        # its own connection: the background writer may be using the main one
        try:
            with contextlib.closing(sqlite3.connect(self.path, timeout=10,
                                                    isolation_level=None)) as db:
                db.execute("BEGIN IMMEDIATE")
                db.execute("INSERT OR REPLACE INTO ledger_meta VALUES ('repair_after', ?)",
                           (repr(float(repair_after)),))
                if until > now:
                    db.execute("INSERT OR REPLACE INTO ledger_meta VALUES "
                               "('overtaken_until', ?)", (repr(until),))
                else:
                    db.execute("DELETE FROM ledger_meta WHERE key = 'overtaken_until'")
                db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._sqlite_problem(exc) from None
        self._meta = {**self._meta, "repair_after": repr(float(repair_after)),
                      "overtaken_until": repr(until)}
        return until if until > now else 0.0

    # -- the end ---------------------------------------------------------------------------
    def close(self) -> None:
        """Write what is queued, close the database (a clean close also folds the WAL
        back) and release the lock. What a failed commit lost stays lost (it was
        raised to the caller already)."""
        writer = self._writer
        if writer is not None:
            with self._group:
                self._closing = True
                self._group.notify_all()
            writer.join()
            self._writer = None
        self._closed = True
        if self._db is not None and not self.readonly and self._failure is None:
            with contextlib.suppress(sqlite3.Error):  # still marked: the next one is careful
                with self._transaction() as cur:
                    cur.execute("DELETE FROM ledger_meta WHERE key = 'open'")
        for db in (self._reader, self._db):
            if db is not None:
                with contextlib.suppress(sqlite3.Error):
                    db.close()
        self._reader = self._db = None
        if self._lock_file is not None:
            self._lock_file.close()  # releases the flock
            self._lock_file = None

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Ledger({self.path!r}, {_where(self.deployment, self.id_prefix)})"


def _number(text: str | None) -> float:
    """A number ``ledger_meta`` holds (0.0 when absent or not a finite number >= 0)."""
    try:
        value = float(text) if text is not None else 0.0
    except ValueError:
        return 0.0
    return value if 0.0 <= value < float("inf") else 0.0


def _follow_up(group: list[_Ticket]) -> None:
    """Each record's ``then`` in order, then each distinct ``then_once`` once."""
    once: list[Callable[[], None]] = []
    for t in group:
        if t.then is not None:
            t.then()
        if t.then_once is not None and t.then_once not in once:
            once.append(t.then_once)
    for callback in once:
        callback()


def _where(deployment: str | None, id_prefix: str | None) -> str:
    """A deployment and id prefix as a message names them."""
    return f"{deployment or 'an unknown deployment'}" + (
        f" with id prefix {id_prefix!r}" if id_prefix else "")
