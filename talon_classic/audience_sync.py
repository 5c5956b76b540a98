"""Sync an audience's membership with a member list: add, remove or mirror.

:class:`AudienceSync` is what ``talon-classic audience sync`` runs:

1. **Read** the member lists (:mod:`talon_classic.members`) into a
   temporary table of the state database (:class:`~talon_classic.audience_state.AudienceState`):
   duplicates are counted once, bad entries reported with their ``file:line``.
2. **Baseline**: the audience's membership as last acknowledged (the state
   database), or, with ``from_talon``, as Talon.One has it now (the
   Management API, paged), which then becomes the recorded membership.
   With an ``id_prefix``, only the members whose ids start with it are
   taken from Talon.One: a sync manages the ids of its own prefix and
   leaves the others' alone.
3. **Compare and deliver**, at once. The diff is one SQL query
   (:meth:`~talon_classic.audience_state.AudienceState.changes`), run in its
   own thread a bounded number of batches ahead: ``add`` wants the listed
   ids not yet members; ``remove`` the listed ids that are (every listed id
   when the membership is not known); ``mirror`` both ways, so the audience
   ends up exactly the list. A first mirror of an audience whose membership
   is not known can only add, and says so; a mirror never empties an
   audience from an empty list, nor removes after an input that ended early.
   The changes go through :meth:`~talon_classic.client.Client.update_memberships`,
   1000 a request, ``concurrency`` requests in flight; the worker that sent
   a request records what Talon.One acknowledged in the state database at
   once (so an interrupted sync, run again, sends only what is still
   needed). Rejected actions, and those whose retries ran out, are
   dead-lettered and left unrecorded.

Before a request is sent, its actions are noted in flight in the state
database (committed), and the note is deleted with the recording of the
answer. A note left behind (the process was killed, the answer never came)
or an action whose retries ran out makes those ids *unsure*: Talon.One may
or may not have applied it. The next sync of the audience does not trust
what is recorded for them: each is sent the action its list asks for
(listed: added, or removed in ``remove`` mode; not listed: removed by a
mirror that removes), so the audience ends up the list all the same.

A 404 means the audience does not exist: the sync stops and
:meth:`AudienceSync.run` raises :class:`~talon_classic.exceptions.AudienceNotFound`.
An authentication failure stops it too (:attr:`AudienceSync.auth_error`).
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from talon_classic.audience_state import BASELINE_STATE, BASELINE_TALON, AudienceState, Pending
from talon_classic.audiences import ADD, MembershipAction, MembershipOutcome
from talon_classic.bulk import describe_rejection, unexpected
from talon_classic.deadletter_file import DeadLetters
from talon_classic.exceptions import (
    AudienceNotFound,
    AuthError,
    DeadLetterError,
    DeliveryError,
    InputError,
    RejectedError,
)
from talon_classic.members import read_members
from talon_classic.reader import InputFile, display_name
from talon_classic.summary import _peak_rss_mb

if TYPE_CHECKING:
    from talon_classic.client import Client
    from talon_classic.management import ManagementClient

log = logging.getLogger("talon_classic.audience_sync")

MODES = ("add", "remove", "mirror")
MAX_BATCH = 1000
#: Bad entries reported one by one; the rest are only counted.
MAX_WARNINGS = 20
_LOAD_CHUNK = 10_000
#: Batches the diff may compute ahead of the delivery (a bounded queue: memory stays flat).
PREFETCH = 128


@dataclass
class SyncOptions:
    """What to sync and how."""

    audience_id: int
    mode: str
    id_column: str | None = None
    id_prefix: str = ""
    #: Read the current membership from Talon.One (Management API) instead of the state.
    from_talon: bool = False
    #: Requests in flight: 60 requests/s at up to 250 ms each need 15.
    concurrency: int = 16
    batch_size: int = MAX_BATCH
    #: Record nothing (a dry run): the state database is only read.
    dry_run: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if not 1 <= self.batch_size <= MAX_BATCH:
            raise ValueError(f"batch size must be between 1 and {MAX_BATCH}")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")


class SyncSummary:
    """The counters of one sync, printed at the end (text or JSON)."""

    def __init__(self, options: SyncOptions, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.options = options
        self.started = clock()
        self.read_done: float | None = None
        self.finished: float | None = None
        self.members_read = 0
        self.blank = 0
        self.invalid: Counter[str] = Counter()
        self.duplicates = 0
        self.baseline = BASELINE_STATE
        #: Is the state database compared with a kept one (False with ``--no-state``: a
        #: temporary, empty one)?
        self.recorded = True
        self.first_mirror = False
        #: Actions queued so far (all of them, unless the sync stopped early).
        self.to_add = 0
        self.to_remove = 0
        #: Listed ids that needed nothing; None until the whole diff was seen.
        self.unchanged: int | None = None
        self.added = 0
        self.removed = 0
        self.requests = 0
        self.retries = 0
        self.rejected = 0
        self.failed = 0
        self.dead_lettered = 0
        self.internal_errors = 0
        self.dead_letter_file: str | None = None
        self.stopped: str | None = None

    @property
    def distinct(self) -> int:
        """Distinct valid ids in the lists."""
        return self.members_read - sum(self.invalid.values()) - self.duplicates

    def add(self, **counts: int) -> None:
        """Add to counters from any thread."""
        with self._lock:
            for key, value in counts.items():
                setattr(self, key, getattr(self, key) + value)

    def mark_read(self) -> None:
        """Reading (the list, and Talon.One's membership) is done: diff and delivery start."""
        self.read_done = self._clock()

    def finish(self) -> None:
        """Stop the clock."""
        self.finished = self._clock()

    @property
    def elapsed(self) -> float:
        """Seconds since the start (until :meth:`finish`)."""
        return (self.finished if self.finished is not None else self._clock()) - self.started

    @property
    def delivery_seconds(self) -> float:
        """Seconds from the end of reading to the end: the diff and the delivery."""
        end = self.finished if self.finished is not None else self._clock()
        return end - (self.read_done if self.read_done is not None else end)

    def as_dict(self) -> dict[str, Any]:
        """The stable ``--json`` shape."""
        sent = self.added + self.removed
        delivering = self.delivery_seconds
        return {
            "audience_id": self.options.audience_id,
            "mode": self.options.mode,
            "baseline": self.baseline,
            "first_mirror": self.first_mirror,
            "members_read": self.members_read,
            "invalid": sum(self.invalid.values()),
            "invalid_by_reason": dict(sorted(self.invalid.items())),
            "blank": self.blank,
            "duplicates": self.duplicates,
            "to_add": self.to_add,
            "to_remove": self.to_remove,
            "added": self.added,
            "removed": self.removed,
            "unchanged": self.unchanged,
            "requests": self.requests,
            "retries": self.retries,
            "rejected": self.rejected,
            "failed": self.failed,
            "dead_lettered": self.dead_lettered,
            "internal_errors": self.internal_errors,
            "dead_letter_file": self.dead_letter_file if self.dead_lettered else None,
            "stopped": self.stopped,
            "elapsed_s": round(self.elapsed, 3),
            "read_s": round(self.elapsed - delivering, 3),
            "delivery_s": round(delivering, 3),
            "actions_per_s": round(sent / delivering, 1) if delivering > 0 and sent else None,
            "peak_rss_mb": _peak_rss_mb(),
        }

    def render(self) -> str:
        """Human summary, one fact per line."""
        d = self.as_dict()
        against = {BASELINE_TALON: "the membership read from Talon.One",
                   BASELINE_STATE: "the state database" if self.recorded
                   else "no state database"}[d["baseline"]]
        invalid = ", ".join(f"{r} {n:,}" for r, n in d["invalid_by_reason"].items())
        lines = [
            f"audience           {d['audience_id']:>12}  ({d['mode']}, against {against})",
            f"members read       {d['members_read']:>12,}",
            f"invalid            {d['invalid']:>12,}" + (f"  ({invalid})" if invalid else ""),
            f"duplicates         {d['duplicates']:>12,}",
            f"added              {d['added']:>12,}"
            + (f"  (of {d['to_add']:,})" if d["added"] != d["to_add"] else ""),
            f"removed            {d['removed']:>12,}"
            + (f"  (of {d['to_remove']:,})" if d["removed"] != d["to_remove"] else ""),
            "unchanged          "
            + (f"{d['unchanged']:>12,}" if d["unchanged"] is not None else f"{'-':>12}"),
            f"requests sent      {d['requests']:>12,}  (retries {d['retries']:,})",
            f"rejected           {d['rejected']:>12,}  actions",
        ]
        if d["blank"]:
            lines.insert(3, f"blank              {d['blank']:>12,}  (skipped)")
        if d["failed"]:
            # retries that ran out, a redirect, no answer, a bug: the dead letters say which
            lines.append(f"failed             {d['failed']:>12,}  actions (not delivered; the "
                         "dead letters say why)")
        if d["dead_letter_file"]:
            lines.append(f"dead letters in    {d['dead_letter_file']}  (appended; earlier runs' "
                         "lines are kept)")
        if d["internal_errors"]:
            lines.append(f"unexpected errors  {d['internal_errors']:>12,}  requests; their "
                         "actions are dead-lettered (a bug: please report it)")
        rate = f"{d['actions_per_s']:,.0f} actions/s" if d["actions_per_s"] else "-"
        lines.append(f"elapsed            {d['elapsed_s']:>11.2f}s  (reading {d['read_s']:.2f}s, "
                     f"comparing and delivering {d['delivery_s']:.2f}s at {rate})")
        if d["stopped"]:
            lines.append(f"stopped early: {d['stopped']}")
        return "\n".join(lines)


class AudienceSync:
    """One sync of one audience. Build it, call :meth:`run`, read :attr:`summary`."""

    def __init__(
        self,
        client: Client,
        state: AudienceState,
        options: SyncOptions,
        *,
        management: ManagementClient | None = None,
        dead_letters: DeadLetters | None = None,
        warn: Callable[[str], None] | None = None,
        on_progress: Callable[[AudienceSync], None] | None = None,
    ) -> None:
        if options.from_talon and management is None:
            raise ValueError("from_talon needs a ManagementClient")
        self.client = client
        self.state = state
        self.options = options
        self.management = management
        self.dead_letters = dead_letters
        self.warn = warn or log.warning
        self.on_progress = on_progress
        self.summary = SyncSummary(options)
        self.summary.recorded = state.persistent
        self.auth_error: AuthError | None = None
        self.not_found: AudienceNotFound | None = None
        #: The first unexpected error (a bug) while sending, as one line.
        self.internal_error: str | None = None
        #: The dead-letter file could not be written (one line); the sync stopped.
        self.dead_letter_error: str | None = None
        self.phase = "reading"
        self.current_input: InputFile | None = None
        self._names: list[str] = []
        self._truncated: list[str] = []
        self._warned = 0
        self._stopping = threading.Event()
        self._flags = threading.RLock()
        #: Ids of the audience whose recorded membership is not trusted (:meth:`_load_unsure`).
        self._unsure = 0

    # -- the run ------------------------------------------------------------------
    def run(self, paths: Iterable[str], stdin: IO[bytes] | None = None) -> SyncSummary:
        """Read, compare, deliver; return the summary.

        Raises AudienceNotFound (nothing more is sent once Talon.One says the
        audience does not exist) and InputError (an input cannot be read, or
        a mirror's list holds no id at all: that would empty the audience,
        which ``clear`` does on purpose).
        KeyboardInterrupt stops the run after the requests in flight are
        answered and recorded, then propagates.
        """
        opts = self.options
        finished = False
        try:
            self.state.start_list()
            self._read(list(paths), stdin)
            self._check_list()
            self._load_unsure()
            table, removes = self._baseline()
            removes = self._check_mirror(removes)
            self.summary.mark_read()
            self.phase = "delivering"
            exhausted = self._deliver(Prefetch(self.state.changes(
                opts.audience_id, opts.mode, table, removes, opts.batch_size), PREFETCH))
            if exhausted:
                queued = self.summary.to_remove if opts.mode == "remove" else self.summary.to_add
                self.summary.unchanged = self.summary.distinct - queued
            if self.not_found is not None:
                raise self.not_found
            if (opts.mode == "mirror" and not opts.dry_run and self.auth_error is None
                    and not self._stopping.is_set()):
                self.state.mark_known(opts.audience_id, "mirror")
            finished = True
        finally:
            if not finished and isinstance(sys.exc_info()[1], KeyboardInterrupt):
                # while reading, or a second Ctrl-C inside the handler in _deliver before
                # its stop() recorded why: the summary still says so (stop keeps a first one)
                self._interrupted()
            self._finish()
        return self.summary

    def interrupt(self, by: str = "Ctrl-C") -> None:
        """Say why the run stops: interrupted ``by`` Ctrl-C or a signal (from any thread)."""
        what = "interrupted (Ctrl-C)" if by == "Ctrl-C" else f"terminated ({by})"
        self.stop(f"{what}: what was acknowledged is recorded; run the same sync again to "
                  "send the rest" if self._persistent else
                  f"{what}; nothing is recorded (no state), so a rerun sends everything again")

    def stop(self, reason: str) -> None:
        """Send no more requests (from any thread); the first reason is kept."""
        with self._flags:
            if self.summary.stopped is None:
                self.summary.stopped = reason
            self._stopping.set()

    def where(self, source: int | None, line: int | None) -> str:
        """``file:line`` of a listed id, or why an action has none."""
        if source is None or line is None:
            return "not in the list (mirror)"
        return f"{self._names[source]}:{line}"

    # -- 1. read ------------------------------------------------------------------
    def _opened(self, source: InputFile) -> None:
        self.current_input = source

    def _read(self, paths: list[str], stdin: IO[bytes] | None) -> None:
        self._names = [display_name(p) for p in paths]
        summary = self.summary
        rows: list[tuple[str, int, int]] = []
        members = read_members(paths, id_column=self.options.id_column,
                               id_prefix=self.options.id_prefix, stdin=stdin,
                               on_open=self._opened)
        for member in members:
            if member.reason is None:
                assert member.integration_id is not None
                rows.append((member.integration_id, member.source, member.line))
                if len(rows) >= _LOAD_CHUNK:
                    self._load(rows)
                    rows = []
                continue
            if member.reason == "blank":
                summary.blank += 1
                continue
            if member.reason == "truncated_input":
                self._truncated.append(self._names[member.source])
            summary.members_read += 1
            summary.invalid[member.reason] += 1
            self._report(f"{self.where(member.source, member.line)}: {member.reason}: "
                         f"{member.message}")
        if rows:
            self._load(rows)

    def _load(self, rows: list[tuple[str, int, int]]) -> None:
        new = self.state.add_to_list(rows)
        self.summary.members_read += len(rows)
        self.summary.duplicates += len(rows) - new
        if self.on_progress is not None:
            self.on_progress(self)

    def _report(self, message: str) -> None:
        self._warned += 1
        if self._warned <= MAX_WARNINGS:
            self.warn(message)
        elif self._warned == MAX_WARNINGS + 1:
            self.warn(f"more than {MAX_WARNINGS} bad entries: the others are only counted in "
                      "the summary")

    def _load_unsure(self) -> None:
        """Take the ids an earlier sync of the audience left unsure (see the module's
        docstring); a dry run only reads them."""
        opts = self.options
        self._unsure = self.state.load_unsure(opts.audience_id, settle=self._persistent)
        if self._unsure and not opts.from_talon:  # what is read from Talon.One settles them
            self.warn(f"audience {opts.audience_id}: {self._unsure:,} ids were left in flight "
                      "(a sync killed or cut off) or ran out of retries, so their recorded "
                      "membership is not trusted: each is sent what the list asks for")

    # -- 2. baseline --------------------------------------------------------------
    def _baseline(self) -> tuple[str, bool]:
        """Choose the baseline: the table to compare with, and whether it is the whole
        membership (so that removes are right)."""
        opts = self.options
        if opts.from_talon:
            assert self.management is not None
            self.phase = "reading Talon.One"
            prefix = opts.id_prefix  # with a prefix, only the ids it marks are this sync's
            try:
                self.state.add_talon_members(
                    iid for iid in (p.get("integrationId") for p in
                                    self.management.audience_memberships(opts.audience_id)
                                    if isinstance(p, dict))
                    if isinstance(iid, str) and iid and iid.startswith(prefix))
            except RejectedError as exc:
                if exc.status != 404:
                    raise
                raise AudienceNotFound(
                    f"audience {opts.audience_id} does not exist in this Talon.One deployment "
                    f"(404: {exc})", opts.audience_id) from None
            self.summary.baseline = BASELINE_TALON
            if opts.dry_run:
                return BASELINE_TALON, True
            self.state.adopt_talon(opts.audience_id)
            return BASELINE_STATE, True
        known = self.state.is_known(opts.audience_id)
        if opts.mode == "mirror" and not known:
            self.summary.first_mirror = True
            why = ("no membership is recorded for it (first mirror)" if self.state.persistent
                   else "nothing is recorded (no state database)")
            self.warn(f"audience {opts.audience_id}: {why} and no --from-talon, so this mirror "
                      "can only add: members who are not in the list are not removed this time"
                      + (" (later mirrors remove those who leave the list)"
                         if self.state.persistent else ""))
        return BASELINE_STATE, known

    def _check_list(self) -> None:
        """Refuse to mirror a list without a single id (InputError): it would empty the
        audience, which ``audience clear`` does when that is what is meant."""
        if self.options.mode == "mirror" and self.summary.distinct == 0:
            raise InputError(
                f"the member list holds no id ({self.summary.members_read:,} entries read, "
                f"{sum(self.summary.invalid.values()):,} invalid): a mirror would remove every "
                f"member; to empty audience {self.options.audience_id}, use "
                "`talon-classic audience clear`")

    def _check_mirror(self, removes: bool) -> bool:
        """A mirror removes only when its list is whole: never after a cut-short input, nor
        when an entry could not be read (it may be a member, who would be removed)."""
        if self.options.mode != "mirror" or not removes:
            return removes
        if self._truncated:
            self.warn(f"{', '.join(dict.fromkeys(self._truncated))}: ends early, so members "
                      "missing from it may only be missing from the file: this mirror only "
                      "adds; fix the input and run it again to remove those who left")
            return False
        invalid = self.summary.invalid
        if invalid:
            reasons = ", ".join(f"{reason} {count:,}" for reason, count in sorted(invalid.items()))
            self.warn(f"{sum(invalid.values()):,} entries of the list could not be read "
                      f"({reasons}), and each may be a member: this mirror only adds; fix "
                      "them and run it again to remove those who left")
            return False
        return True

    # -- 4. deliver ---------------------------------------------------------------
    def _deliver(self, changes: Prefetch) -> bool:
        """Send every batch of ``changes``, ``concurrency`` at a time; record each answer.

        Returns whether every change was seen (False when the sync stopped early).
        """
        opts = self.options
        inflight: dict[Future[None], list[Pending]] = {}
        executor = ThreadPoolExecutor(opts.concurrency, thread_name_prefix="talon-audience")
        exhausted = False
        try:
            for batch in changes:
                while len(inflight) >= opts.concurrency:
                    self._collect(inflight, FIRST_COMPLETED)
                if self._halted:
                    break
                adds = sum(1 for p in batch if p.action == ADD)
                self.summary.add(to_add=adds, to_remove=len(batch) - adds)
                inflight[executor.submit(self._send, batch)] = batch
            else:
                exhausted = True
            while inflight:
                self._collect(inflight, FIRST_COMPLETED)
        except KeyboardInterrupt:
            self._interrupted()
            for future in inflight:
                future.cancel()
            raise
        finally:
            changes.close()  # ends the diff's query, so its snapshot is released
            try:
                while inflight:  # answers of requests in flight are still recorded
                    self._collect(inflight, FIRST_COMPLETED)
            finally:
                executor.shutdown(wait=True, cancel_futures=True)
        return exhausted and not self._halted

    def _interrupted(self) -> None:
        self.interrupt("Ctrl-C")

    @property
    def _persistent(self) -> bool:
        return self.state.persistent and not self.options.dry_run

    @property
    def _halted(self) -> bool:
        return self._stopping.is_set() or self.auth_error is not None or self.not_found is not None

    def _collect(self, inflight: dict[Future[None], list[Pending]], how: str) -> None:
        """Wait for requests in flight; what each failure means (their successes are
        recorded by the worker that sent them, see :meth:`_send`)."""
        done, _ = wait(list(inflight), return_when=how)
        for future in done:
            batch = inflight.pop(future)
            if future.cancelled():
                continue
            try:
                future.result()
            except AuthError as exc:
                with self._flags:
                    if self.auth_error is None:
                        self.auth_error = exc
                        self.stop(f"{exc}; what was acknowledged is recorded"
                                  if self._persistent else
                                  f"{exc}; nothing is recorded (no state)")
            except DeliveryError as exc:
                self._dead_letter(batch, "failed", str(exc))
            except _RecordFailed as exc:  # the state cannot say what was sent: stop
                what = unexpected(exc.cause)
                with self._flags:
                    if self.internal_error is None:
                        self.internal_error = what
                self.summary.add(internal_errors=1)
                self.stop(f"cannot record an acknowledged request ({what}); a rerun sends "
                          "its actions again" if exc.sent else
                          f"cannot note a request in flight ({what}), so it was not sent")
            except Exception as exc:  # a bug: dead-letter the actions, go on, exit 4
                if self._stopping.is_set():  # e.g. a dry run's output was closed: not a bug
                    continue
                what = unexpected(exc)
                self.summary.add(internal_errors=1)
                with self._flags:
                    if self.internal_error is None:
                        self.internal_error = what
                self._dead_letter(batch, "internal_error", what)
        if self.on_progress is not None:
            self.on_progress(self)

    def _send(self, batch: list[Pending]) -> None:
        """In a worker: note the batch in flight, send it, record what Talon.One acknowledged.

        Recording here, not in the main thread, keeps the main thread free to
        keep requests in flight. The note is committed before the request
        goes out, so a process killed while it is in flight leaves its ids
        unsure rather than wrongly recorded. A failure to note or to record
        is raised as :class:`_RecordFailed` (never dead-lettered: unsent, or
        delivered). When the request fails, the note stays: its ids are
        unsure for the next sync.
        """
        audience_id = self.options.audience_id
        request: int | None = None
        if self._persistent:
            try:
                request = self.state.begin_request(
                    audience_id, [(p.action, p.integration_id) for p in batch])
            except Exception as exc:
                raise _RecordFailed(exc, sent=False) from None
        outcome = self.client.update_memberships(
            [MembershipAction(p.action, p.integration_id, audience_id)  # type: ignore[arg-type]
             for p in batch])
        try:
            self._record(batch, outcome, request)
        except Exception as exc:
            raise _RecordFailed(exc) from None

    def _record(self, batch: list[Pending], outcome: MembershipOutcome,
                request: int | None = None) -> None:
        opts = self.options
        delivered = outcome.delivered
        if (delivered or request is not None) and not opts.dry_run:
            # one transaction: the acknowledged actions, the end of the in-flight note, and
            # the ids whose retries ran out (Talon.One may have applied them) as unsure
            self.state.record(opts.audience_id, ((a.action, a.integration_id) for a in delivered),
                              known="mirror" if opts.mode == "mirror" and delivered else None,
                              request=request,
                              unsure=[a.integration_id for a, _ in outcome.failed],
                              resolves=self._unsure > 0)
        adds = sum(1 for a in delivered if a.action == ADD)
        self.summary.add(added=adds, removed=len(delivered) - adds)
        by_id = {p.integration_id: p for p in batch}
        for action, exc in outcome.rejected:
            if isinstance(exc, AudienceNotFound):
                with self._flags:
                    if self.not_found is None:
                        self.not_found = exc
                        self.stop(str(exc))
                continue
            self._dead_letter([by_id[action.integration_id]], "rejected", describe_rejection(exc))
        for action, failure in outcome.failed:
            self._dead_letter([by_id[action.integration_id]], "retries_exhausted", str(failure))

    def _dead_letter(self, pending: list[Pending], reason: str, error: str) -> None:
        count = len(pending)
        kind = "rejected" if reason == "rejected" else "failed"
        if self.dead_letters is not None:
            try:
                for p in pending:
                    action = MembershipAction(p.action, p.integration_id,  # type: ignore[arg-type]
                                              self.options.audience_id)
                    found = ((p.source, p.line) if p.source is not None
                             else self.state.position(p.integration_id))
                    self.dead_letters.write(action.as_json(), reason, error,
                                            self.where(*found) if found else self.where(None, None))
                self.dead_letters.flush()
            except DeadLetterError as exc:  # e.g. a full disk: they are not recorded either
                with self._flags:
                    self.dead_letter_error = self.dead_letter_error or str(exc)
                self.stop(f"{exc}; their actions are not recorded, so a rerun sends them again")
                return
        self.summary.add(dead_lettered=count, **{kind: count})  # once written

    def _finish(self) -> None:
        stats = self.client.stats.snapshot()
        self.summary.requests = stats["requests"]
        self.summary.retries = stats["retries"]
        if self.dead_letters is not None:
            self.dead_letters.close()
            self.summary.dead_letter_file = self.dead_letters.path
        if self.summary.read_done is None:
            self.summary.mark_read()
        self.summary.finish()


class _RecordFailed(Exception):
    """The state database failed: recording a delivered request, or (``sent`` False) noting
    one in flight before it was sent (so it was not)."""

    def __init__(self, cause: Exception, sent: bool = True) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.sent = sent


class Prefetch:
    """Runs an iterator of batches (the diff's query) in its own thread, up to ``depth`` ahead.

    SQLite works without the GIL, so the diff goes on while the main thread
    sends and records; the bounded queue keeps memory flat. The iterator is
    consumed and closed in that thread only (a generator cannot be closed
    from another while it runs). An error in it is raised where the batches
    are taken.
    """

    _END = object()

    def __init__(self, source: Iterator[list[Pending]], depth: int) -> None:
        self._source = source
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="talon-audience-diff",
                                        daemon=True)
        self._thread.start()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for batch in self._source:
                if not self._put(batch):
                    break
        except BaseException as exc:  # handed to the consumer
            self._error = exc
        finally:
            close = getattr(self._source, "close", None)
            if close is not None:
                try:
                    close()
                except Exception as exc:
                    # stopped: e.g. a second Ctrl-C closed the state before this thread
                    # was waited for; nobody takes the diff any more (nor its error)
                    if not self._stop.is_set() and self._error is None:
                        self._error = exc
            self._put(self._END)

    def __iter__(self) -> Iterator[list[Pending]]:
        while True:
            item = self._queue.get()
            if item is self._END:
                if self._error is not None:
                    raise self._error
                return
            yield item  # type: ignore[misc]

    def close(self) -> None:
        """Stop the diff (if it is still running) and wait for its thread."""
        self._stop.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join()
