"""The bulk pipeline behind ``talon-classic identify`` (and the server's worker).

Read -> transform -> merge per integrationId -> batches -> Talon.One, with:

* **Bounded memory.** The main thread reads and transforms; at most
  ``concurrency`` batches are in flight, so a 10 GB input streams through.
* **On every core** (``workers`` > 1). The main thread reads and splits
  lines (``file:line``, gzip, over-long lines as always) and hands chunks of
  them to worker processes (:mod:`talon_classic.workers`), which decode and
  transform them with the same rules (:mod:`talon_classic.intake`); their
  results come back in input order, so everything after (batches, merge,
  checkpoint) is what one process makes of the same input.
* **Deterministic batches.** A batch closes when it holds ``batch_size``
  distinct profiles (or the input ends), never because of timing, so batch
  *n* of a resumed run is batch *n* of the first run, and the checkpoint
  only has to remember which batch numbers were acknowledged.
* **Order per profile** (:mod:`talon_classic.merge`). Events for one integrationId are merged by
  ``timestamp`` (then file order), attribute by attribute. A later batch
  never carries an older value than one already sent for the same
  attribute: the last timestamps sent are remembered for the most recent
  ``ordering_window`` profiles, in front of the :class:`~talon_classic.ledger.Ledger`
  (what Talon.One acknowledged in earlier runs; without one, rebuilt by
  replay on ``--resume``). A batch that holds a profile still in flight in
  an earlier batch waits for it, and is compared with what was sent (settled)
  only then, in its sender thread: so it is compared with what Talon.One
  acknowledged, never with a value that may still fail.
* **Uncertain requests repaired.** Profiles of a request that timed out or
  lost its connection after sending are recorded in the ledger; before the
  run ends, once ``repair_after`` (twice the read timeout) has passed, their
  newest acknowledged values are sent once more, so a request Talon.One
  carries out late cannot have the last word.
* **Nothing lost.** Rejected profiles and exhausted retries are written to
  the dead-letter file (every source event, with its ``file:line``), then
  what was acknowledged to the ledger, then the batch is checkpointed; an
  authentication failure stops the run.
"""

from __future__ import annotations

import gc
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from itertools import repeat
from operator import is_, itemgetter
from typing import IO, TYPE_CHECKING, Any

from talon_classic.checkpoint import Checkpoint
from talon_classic.compact.profiles import check as check_profile
from talon_classic.compact.profiles import read_profile_records
from talon_classic.deadletter_file import DeadLetters
from talon_classic.exceptions import (
    AuthError,
    DeadLetterError,
    DeliveryError,
    LedgerError,
    RejectedError,
    RetriesExhausted,
    WorkerError,
    logged,
)
from talon_classic.intake import Intake, Kept, RawEvent, Skipped, original
from talon_classic.ledger import Ledger
from talon_classic.merge import Batch, Merger, parse_timestamp  # noqa: F401 - re-exported
from talon_classic.reader import DEFAULT_MAX_LINE_BYTES, Record, read_records
from talon_classic.summary import Summary
from talon_classic.transform import MAX_ID_LENGTH, Engine, sendable_attributes
from talon_classic.workers import WorkerPool

if TYPE_CHECKING:
    from talon_classic.memberships import MembershipDelivery

log = logging.getLogger("talon_classic.bulk")

MAX_BATCH = 1000
#: Batches whose profiles a closing batch avoids (carry-over). A constant, not
#: the concurrency: batches must not depend on it, so --resume may change it.
LOOKBACK = 8
#: Reader-level reasons: the line itself is broken, so each gets a message.
INPUT_REASONS = frozenset({"invalid_json", "line_too_long", "truncated_input", "invalid_profile"})
#: The cyclic GC's first threshold while ``identify --profiles`` runs (see Pipeline.run).
PROFILES_GC_THRESHOLD = 200_000
#: Rounds of repairs at the end of a run (a repair that times out is repaired again).
REPAIR_ROUNDS = 3
#: ``repair_after`` when not given: this many read timeouts after the uncertain attempt.
REPAIR_AFTER_TIMEOUTS = 2.0
#: Lines per chunk handed to a worker process (``workers`` > 1): big enough that the
#: handing-over costs little per line, small enough that workers start at once.
CHUNK_LINES = 2000


@dataclass
class Options:
    """How a bulk run batches and delivers."""

    batch_size: int = MAX_BATCH
    concurrency: int = 8
    id_prefix: str = ""
    single: bool = False
    run_rule_engine: bool = False
    dead_letter_skipped: bool = False
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    ordering_window: int = 100_000
    #: Inputs are dead-letter files: send each line's original ``event``.
    replay_dead_letters: bool = False
    #: Inputs are compacted profiles (``talon-classic compact``): each record is sent as it
    #: is, no transform; one that is not a profile is skipped as ``invalid_profile``.
    profiles: bool = False
    #: Leave out values equal to what Talon.One acknowledged (needs a ledger).
    skip_unchanged: bool = False
    #: Seconds after an attempt that may still land before its profiles are repaired;
    #: None: :data:`REPAIR_AFTER_TIMEOUTS` times the client's read timeout.
    repair_after: float | None = None
    #: Processes that decode and transform lines; 1: all in this process. Batches do not
    #: depend on it, so ``--resume`` may change it.
    workers: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= MAX_BATCH:
            raise ValueError(f"batch size must be between 1 and {MAX_BATCH}")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.workers < 1:
            raise ValueError("workers must be at least 1")
        if not self.id_prefix.isascii():
            try:
                self.id_prefix.encode("utf-8")
            except UnicodeEncodeError:  # e.g. undecodable bytes of a command line
                raise ValueError("the id prefix holds a lone surrogate, so it is not text "
                                 "and cannot be sent") from None


class Pipeline:
    """One bulk run. Build it, call :meth:`run`, read :attr:`summary`."""

    def __init__(
        self,
        engine: Engine,
        client: Any,
        options: Options | None = None,
        *,
        dead_letters: DeadLetters | None = None,
        checkpoint: Checkpoint | None = None,
        summary: Summary | None = None,
        on_progress: Callable[[Pipeline], None] | None = None,
        warn: Callable[[str], None] | None = None,
        before_send: Callable[[Batch], None] | None = None,
        memberships: MembershipDelivery | None = None,
        ledger: Ledger | None = None,
    ) -> None:
        if (options or Options()).skip_unchanged and ledger is None:
            raise ValueError("skip_unchanged needs a ledger (it keeps the values' digests)")
        self.engine = engine
        self.client = client
        self.options = options or Options()
        self.dead_letters = dead_letters
        self.checkpoint = checkpoint
        self.summary = summary or Summary()
        self.on_progress = on_progress
        self.warn = warn or log.warning
        self.before_send = before_send
        #: Engage audience memberships, sent after each batch's profiles (engageAudiences).
        self.memberships = memberships
        if memberships is not None:
            self.summary.count_memberships()
        #: What Talon.One acknowledged, across runs (None: only this run's memory).
        self.ledger = ledger
        self.auth_error: AuthError | None = None
        #: The state file failed mid-run (one line); the run stopped.
        self.state_error: str | None = None
        #: The first unexpected error (a bug) while sending, as one line.
        self.internal_error: str | None = None
        #: The dead-letter file could not be written (one line); the run stopped.
        self.dead_letter_error: str | None = None
        self.current_input: Any = None
        self._cond = threading.Condition()
        self._inflight_ids: set[str] = set()
        self._inflight = 0
        self._position: dict[str, int] = {}
        self._stopping = threading.Event()
        self._merger: Merger | None = None
        #: Until then (wall clock), every delivery is uncertain (see :meth:`_suspect`).
        self._suspect_until = 0.0
        #: The reading stage's rules, the same in this process and in worker processes.
        self._intake = Intake(engine, replay_dead_letters=self.options.replay_dead_letters,
                              profiles=self.options.profiles)

    # -- main thread ---------------------------------------------------------
    def run(self, paths: Iterable[str], stdin: IO[bytes] | None = None) -> Summary:
        """Read every input, deliver, wait for the last batch; return the summary."""
        opts = self.options
        skip_unchanged = self._suspect() is None and opts.skip_unchanged
        merger = self._merger = Merger(opts.batch_size, LOOKBACK, opts.ordering_window,
                                       ledger=self.ledger, skip_unchanged=skip_unchanged)
        seq = 0
        executor = ThreadPoolExecutor(opts.concurrency, thread_name_prefix="talon-send")
        # The run keeps many small, acyclic containers alive (open profiles, the
        # ordering window) and allocates millions more; with the default
        # threshold the cyclic GC rescans them every few hundred allocations.
        # Collect less often during the run (measured: ~25% faster), as before after.
        # Compacted profiles are bigger and fewer per line; with 200,000 most die before
        # a collection looks at them (measured: GC 1.1 s -> 0.14 s on 310,000 profiles).
        thresholds = gc.get_threshold()
        gc.set_threshold(max(thresholds[0], PROFILES_GC_THRESHOLD if opts.profiles
                             else 50_000), *thresholds[1:])
        # The reading thread is CPU-bound; the senders wait on sockets. A shorter
        # GIL switch interval lets a sender that has its answer run sooner, so
        # batches do not sit behind the reader (measured: ~5% faster end to end).
        interval = sys.getswitchinterval()
        sys.setswitchinterval(min(interval, 0.001))
        pool: WorkerPool[list[bytes], Any] | None = None
        finished = False
        try:
            if opts.profiles:
                records = read_profile_records(paths, max_line_bytes=opts.max_line_bytes,
                                               stdin=stdin, on_open=self._opened,
                                               decode=opts.workers == 1)
            else:
                records = read_records(paths, max_line_bytes=opts.max_line_bytes, stdin=stdin,
                                       on_open=self._opened, decode=opts.workers == 1,
                                       parse=self._intake.parse)
            if opts.workers > 1:
                pool = WorkerPool(self._intake, opts.workers, name="talon-identify",
                                  on_death=self._worker_failed)
                items = self._digested(records, pool)
            else:
                items = zip(records, repeat(None))
            try:
                for count, (record, outcome) in enumerate(items, 1):
                    self._take(record, merger, outcome)
                    if merger.full:
                        self._dispatch(executor, merger.detach(seq))
                        seq += 1
                        if self._halted:
                            break
                    if self.on_progress is not None and count % 2000 == 0:
                        self.on_progress(self)
            except WorkerError as exc:  # its lines are not read: the run stops there
                self._worker_failed(str(exc))
            if pool is not None:
                pool.close(graceful=not self._halted)
            while merger.pending and not self._halted:
                self._dispatch(executor, merger.detach(seq, final=True))
                seq += 1
            executor.shutdown(wait=True)
            self._flush_ledger()
            self._repair()
            self._flush_ledger()
            finished = True
        except KeyboardInterrupt:
            # batches cut short are not checkpointed, so --resume sends them again
            self.interrupted()
            raise
        finally:
            try:
                # after Ctrl-C, batches not yet started are dropped (and not checkpointed)
                executor.shutdown(wait=True, cancel_futures=self._stopping.is_set())
            except KeyboardInterrupt:  # Ctrl-C while the last batches were finishing
                self.interrupted()
                raise
            finally:  # the summary is complete however the run ended
                if not finished and isinstance(sys.exc_info()[1], KeyboardInterrupt):
                    # a second Ctrl-C can land inside a handler above before its stop()
                    # recorded why; the summary must still say so (stop keeps a first reason)
                    self.interrupted()
                if pool is not None:
                    pool.close(graceful=False)  # a no-op once closed
                gc.set_threshold(*thresholds)
                sys.setswitchinterval(interval)
                self._finish()
        return self.summary

    def stop(self, reason: str) -> None:
        """Stop the run from any thread: no new batch starts, batches cut short are not
        checkpointed (so ``--resume`` sends them again). The first reason is kept."""
        with self._cond:
            if self.summary.stopped is None:
                self.summary.stopped = reason
            self._stopping.set()
            self._cond.notify_all()

    @property
    def stopping(self) -> bool:
        """Has :meth:`stop` been called (Ctrl-C, a closed output)?"""
        return self._stopping.is_set()

    @property
    def _halted(self) -> bool:
        return self.auth_error is not None or self._stopping.is_set()

    def interrupted(self) -> None:
        """Record that Ctrl-C stopped the run (what ``--resume`` would do is in the reason):
        :meth:`stop`, from a handler of KeyboardInterrupt."""
        self.stop("interrupted (Ctrl-C); " + self._resume_hint())

    def _resume_hint(self) -> str:
        if self.checkpoint is not None:
            return "rerun with --resume to continue"
        return "nothing was recorded (no --checkpoint), so a rerun starts over"

    def _opened(self, source: Any) -> None:
        self.current_input = source

    def _worker_failed(self, what: str) -> None:
        """A worker process died or failed (from any thread): the run stops, one line."""
        with self._cond:
            if self.internal_error is None:
                self.internal_error = what
        self.stop(f"a worker process failed; {self._resume_hint()}")

    def _digested(self, records: Iterable[Record], pool: WorkerPool[list[bytes], Any]
                  ) -> Iterator[tuple[Record, Kept | Skipped | None]]:
        """Every record in order, with what a worker made of its line (None: a record the
        reader skipped, or decoded itself, as Parquet rows: taken here as in one process)."""
        chunks: deque[list[Record]] = deque()

        def lines() -> Iterator[list[bytes]]:
            chunk: list[Record] = []
            raw: list[bytes] = []
            for record in records:
                chunk.append(record)
                if record.raw is not None and record.skipped is None:
                    raw.append(record.raw)
                    if len(raw) >= CHUNK_LINES:
                        chunks.append(chunk)
                        yield raw
                        chunk, raw = [], []
            if chunk:
                chunks.append(chunk)
                yield raw

        engage_names = self.engine.engage_names
        for outcomes, names in pool.map(lines()):
            if names:  # before the batches that hold them are sent (register_engage_names)
                engage_names.update(names)
            done = iter(outcomes)
            for record in chunks.popleft():
                yield record, (next(done) if record.raw is not None and record.skipped is None
                               else None)

    def _take(self, record: Record, merger: Merger, outcome: Kept | Skipped | None = None
              ) -> None:
        self._position[record.input] = record.line
        if record.skipped is not None:
            self._skipped(record, record.skipped, record.error, record.raw)
            return
        source: Any
        if outcome is None:  # decoded by the reader, in this process
            if self.options.replay_dead_letters and isinstance(record.event, dict):
                record.event = record.event.get("event")
            if self.options.profiles:
                self._take_profile(record, merger)
                return
            outcome = self._intake.digest(record.event, record.raw)
            source = (record.event if self._intake.memberships
                      else self._held(record, record.event))
        else:  # a worker process decoded the line: decoded again only for a dead letter
            assert record.raw is not None
            if self.options.profiles and type(outcome) is tuple:
                record.event = outcome[4]  # checked there, each value with its own key
                self._take_profile(record, merger)
                return
            source = (outcome[4] if type(outcome) is tuple and outcome[4] is not None
                      else self._held(record, None))
        if type(outcome) is Skipped:
            if outcome.decoded:
                self._skipped(record, outcome.reason, outcome.error, None, source)
            else:  # not JSON: its dead letter holds the line as text
                self._skipped(record, outcome.reason, outcome.error, record.raw)
            return
        assert type(outcome) is tuple
        iid = self.options.id_prefix + outcome[0]
        if len(iid) > MAX_ID_LENGTH:
            self._skipped(
                record,
                "invalid_user_id",
                f"integrationId with --id-prefix is {len(iid)} characters; at most {MAX_ID_LENGTH}",
                None,
                source,
            )
            return
        self.summary.keep(outcome[3])
        merger.add(iid, outcome[1], outcome[2], (source, record.where))

    def _held(self, record: Record, decoded: Any) -> Any:
        """What a batch keeps of ``record``'s event for its dead letter: the line, decoded
        again only then (see :mod:`talon_classic.intake`), or ``decoded`` for a record read
        without one (a Parquet row)."""
        if record.raw is None:
            return decoded
        return RawEvent(record.raw, self.options.replay_dead_letters)

    def _take_profile(self, record: Record, merger: Merger) -> None:
        """A compacted profile, sent as it is, each value with its own timestamp.

        Most profiles have one ordering key for every attribute: one ``add``. Otherwise
        the values go in groups of one key, in the order of the keys' positions (the
        order their events were read in), so the merger, and the ledger after it,
        hold each attribute's own timestamp, not the profile's newest.
        """
        profile = record.event
        problem, newest = check_profile(profile)
        if problem is not None:
            self._skipped(record, "invalid_profile", problem, record.raw)
            return
        iid = self.options.id_prefix + profile["integrationId"]
        if len(iid) > MAX_ID_LENGTH:
            self._skipped(record, "invalid_user_id", f"integrationId with --id-prefix is "
                          f"{len(iid)} characters; at most {MAX_ID_LENGTH}", None)
            return
        # what the event path would not send is left out, counted (unsupported_value)
        attributes, dropped = sendable_attributes(profile["attributes"])
        self.summary.keep(dropped)
        stamps = profile["timestamps"]
        first = next(iter(stamps.values()), None)
        kept = self._held(record, profile)
        if not attributes or all(map(is_, stamps.values(), repeat(first))):
            merger.add(iid, attributes, newest, (kept, record.where))
            return
        groups: dict[tuple[int, bool, float], dict[str, Any]] = {}
        for name, value in attributes.items():
            ts, position = stamps[name]
            groups.setdefault((position, ts is not None, ts or 0.0), {})[name] = value
        source: tuple[Any, str] | None = (kept, record.where)
        for (_, timed, ts), values in sorted(groups.items(), key=itemgetter(0)):
            merger.add(iid, values, ts if timed else None, source)
            source = None

    def _skipped(self, record: Record, reason: str, error: str | None, raw: bytes | None,
                 source: Any = None) -> None:
        """Count a skipped record, warn of a broken line, and with ``dead_letter_skipped``
        dead-letter its event (``source``, else the record's) or its line as text."""
        self.summary.skip(reason)
        if reason in INPUT_REASONS:
            self.warn(f"{record.where}: {reason}: {error}")
        if self.options.dead_letter_skipped and self.dead_letters is not None:
            logged = self.checkpoint.skips_logged.get(record.input, 0) if self.checkpoint else 0
            if record.line > logged:
                event = original(source) if source is not None else record.event
                if event is None and raw is not None:
                    event = raw.decode("utf-8", "replace").rstrip("\r\n")
                self.dead_letters.write(event, reason, error, record.where)

    def _dispatch(self, executor: ThreadPoolExecutor, batch: Batch) -> None:
        if self.checkpoint is not None and self.checkpoint.is_done(batch.seq):
            self.summary.add(batches_resumed=1)
            if self.ledger is None and self._merger is not None:
                # remembered as sent, as it was; a ledger holds it already
                self._merger.settle(batch)
            return
        ids = set(batch.sources)
        with self._cond:
            self._cond.wait_for(
                lambda: self._halted
                or (self._inflight < self.options.concurrency and self._inflight_ids.isdisjoint(ids))
            )
            if self._halted:
                return
            self._inflight_ids |= ids
            self._inflight += 1
        executor.submit(self._send, batch, ids)

    # -- worker threads ------------------------------------------------------
    def _send(self, batch: Batch, ids: set[str]) -> None:
        # What the merger remembers as sent must be what Talon.One took: for every
        # profile not delivered, its memory goes back to before this batch, so a
        # later batch does not leave out values it wrongly believes were sent.
        undelivered: Iterable[str] = batch.sources
        uncertain: dict[str, float] = {}
        started = time.time()
        try:
            try:
                if self._merger is not None:
                    # no earlier batch with these profiles is in flight now (see
                    # _dispatch): compared with what Talon.One acknowledged
                    self._merger.settle(batch)
                self.summary.drop(batch.dropped)
                if batch.current:
                    self.summary.add(profiles_current=len(batch.current))
                if self.before_send is not None:
                    self.before_send(batch)
                started = time.time()
                delivered, bad, uncertain = (self._deliver(batch.profiles) if batch.profiles
                                             else (0, [], {}))
            except (AuthError, _Stopped, LedgerError):
                raise
            except Exception as exc:
                if self._stopping.is_set():
                    raise _Stopped(0) from None  # e.g. the dry run's output was closed
                # A bug, not Talon.One's answer: its events are dead-lettered, so
                # nothing is lost, and the run goes on; the exit status tells.
                what = unexpected(exc)
                log.debug("batch %d: %s", batch.seq, what)
                self.summary.add(internal_errors=1)
                if self.internal_error is None:
                    self.internal_error = what
                profiles = batch.profiles if batch.settled else [
                    {"integrationId": iid, "attributes": {}} for iid in batch.sources]
                delivered, bad = 0, [(p, "internal_error", what) for p in profiles]
            undelivered = [p["integrationId"] for p, _, _ in bad]
            if self._merger is not None and undelivered:
                self._merger.rollback(batch, undelivered)  # before its ledger entries
            self._record(batch, delivered, bad, uncertain, started)
        except AuthError as exc:
            with self._cond:
                if self.auth_error is None:
                    self.auth_error = exc
        except _Stopped as stop:
            undelivered = [p["integrationId"] for p in batch.profiles[stop.delivered:]]
            self.summary.add(profiles_upserted=stop.delivered)
        except LedgerError as exc:  # the state file cannot be read or written
            if exc.reason == "closed" and self._stopping.is_set():
                # a second Ctrl-C ended the run around this batch: it is not marked
                # delivered (so --resume sends it again), and the state file is fine
                undelivered = batch.sources
            else:
                with self._cond:
                    if self.state_error is None:
                        self.state_error = str(exc)
                self.stop(f"the state file failed at batch {batch.seq}, whose events are not "
                          f"marked delivered: {self._resume_hint()}")
        except Exception as exc:  # the dead-letter file or the checkpoint cannot be written
            # not counted in internal_errors (batches whose events were dead-lettered): this
            # batch's were not, and the run stops, saying why
            what = str(exc) if isinstance(exc, DeadLetterError) else unexpected(exc)
            with self._cond:
                if isinstance(exc, DeadLetterError):
                    self.dead_letter_error = self.dead_letter_error or what
                elif self.internal_error is None:
                    self.internal_error = what
            self.stop(f"cannot record batch {batch.seq} ({what}); its events are not "
                      f"marked delivered: {self._resume_hint()}")
        finally:
            if self._merger is not None:
                self._merger.rollback(batch, undelivered)
            with self._cond:
                self._inflight_ids -= ids
                self._inflight -= 1
                self._cond.notify_all()

    def _record(self, batch: Batch, delivered: int, bad: list[tuple[dict, str, str]],
                uncertain: dict[str, float], started: float) -> None:
        """Dead-letter what failed (durably), count, record what Talon.One acknowledged
        in the ledger, then checkpoint the batch (whose request ``started`` then)."""
        if self.memberships is not None:  # before the checkpoint: a resumed batch had them
            failed = {profile["integrationId"] for profile, _, _ in bad}
            self.memberships.deliver(batch, failed).record(self.dead_letters, self.summary)
        events = {"rejected": 0, "failed": 0}
        for profile, reason, error in bad:
            for event, where in batch.sources[profile["integrationId"]]:
                if self.dead_letters is not None:
                    self.dead_letters.write(original(event), reason, error, where)
                events["rejected" if reason == "rejected" else "failed"] += 1
        if self.dead_letters is not None:
            self.dead_letters.flush()  # counted once written: never more than the file holds
        self.summary.add(
            profiles_upserted=delivered,
            rejected=events["rejected"],
            failed=events["failed"],
            dead_lettered=events["rejected"] + events["failed"],
        )
        ledger = self.ledger
        recording = ledger is not None and ledger.writable and self._merger is not None
        mark: Callable[[], None] | None = None
        if self.checkpoint is not None:
            checkpoint, seq = self.checkpoint, batch.seq
            positions = dict(self._position) if self.options.dead_letter_skipped else None
            # after a ledger commit: every batch of it marked, the checkpoint saved once
            mark = lambda: checkpoint.mark(seq, positions, save=not recording)  # noqa: E731
        if ledger is not None and recording and self._merger is not None:
            acked: set[str] = set()
            sent: list[dict[str, Any]] = []
            after = self._repair_after()
            due = {iid: t + after for iid, t in uncertain.items()}
            suspect = started < self._suspect_until  # it may land before the other one
            if due or suspect or ledger.watching:  # only uncertain deliveries need to know
                failed = {p["integrationId"] for p, _, _ in bad}
                acked = {p["integrationId"] for p in batch.profiles} - failed
                sent = batch.profiles  # else not kept alive in the writer's queue
            if suspect:  # a request of the killed run before this one may still land
                for iid in acked:
                    due[iid] = max(due.get(iid, 0.0), self._suspect_until)
            # the checkpoint is marked once the ledger has the batch: never ahead of it
            ledger.record(self._merger.entries(batch), sent=sent, delivered=acked,
                          uncertain=due,
                          then=mark,
                          then_once=self.checkpoint.save if self.checkpoint else None)
        elif mark is not None:
            mark()

    def _deliver(self, profiles: list[dict[str, Any]]
                 ) -> tuple[int, list[tuple[dict, str, str]], dict[str, float]]:
        """Send one batch; return (delivered count, [(profile, reason, error)], uncertain).

        Reasons: ``rejected`` (Talon.One refused the profile), ``retries_exhausted``,
        ``failed`` (any other answer that is not an authentication failure,
        e.g. 501 or a redirect: the profiles are dead-lettered, the run goes on).
        ``uncertain``: integrationId -> start time of the last attempt that may
        still land (see :class:`~talon_classic.client.BulkOutcome`).
        """
        bad: list[tuple[dict, str, str]] = []
        if not self.options.single:
            try:
                outcome = self.client.upsert_profiles(profiles)
            except AuthError:
                raise
            except DeliveryError as exc:
                return 0, [(p, "failed", str(exc)) for p in profiles], {}
            bad += [(p, "rejected", describe_rejection(e)) for p, e in outcome.rejected]
            bad += [(p, "retries_exhausted", str(e)) for p, e in outcome.failed]
            return len(outcome.delivered), bad, dict(getattr(outcome, "uncertain", {}))
        delivered = 0
        uncertain: dict[str, float] = {}
        for profile in profiles:
            if self._stopping.is_set():
                raise _Stopped(delivered)
            marks: list[float] = []
            try:
                self.client.upsert_profile(
                    profile["integrationId"],
                    profile["attributes"],
                    run_rule_engine=self.options.run_rule_engine,
                    uncertain=marks,
                )
                delivered += 1
            except RejectedError as exc:
                bad.append((profile, "rejected", describe_rejection(exc)))
            except RetriesExhausted as exc:
                bad.append((profile, "retries_exhausted", str(exc)))
            except AuthError:
                raise
            except DeliveryError as exc:
                bad.append((profile, "failed", str(exc)))
            finally:
                if marks:
                    uncertain[profile["integrationId"]] = max(marks)
        return delivered, bad, uncertain

    def _flush_ledger(self) -> None:
        """Wait for the ledger's writer; a failure stops the run (the state file failed)."""
        if self.ledger is None:
            return
        try:
            self.ledger.flush()
        except Exception as exc:  # noqa: BLE001 - LedgerError, or a checkpoint that cannot be saved
            with self._cond:
                if self.state_error is None:
                    self.state_error = str(exc) if isinstance(exc, LedgerError) else unexpected(exc)
            self.stop(f"the state file or the checkpoint could not be written; batches not "
                      f"recorded are sent again: {self._resume_hint()}")

    # -- uncertain requests ----------------------------------------------------------
    def _repair_after(self) -> float:
        if self.options.repair_after is not None:
            return self.options.repair_after
        timeout = getattr(self.client, "timeout", None)
        read = timeout[1] if isinstance(timeout, tuple) and timeout[1] else 30.0
        return REPAIR_AFTER_TIMEOUTS * float(read)

    def _suspect(self) -> float | None:
        """Treat what is delivered soon as uncertain if an earlier run may overtake it.

        The state file says when (:meth:`~talon_classic.ledger.Ledger.overtaken_until`):
        a run before this one was killed and may have left a request in flight,
        which Talon.One can still carry out, with older values, after this run
        delivered newer ones. Whatever this run starts to deliver before then is
        repaired once that has passed (before the run ends), so the newest values
        have the last word. The digests of ``skip_unchanged`` are not trusted in such
        a run either (Talon.One may hold values they never saw): it sends unchanged
        values too. Returns the deadline, or None when there is none.
        """
        ledger = self.ledger
        if ledger is None or not ledger.writable:
            return None
        try:
            until = ledger.overtaken_until(self._repair_after())
        except LedgerError as exc:  # the run stops before it sends anything
            with self._cond:
                if self.state_error is None:
                    self.state_error = str(exc)
            self.stop("the state file could not be written; nothing was sent")
            return None
        if not until:
            return None
        self._suspect_until = until
        self.warn(f"the state file {ledger.path} says a run before this one was killed (or "
                  f"crashed) and a request of it may still be carried out: what is delivered "
                  f"in the next {max(0.0, until - time.time()):.0f}s is sent once more after "
                  "that" + ("; --skip-unchanged is off for this run"
                            if self.options.skip_unchanged else ""))
        return until

    def _repair(self) -> None:
        """Send the newest acknowledged values of uncertain profiles once more, when due.

        A request that timed out may still be carried out by Talon.One, after
        newer values were delivered; once it can no longer land (``repair_after``
        since), the newest values go once more. A repair that is uncertain
        itself is repaired in the next round; what is left after
        :data:`REPAIR_ROUNDS` stays in the ledger for the next run.
        """
        ledger = self.ledger
        if ledger is None or not ledger.writable:
            return
        try:
            self._repair_rounds(ledger)
        except LedgerError as exc:
            with self._cond:
                if self.state_error is None:
                    self.state_error = str(exc)
            self.stop("the state file failed while repairing; the next run repairs them")

    def _repair_rounds(self, ledger: Ledger) -> None:
        announced = False
        for _ in range(REPAIR_ROUNDS):
            todo = ledger.pending
            if not todo or self._halted:
                break
            wait = max(u.due for u in todo.values()) - time.time()
            if wait > 0:
                if not announced:
                    self.warn(f"waiting {wait:.0f}s, then sending the newest values of "
                              f"{len(todo):,} profiles once more: a request with them may "
                              "still be carried out (it timed out or lost its connection, "
                              "or the killed run before this one had it in flight)")
                    announced = True
                started = time.monotonic()
                stopped = self._stopping.wait(wait)
                self.summary.add_float(repair_wait=time.monotonic() - started)
                if stopped:
                    break
            nothing = [iid for iid, u in todo.items() if not u.values]
            if nothing:  # no acknowledged value to send: nothing to repair with
                ledger.record(repaired=nothing)
            profiles = [{"integrationId": iid, "attributes": u.values}
                        for iid, u in todo.items() if u.values]
            for start in range(0, len(profiles), self.options.batch_size):
                if not self._send_repair(profiles[start:start + self.options.batch_size]):
                    break
            ledger.flush()  # what is still uncertain, as committed
        self.summary.repairs_left = len(ledger.pending)

    def _send_repair(self, profiles: list[dict[str, Any]]) -> bool:
        """One repair request; False when the run must stop."""
        assert self.ledger is not None
        try:
            _, bad, uncertain = self._deliver(profiles)
        except AuthError as exc:
            with self._cond:
                if self.auth_error is None:
                    self.auth_error = exc
            return False
        except _Stopped:
            return False
        failed = {p["integrationId"] for p, reason, _ in bad if reason != "rejected"}
        for profile, reason, error in bad:
            if reason == "rejected":  # Talon.One refuses those values now: nothing to repair
                self.warn(f"{profile['integrationId']}: repair refused: {error}")
                self.summary.add(repairs_refused=1)
        acked = {p["integrationId"] for p in profiles} - failed
        after = self._repair_after()
        self.ledger.record(sent=profiles, delivered=acked - {p["integrationId"] for p, _, _ in bad},
                           uncertain={iid: t + after for iid, t in uncertain.items()},
                           repaired=acked)
        self.summary.add(profiles_repaired=len(acked - set(uncertain)
                                               - {p["integrationId"] for p, _, _ in bad}))
        return True

    def _finish(self) -> None:
        stats = getattr(self.client, "stats", None)
        if stats is not None:
            self.summary.requests = stats.requests
            self.summary.retries = stats.retries
        if self.auth_error is not None and self.summary.stopped is None:
            self.summary.stopped = f"{self.auth_error}; {self._resume_hint()}"
        if self.dead_letters is not None:
            self.dead_letters.close()
        if self.ledger is not None and self.ledger.writable:
            self._flush_ledger()  # after Ctrl-C too: what was acknowledged is recorded
            self.summary.repairs_left = len(self.ledger.pending)
        self.summary.finish()


class _Stopped(Exception):
    """A batch abandoned because the run is stopping (it is not checkpointed)."""

    def __init__(self, delivered: int) -> None:
        super().__init__(f"stopped after {delivered} profiles")
        self.delivered = delivered


def unexpected(exc: BaseException) -> str:
    """One line for an exception nobody planned for: its class and its message,
    anything that looks like a credential removed (:func:`~talon_classic.exceptions.logged`)."""
    if not type(exc).__name__[:1].isupper():  # struct.error, zlib.error: say whose
        return f"unexpected error {type(exc).__module__}.{logged(exc)}"
    return f"unexpected error {logged(exc)}"


_REASON_PHRASES = frozenset(status.phrase.lower() for status in HTTPStatus)


def describe_rejection(exc: RejectedError) -> str:
    """The server's message, each error's title and details, and where: one line.

    A bare HTTP reason phrase ("Bad Request") as a title says nothing the
    status did not, so it is left out.
    """
    parts = [str(exc)]
    for err in exc.errors or []:
        parts += [str(x) for x in (err.get("title"), err.get("details"))
                  if x and str(x).lower() not in _REASON_PHRASES]
        pointer = (err.get("source") or {}).get("pointer")
        if pointer:
            parts.append(f"at {pointer}")
    return "; ".join(dict.fromkeys(parts))
