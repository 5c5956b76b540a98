"""Engage audience memberships delivered to Talon.One: merged newest-first, never behind.

With ``engageAudiences`` ``memberships`` or ``both``, the events of a batch
(:mod:`talon_classic.engage` says which) become ``add``/``delete`` actions
of ``POST /v2/customer_audiences``, sent after the batch's profiles, by
``talon-classic identify`` (:class:`~talon_classic.bulk.Pipeline`) and
``serve``'s worker alike. The rules:

* **Newest wins, per profile and audience**, as attributes do
  (:mod:`talon_classic.merge`): the action of the event with the newest
  ``timestamp`` is sent, at equal timestamps the later event (input order);
  an event without a timestamp counts as the latest so far and keeps the
  timestamp of the action it replaced. The others are *superseded*.
* **Never behind what was acknowledged.** The :class:`MembershipLedger`
  (the ``membership_ledger`` table of the deployment's state database,
  :func:`talon_classic.state.state_file`) holds, per audience and profile,
  the last action Talon.One acknowledged and its timestamp. An action
  older than that one is superseded, in this run and in any later one (a
  rerun, serve restarted on its spool). It is written only once Talon.One
  acknowledged the request, so an action not delivered never holds back
  an older one that then would be.
* **Audiences found or created once** (:class:`~talon_classic.audience_ids.AudienceResolver`):
  the state database, then ``audienceIds``, then ``POST /v2/audiences``
  (integration ``segment``, ``integrationId`` the ``computation_id``, named
  the ``computation_key``), and on 409 the Management API's list. An
  audience deleted in Talon.One meanwhile (404) is created again and its
  actions sent once more.
* **Nothing lost.** What cannot be delivered goes where the batch's other
  failures go (identify's dead-letter file, serve's dead-letter table):
  every event behind the action, so replaying them restores it. An
  audience that exists but whose id cannot be found (409 without a
  management key or an ``audienceIds`` entry) is such a failure: its events
  are dead-lettered (``rejected``) with the one line that says what to set,
  the audience is not asked for again in this run, and the rest goes on.

Only profiles whose upsert was delivered get their memberships sent: the
events of a profile that failed are dead-lettered whole, memberships too.
Two batches holding one profile are never in flight at once (the pipeline
waits), so actions for one key are checked and recorded in batch order.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from talon_classic.audience_ids import SEGMENT, AudienceResolver
from talon_classic.audiences import ADD, MembershipAction
from talon_classic.engage import EngageMembership, membership_of
from talon_classic.exceptions import (
    AuthError,
    DeliveryError,
    RejectedError,
    RetriesExhausted,
)
from talon_classic.merge import Batch, Source, parse_timestamp
from talon_classic.state import ensure_dir

if TYPE_CHECKING:
    from talon_classic.audience_state import AudienceState
    from talon_classic.client import Client
    from talon_classic.deadletter_file import DeadLetters
    from talon_classic.management import ManagementClient
    from talon_classic.settings import Settings
    from talon_classic.summary import Summary

log = logging.getLogger("talon_classic.memberships")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS membership_ledger (
    audience_id INTEGER NOT NULL,
    integration_id TEXT NOT NULL,
    action TEXT NOT NULL,
    ts REAL,
    position TEXT,
    PRIMARY KEY (audience_id, integration_id)
) WITHOUT ROWID;
"""
#: Keys looked up in one query at most (SQLite's default limit on variables is 32766).
_LOOKUP = 400

#: A (Talon.One audience id, integrationId) pair: what one ledger row is about.
Key = tuple[int, str]


class MembershipLedger:
    """The last acknowledged action per audience and profile, in the state database.

    ``path`` None: a private temporary database, gone when closed (nothing
    outlives the run: ``--no-state``, an emulator that forgets). Thread-safe.
    """

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self._scratch: str | None = None
        if path is None:
            self._scratch = tempfile.mkdtemp(prefix="talon-classic-ledger-")
            file = os.path.join(self._scratch, "ledger.db")
        else:
            where = Path(path)
            ensure_dir(where.parent)
            if not where.exists():
                os.close(os.open(where, os.O_WRONLY | os.O_CREAT, 0o600))
            file = os.fspath(where)
        self.path = None if path is None else Path(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(file, isolation_level=None, check_same_thread=False,
                                   timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the database (a temporary one is deleted)."""
        with self._lock:
            self._db.close()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)

    def acknowledged(self, keys: Iterable[Key]) -> dict[Key, tuple[str, float | None]]:
        """``(action, ts)`` of the last acknowledged action for each key that has one."""
        wanted = list(dict.fromkeys(keys))
        found: dict[Key, tuple[str, float | None]] = {}
        with self._lock:
            for start in range(0, len(wanted), _LOOKUP):
                part = wanted[start:start + _LOOKUP]
                where = " OR ".join(["(audience_id = ? AND integration_id = ?)"] * len(part))
                rows = self._db.execute(
                    "SELECT audience_id, integration_id, action, ts FROM membership_ledger "
                    f"WHERE {where}", [v for key in part for v in key]).fetchall()
                found.update({(aid, iid): (action, ts) for aid, iid, action, ts in rows})
        return found

    def record(self, rows: Iterable[tuple[int, str, str, float | None, str | None]]) -> None:
        """Record acknowledged ``(audience_id, integration_id, action, ts, position)``, at once."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT OR REPLACE INTO membership_ledger (audience_id, integration_id, "
                    "action, ts, position) VALUES (?, ?, ?, ?, ?)", rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def forget_audience(self, audience_id: int) -> None:
        """Forget an audience's rows (it was deleted in Talon.One)."""
        with self._lock:
            self._db.execute("DELETE FROM membership_ledger WHERE audience_id = ?",
                             (audience_id,))


@dataclass
class _Wanted:
    """The winning action for one profile and Engage audience in a batch, and its events."""

    iid: str
    membership: EngageMembership
    ts: float | None
    position: str | None
    sources: list[Source] = field(default_factory=list)
    superseded: int = 0


@dataclass
class MembershipReport:
    """What became of one batch's memberships.

    ``dead``: ``(source, reason, error)`` for every event behind an action
    that was not delivered; ``reason`` is ``rejected`` (Talon.One refused
    it, or its audience cannot be found) or ``retries_exhausted``/``failed``
    (it may work later: serve keeps such events in its spool).
    """

    added: int = 0
    removed: int = 0
    superseded: int = 0
    dead: list[tuple[Source, str, str]] = field(default_factory=list)

    @property
    def retryable(self) -> list[tuple[Source, str, str]]:
        """The failures that may succeed later (not Talon.One's refusal)."""
        return [d for d in self.dead if d[1] != "rejected"]

    def record(self, dead_letters: DeadLetters | None, summary: Summary) -> None:
        """For a bulk run: dead-letter the failures (``file:line`` kept) and count everything."""
        rejected = sum(1 for _, reason, _ in self.dead if reason == "rejected")
        for (event, where), reason, error in self.dead:
            if dead_letters is not None:
                dead_letters.write(event, reason, error, str(where))
        summary.add(rejected=rejected, failed=len(self.dead) - rejected,
                    dead_lettered=len(self.dead))
        summary.count_memberships(self.added, self.removed, self.superseded)

    def for_spool(self, done: list[int], dead: list[tuple[int, str, str | None]]
                  ) -> tuple[list[int], list[tuple[int, str, str | None]], int]:
        """For serve: the spool seqs to ack and to bury, and how many stay spooled.

        A rejected action's events are buried (the dead-letter table) rather
        than acknowledged; a retryable one's stay in the spool (neither),
        to be sent again with their profile (upserts are idempotent).
        """
        bury = {int(seq): (reason, error) for (_, seq), reason, error in self.dead
                if reason == "rejected"}
        keep = {int(seq) for (_, seq), reason, _ in self.dead if reason != "rejected"}
        acked = [seq for seq in done if seq not in bury and seq not in keep]
        buried = [*dead, *((seq, reason, error) for seq, (reason, error) in bury.items()
                           if seq not in keep)]
        return acked, buried, len(keep)


def _merge(batch: Batch, failed: Collection[str]) -> list[_Wanted]:
    """Per delivered profile and Engage audience, the newest action (then the latest event).

    Every profile of the batch counts, also one the ledger left unsent because
    Talon.One already has its attributes (an Audience Entered track carries none).
    """
    out: list[_Wanted] = []
    for iid in batch.sources:
        if iid in failed:
            continue
        wanted: dict[str, _Wanted] = {}
        for source in batch.sources.get(iid, ()):
            event = source[0]
            membership = membership_of(event)
            if membership is None:
                continue
            ts = parse_timestamp(event.get("timestamp"))
            where = str(source[1])
            current = wanted.get(membership.computation_id)
            if current is None:
                wanted[membership.computation_id] = _Wanted(iid, membership, ts, where, [source])
                continue
            current.sources.append(source)
            current.superseded += 1
            if ts is None or current.ts is None or ts >= current.ts:
                current.membership = membership
                current.position = where
                if ts is not None:
                    current.ts = ts
        out += wanted.values()
    return out


class MembershipDelivery:
    """Sends the Engage memberships of delivered batches (see the module's docstring).

    Build it with :meth:`open` (or from parts for tests); :meth:`deliver`
    may be called from several sender threads at once; :meth:`close` at
    the end closes what :meth:`open` opened.
    """

    def __init__(self, client: Client, resolver: AudienceResolver, ledger: MembershipLedger,
                 *, warn: Callable[[str], None] | None = None,
                 closing: Iterable[Any] = ()) -> None:
        self.client = client
        self.resolver = resolver
        self.ledger = ledger
        self.warn = warn or log.warning
        self._closing = list(closing)
        #: Engage audiences (computation_id) that cannot be resolved in this run -> why.
        self._unresolved: dict[str, str] = {}
        self._lock = threading.Lock()

    @classmethod
    def open(cls, client: Client, settings: Settings, state_path: str | os.PathLike[str] | None,
             *, management: ManagementClient | None = None,
             warn: Callable[[str], None] | None = None) -> MembershipDelivery:
        """A delivery with its state database at ``state_path`` (None: nothing kept).

        The ``audienceIds`` of ``settings`` are the explicit map; without
        ``management``, one is made when the settings have a management key.
        """
        from talon_classic.audience_state import AudienceState

        if management is None and settings.management_key and settings.application_domain:
            from talon_classic.management import ManagementClient

            management = ManagementClient.from_settings(settings)
        state: AudienceState = AudienceState(state_path)
        try:
            ledger = MembershipLedger(state_path)
        except BaseException:
            state.close()
            raise
        resolver = AudienceResolver(client, integration=SEGMENT, state=state,
                                    management=management, known=settings.audience_ids)
        closing: list[Any] = [ledger, state]
        if management is not None:
            closing.append(management)
        return cls(client, resolver, ledger, warn=warn, closing=closing)

    def close(self) -> None:
        """Close the ledger, the state database and the management client :meth:`open` made."""
        for thing in self._closing:
            thing.close()
        self._closing = []

    def __enter__(self) -> MembershipDelivery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one batch --------------------------------------------------------------------
    def deliver(self, batch: Batch, failed: Collection[str] = ()) -> MembershipReport:
        """Send the memberships of ``batch``'s profiles not in ``failed``; say what became of them.

        AuthError propagates (nothing of it was recorded as acknowledged).
        """
        report = MembershipReport()
        wanted = _merge(batch, failed)
        if not wanted:
            return report
        report.superseded += sum(w.superseded for w in wanted)
        by_audience = self._resolve(wanted, report)
        if not by_audience:
            return report
        acked = self.ledger.acknowledged((aid, w.iid) for aid, w in by_audience)
        sending: dict[Key, tuple[_Wanted, float | None]] = {}
        for aid, w in by_audience:
            last = acked.get((aid, w.iid))
            ts = w.ts
            if last is not None and last[1] is not None:
                if ts is not None and ts < last[1]:
                    # Talon.One has a newer one: this action, and the events it won over
                    report.superseded += len(w.sources) - w.superseded
                    continue
                if ts is None:
                    ts = last[1]  # file order: it replaces that one, and keeps its timestamp
            sending[(aid, w.iid)] = (w, ts)
        self._send(sending, report, retry_missing=True)
        return report

    def _resolve(self, wanted: list[_Wanted], report: MembershipReport
                 ) -> list[tuple[int, _Wanted]]:
        """Each wanted action with its Talon.One audience id; the unresolvable dead-lettered.

        One thread at a time (it is quick once an audience is known): an
        audience that cannot be resolved is asked for once per run, not once
        per batch in flight.
        """
        out: list[tuple[int, _Wanted]] = []
        for w in wanted:
            m = w.membership
            with self._lock:
                why = self._unresolved.get(m.computation_id)
                if why is None:
                    try:
                        out.append((self.resolver.resolve(m.computation_id, m.computation_key,
                                                          keys=[m.computation_key]), w))
                        continue
                    except AuthError:
                        raise
                    except RejectedError as exc:  # 409 that cannot be looked up, or refused
                        why = (f"Engage audience {m.computation_key} ({m.computation_id}): "
                               f"{_one_line(exc)}")
                        self._unresolved[m.computation_id] = why
                        self.warn(f"{why}; its events are dead-lettered")
                    except RetriesExhausted as exc:
                        report.dead += [(s, "retries_exhausted", str(exc)) for s in w.sources]
                        continue
                    except DeliveryError as exc:
                        report.dead += [(s, "failed", str(exc)) for s in w.sources]
                        continue
            report.dead += [(s, "rejected", why) for s in w.sources]
        return out

    def _send(self, sending: dict[Key, tuple[_Wanted, float | None]], report: MembershipReport,
              retry_missing: bool) -> None:
        if not sending:
            return
        actions = [MembershipAction(w.membership.action, iid, aid)
                   for (aid, iid), (w, _) in sending.items()]
        try:
            outcome = self.client.update_memberships(actions)
        except AuthError:
            raise
        except DeliveryError as exc:
            for w, _ in sending.values():
                report.dead += [(s, "failed", str(exc)) for s in w.sources]
            return
        rows = []
        for a in outcome.delivered:
            w, ts = sending[(a.audience_id, a.integration_id)]
            rows.append((a.audience_id, a.integration_id, a.action, ts, w.position))
        self.ledger.record(rows)
        for a in outcome.delivered:
            if a.action == ADD:
                report.added += 1
            else:
                report.removed += 1
        missing = outcome.unknown_audiences
        again: dict[Key, tuple[_Wanted, float | None]] = {}
        if missing and retry_missing:
            # deleted in Talon.One since it was remembered: create it again, send once more
            for aid in missing:
                self.ledger.forget_audience(aid)
            for (aid, _iid), (w, _ts) in sending.items():
                if aid in missing:
                    self.resolver.forget(w.membership.computation_id)
            ts_of = {id(w): ts for w, ts in sending.values()}
            resolved = self._resolve([w for (aid, _), (w, _) in sending.items() if aid in missing],
                                     report)
            again = {(aid, w.iid): (w, ts_of[id(w)]) for aid, w in resolved}
        for a, refusal in outcome.rejected:
            if retry_missing and a.audience_id in missing:
                continue
            w = sending[(a.audience_id, a.integration_id)][0]
            report.dead += [(s, "rejected", _describe(refusal)) for s in w.sources]
        for a, exhausted in outcome.failed:
            w = sending[(a.audience_id, a.integration_id)][0]
            report.dead += [(s, "retries_exhausted", str(exhausted)) for s in w.sources]
        self._send(again, report, retry_missing=False)


def _describe(exc: RejectedError) -> str:
    from talon_classic.bulk import describe_rejection

    return describe_rejection(exc)


def _one_line(exc: RejectedError) -> str:
    return " ".join(str(exc).split())
