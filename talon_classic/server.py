"""``talon-classic serve``: a self-hosted stand-in for the classic destination.

Ways in, answered like Segment's own endpoints:

* the tracking API (``POST /v1/identify``, ``/v1/batch``, and ``/v1/track``,
  ``/v1/page``, ... which are accepted and later counted as skipped), with
  the write key as HTTP Basic username or ``writeKey`` in the body, so
  Segment's server libraries work unchanged when pointed at this host;
* Segment's Webhooks destination (``POST /webhook``, one event or an array,
  ``X-Signature`` = hex HMAC-SHA1 of the raw body when a secret is set);
* ``GET /health`` and ``GET /metrics`` (Prometheus text).

An event is acknowledged only once it is in the SQLite :class:`Spool`. A
background :class:`Worker` drains the spool in micro-batches through the
same engine, merge and client as ``talon-classic identify``: rejected
events go to the spool's dead-letter table, everything else that fails
stays in the spool and is tried again, so nothing acknowledged is lost.

The spool's database also holds the ordering ledger
(:class:`~talon_classic.ledger.Ledger`): what Talon.One acknowledged, per
integrationId and attribute. So a late, older event (Segment retries for
hours), an event queued again by ``talon-classic deadletter retry``, or any
event after a restart never replaces a newer value; and the profiles of a
request that timed out are sent once more with their newest values once it
can no longer land (the worker checks before every micro-batch).

Answers to a request that cannot be taken:

* 400 (or 413) when it can never be stored: not JSON (nested more than
  :data:`~talon_classic.jsonio.MAX_NESTING` levels deep included), an event
  that is not an object, over the size limits. The message names the event
  (``batch[3] is not a JSON object``). One bad event refuses the whole
  request and nothing of it is stored, as Segment's own API does with a
  malformed batch: the sender sees the error instead of losing events
  silently, and Segment's libraries do not retry a 400.
* Values JSON can carry but Talon.One cannot take (lone surrogates, huge
  integers, traits nested deeper than the engine's limit) are not such
  events: they are stored and acknowledged like any other, and the engine
  drops those attributes at delivery (``unsupported_value``), exactly as
  ``talon-classic identify`` does with the same file.
* 503 with ``Retry-After`` only when storing failed (disk full, an I/O
  error), shutting down, or the spool is full: retrying later helps then.
* 500 for an unexpected error (a bug); it is logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import sqlite3
import threading
import time
import traceback
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from talon_classic.bulk import REPAIR_AFTER_TIMEOUTS, describe_rejection
from talon_classic.client import BulkOutcome
from talon_classic.exceptions import (
    DeliveryError,
    LedgerError,
    RejectedError,
    TalonClassicError,
    logged,
    shown,
)
from talon_classic.jsonio import BadLine, Unserialisable, dumps, dumps_bytes, loads
from talon_classic.ledger import Ledger
from talon_classic.merge import Batch, Merger, parse_timestamp
from talon_classic.spool import Spool
from talon_classic.transform import Engine
from talon_classic.wsgi import DEFAULT_IDLE_TIMEOUT, WaitressServer

if TYPE_CHECKING:
    from talon_classic.memberships import MembershipDelivery

log = logging.getLogger("talon_classic.server")

#: How a user of ``serve`` gets past an unusable ledger in the spool.
SERVE_HINT = "give serve another --spool, or --no-state (no ordering across restarts)"
MAX_EVENT_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024
EVENT_TYPES = ("identify", "track", "page", "screen", "group", "alias")


class Metrics:
    """The server's Prometheus metrics, in a registry of its own."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.accepted = Counter("talon_events_accepted", "Events stored in the spool",
                                registry=self.registry)
        self.duplicates = Counter("talon_events_duplicate", "Events dropped as duplicate messageId",
                                  registry=self.registry)
        self.skipped = Counter("talon_events_skipped", "Events skipped by the engine",
                               ["reason"], registry=self.registry)
        self.delivered = Counter("talon_profiles_delivered", "Profiles upserted in Talon.One",
                                 registry=self.registry)
        self.delivered_events = Counter("talon_events_delivered",
                                        "Events whose profile Talon.One took",
                                        registry=self.registry)
        self.dead = Counter("talon_events_dead_lettered", "Events moved to the dead-letter table",
                            registry=self.registry)
        self.retries = Counter("talon_request_retries", "Retried Talon.One requests",
                               registry=self.registry)
        self.depth = Gauge("talon_spool_depth", "Events waiting in the spool",
                           registry=self.registry)
        self.dropped = Counter("talon_attributes_dropped",
                               "Attributes left out at delivery (superseded, unchanged)",
                               ["reason"], registry=self.registry)
        self.repaired = Counter("talon_profiles_repaired",
                                "Profiles whose newest values were sent again after a request "
                                "that timed out", registry=self.registry)
        self.latency = Histogram("talon_delivery_latency_seconds",
                                 "From acknowledgement to delivery", registry=self.registry,
                                 buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 1800))

    def watch(self, spool: Spool, worker: Worker | None) -> None:
        """Report the spool's write health, read when scraped:

        ``talon_spool_writable`` (0 after a failed write, until one succeeds),
        ``talon_spool_write_errors_total`` and ``talon_spool_unremoved``
        (events delivered, skipped or rejected that the spool could not let go
        of yet, e.g. with its disk full).
        """
        self.registry.register(_SpoolCollector(spool, worker))

    def render(self) -> bytes:
        """Prometheus text format."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class _SpoolCollector:
    """Prometheus collector of the spool's write health (see :meth:`Metrics.watch`)."""

    def __init__(self, spool: Spool, worker: Worker | None) -> None:
        self.spool, self.worker = spool, worker

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        yield GaugeMetricFamily("talon_spool_writable",
                                "1 while spool writes work, 0 after one failed (e.g. disk full)",
                                value=0 if self.spool.write_error else 1)
        yield CounterMetricFamily("talon_spool_write_errors", "Spool writes that failed",
                                  value=self.spool.write_errors)
        yield GaugeMetricFamily("talon_spool_unremoved",
                                "Handled events the spool could not remove yet",
                                value=self.worker.unremoved if self.worker else 0)


class _Stopping(Exception):
    """The worker was asked to stop between two micro-batches."""


class Worker(threading.Thread):
    """Drains the spool into Talon.One in micro-batches, one request at a time.

    One sender means no two requests ever carry the same integrationId;
    the merger keeps per-profile order by timestamp across micro-batches.
    An event leaves the spool only once Talon.One took it (acked) or
    refused it (moved to the dead-letter table); on any other failure the
    micro-batch is dropped from memory (and rolled back in the merger), the
    worker waits ``backoff`` seconds and takes the same events again.

    When the spool cannot be written (its disk is full), events Talon.One
    already took cannot be removed from it. The worker remembers their
    sequence numbers, tries the removal again with backoff (0.5 s doubling
    up to ``backoff``), and takes nothing new from the spool meanwhile, so
    nothing is sent twice and memory stays bounded by one micro-batch.
    Only a restart in that state forgets them: those events are then sent
    once more (upserts are idempotent).

    With a ``ledger``, what Talon.One acknowledged is recorded there before
    the events leave the spool, so a restart keeps the order; uncertain
    profiles are repaired once due (:meth:`repair_due`).
    """

    def __init__(self, spool: Spool, engine: Engine, client: Any, metrics: Metrics,
                 batch_size: int = 1000, linger: float = 1.0, take: int = 5000,
                 backoff: float = 5.0, busy: Callable[[], bool] = lambda: False,
                 memberships: MembershipDelivery | None = None,
                 ledger: Ledger | None = None, skip_unchanged: bool = False) -> None:
        super().__init__(name="talon-worker", daemon=True)
        #: Engage audience memberships, sent after the profiles, before their events are acked.
        self.memberships = memberships
        self.spool, self.engine, self.client, self.metrics = spool, engine, client, metrics
        self.batch_size, self.linger, self.take_size, self.backoff = (
            batch_size, linger, take, backoff)
        self.ledger = ledger
        self.merger = Merger(batch_size, 0, 100_000, ledger=ledger, skip_unchanged=skip_unchanged)
        timeout = getattr(client, "timeout", None)
        read = timeout[1] if isinstance(timeout, tuple) and timeout[1] else 30.0
        #: Seconds after an attempt that may still land before its profiles are repaired.
        self.repair_after = REPAIR_AFTER_TIMEOUTS * float(read)
        #: Until then (wall clock), every delivery is uncertain: a process before this one
        #: was killed, so a request it had in flight may still land, with older values,
        #: after newer ones were delivered (:meth:`Ledger.overtaken_until`). Those
        #: profiles are repaired once it is past; ``skip_unchanged`` waits until then.
        self.suspect_until = (ledger.overtaken_until(self.repair_after)
                              if ledger is not None else 0.0)
        self._skip_unchanged = skip_unchanged
        if self.suspect_until:
            self.merger.skip_unchanged = False
        self.busy = busy
        self._stop_event = threading.Event()
        self._wake = threading.Event()
        #: The last delivery failure, safe to show (see :func:`~talon_classic.exceptions.shown`).
        self.last_error: str | None = None
        self._received: dict[int, float] = {}
        # handled events the spool could not forget yet: delivered or skipped
        # (to delete), rejected (to move to the dead-letter table)
        self._unremoved: set[int] = set()
        self._unburied: dict[int, tuple[str, str | None]] = {}
        # what Talon.One acknowledged that the ledger could not record yet (its
        # events wait in _unremoved/_unburied: they leave the spool only after it)
        self._unrecorded: list[dict[str, Any]] = []
        self._retry_wait = 0.0  # backoff for writing them, 0 while the spool is fine
        self._retry_at = 0.0

    @property
    def unremoved(self) -> int:
        """Events delivered, skipped or rejected that the spool could not let go of yet."""
        return len(self._unremoved) + len(self._unburied)

    def wake(self) -> None:
        """New events arrived; drain without waiting out the linger if the batch is full."""
        if self.spool.depth >= self.batch_size:
            self._wake.set()

    def stop(self) -> None:
        """Stop after the request in progress; undelivered events stay in the spool."""
        self._stop_event.set()
        self._wake.set()

    def run(self) -> None:
        """Drain until stopped: after a full micro-batch at once, else after the linger."""
        while not self._stop_event.is_set():
            self._wake.wait(self.linger)
            self._wake.clear()
            try:
                while not self._stop_event.is_set() and self.drain_once():
                    pass
            except _Stopping:
                self.merger.discard_open()
            except Exception as exc:  # noqa: BLE001 - keep serving; events stay spooled
                self.merger.discard_open()
                self.last_error = shown(exc)
                log.warning("delivery paused for %.0fs: %s", self.backoff, logged(exc))
                if not isinstance(exc, TalonClassicError):
                    log.debug("where it failed (message above):\n%s",
                              "".join(traceback.format_tb(exc.__traceback__)))
                self._stop_event.wait(self.backoff)

    def drain_once(self) -> bool:
        """Deliver one micro-batch; True when a full one was taken (more may wait)."""
        if not self._settle():
            return False  # the spool cannot be written: take nothing new
        self.repair_due()
        rows = self.spool.take(self.take_size)
        if len(rows) < self.take_size:
            # short queue: count it again (cheap now), which also picks up dead
            # letters another process (``deadletter retry``) queued again
            self.spool.recount()
        if not rows:
            self.metrics.depth.set(self.spool.depth)
            return False
        skipped: list[int] = []
        self._received = {seq: received for seq, received, _ in rows}
        for n, (seq, _, body) in enumerate(rows):
            if n % 50 == 0 and self.busy():
                # Ingestion first: the worker shares the GIL with the HTTP threads, and
                # an event is safe once spooled; delivery catches up when load drops.
                time.sleep(0.001)
            try:
                event = loads(body)
            except (BadLine, TypeError):  # not JSON, or not even text (an edited spool)
                event = None
            result = self.engine.transform(event)
            if result.skipped is not None:
                self.metrics.skipped.labels(result.skipped).inc()
                skipped.append(seq)
                continue
            iid, attributes = result.integration_id, result.attributes
            assert iid is not None and attributes is not None  # a kept event has both
            self.merger.add(iid, attributes, parse_timestamp(event.get("timestamp")), (event, seq))
        self._remove(skipped)
        seq_no = 0
        while self.merger.pending:
            if self._stop_event.is_set():
                raise _Stopping
            if self.unremoved:
                # the spool stopped taking writes: the rest waits there, unsent
                self.merger.discard_open()
                break
            batch = self.merger.close(seq_no, final=True)
            seq_no += 1
            self._send(batch)
        self.last_error = None
        self.metrics.depth.set(self.spool.depth)
        return len(rows) >= self.take_size and not self.unremoved

    def _send(self, batch: Batch) -> None:
        """One Talon.One request: record what was acknowledged in the ledger, then ack the
        delivered (and the profiles with nothing newer) in the spool, bury the rejected,
        raise if any failed."""
        stats = getattr(self.client, "stats", None)
        before = getattr(stats, "retries", 0)
        for _, reason in batch.dropped:
            self.metrics.dropped.labels(reason).inc()
        started = time.time()
        if self.suspect_until and started >= self.suspect_until:
            self.suspect_until = 0.0  # no earlier request can land any more
            self.merger.skip_unchanged = self._skip_unchanged
        try:
            outcome = (self.client.upsert_profiles(batch.profiles) if batch.profiles
                       else BulkOutcome())
        except BaseException:
            # AuthError, DeliveryError (501, a redirect): nothing was delivered
            self.merger.rollback(batch, batch.sources)
            raise
        finally:
            self.metrics.retries.inc(max(0, getattr(stats, "retries", 0) - before))
        # not delivered: the merger forgets their values, or the next try could
        # leave out values it believes were sent
        self.merger.rollback(batch, [p["integrationId"]
                                     for p, _ in [*outcome.rejected, *outcome.failed]])
        recorded = True
        if self.ledger is not None:  # before the events leave the spool: never behind it
            acked = {p["integrationId"] for p in outcome.delivered}
            uncertain = {iid: t + self.repair_after for iid, t in outcome.uncertain.items()}
            if started < self.suspect_until:  # it may land before the other one
                for iid in acked:  # an earlier process's request may still land
                    uncertain[iid] = max(uncertain.get(iid, 0.0), self.suspect_until)
            record: dict[str, Any] = {
                "entries": self.merger.entries(batch, acked), "sent": batch.profiles,
                "delivered": acked, "uncertain": uncertain}
            try:
                self.ledger.record(**record)
            except LedgerError as failure:  # e.g. disk full: the spool's own file
                recorded = False
                self._unrecorded.append(record)
                self.spool.note_failure(failure.reason or "the ledger cannot be written")
        done: list[int] = []
        for profile in outcome.delivered:
            done += [seq for _, seq in batch.sources[profile["integrationId"]]]
        for iid in batch.current:  # nothing newer than what Talon.One has: done too
            done += [seq for _, seq in batch.sources[iid]]
        now = time.time()
        for seq in done:
            self.metrics.latency.observe(max(0.0, now - self._received.get(seq, now)))
        dead: list[tuple[int, str, str | None]] = []
        for profile, exc in outcome.rejected:
            error = describe_rejection(exc) if isinstance(exc, RejectedError) else str(exc)
            dead += [(seq, "rejected", error) for _, seq in batch.sources[profile["integrationId"]]]
        spooled = 0
        if self.memberships is not None:  # rejected ones buried, retryable ones kept spooled
            failed = {p["integrationId"] for p, _ in [*outcome.rejected, *outcome.failed]}
            done, dead, spooled = self.memberships.deliver(batch, failed).for_spool(done, dead)
        if recorded:
            self._remove(done)
            self._bury(dead)
        else:  # kept until the ledger has them (never re-sent meanwhile)
            self._unremoved.update(done)
            self._unburied.update((seq, (reason, error)) for seq, reason, error in dead)
            self._write_failed()
        self.metrics.delivered.inc(len(outcome.delivered))
        self.metrics.delivered_events.inc(len(done))
        self.metrics.dead.inc(len(dead))
        if outcome.failed:
            raise DeliveryError(f"{len(outcome.failed)} profiles kept in the spool: "
                                f"{shown(outcome.failed[0][1])}")
        if spooled:
            raise DeliveryError(f"{spooled} events kept in the spool: their audience memberships "
                                "could not be delivered yet")

    def repair_due(self) -> int:
        """Send the newest acknowledged values of uncertain profiles whose time has come.

        One request of at most ``batch_size`` profiles; returns how many were
        repaired. A repair that is uncertain itself is repaired again later;
        one Talon.One refuses is given up (logged). Failures raise, like a
        micro-batch's, and the repair is tried again after the backoff.
        """
        ledger = self.ledger
        if ledger is None or not ledger.pending:
            return 0
        due = ledger.due(time.time())
        if not due:
            return 0
        nothing = [iid for iid, u in due.items() if not u.values]
        if nothing:  # no acknowledged value to repair with
            ledger.record(repaired=nothing)
        profiles = [{"integrationId": iid, "attributes": u.values}
                    for iid, u in due.items() if u.values][: self.batch_size]
        if not profiles:
            return 0
        outcome = self.client.upsert_profiles(profiles)
        refused = {p["integrationId"] for p, _ in outcome.rejected}
        for profile, exc in outcome.rejected:
            log.warning("%s: repair refused by Talon.One: %s", profile["integrationId"],
                        describe_rejection(exc) if isinstance(exc, RejectedError) else exc)
        acked = {p["integrationId"] for p in outcome.delivered}
        ledger.record(sent=profiles, delivered=acked, repaired=acked | refused, uncertain={
            iid: t + self.repair_after for iid, t in outcome.uncertain.items()})
        repaired = len(acked - outcome.uncertain.keys())
        self.metrics.repaired.inc(repaired)
        return repaired

    # -- when the spool cannot be written ------------------------------------------
    def _remove(self, seqs: list[int]) -> None:
        """Delete handled events from the spool, or remember them if it cannot."""
        if not seqs:
            return
        try:
            self.spool.ack(seqs)
        except sqlite3.Error:
            self._unremoved.update(seqs)
            self._write_failed()

    def _bury(self, dead: list[tuple[int, str, str | None]]) -> None:
        """Move rejected events to the dead-letter table, or remember them if it cannot."""
        if not dead:
            return
        try:
            self.spool.bury(dead)
        except sqlite3.Error:
            self._unburied.update((seq, (reason, error)) for seq, reason, error in dead)
            self._write_failed()

    def _write_failed(self) -> None:
        """Note a failed spool write: log the first, and wait longer before the next try."""
        if not self._retry_wait:
            if self.unremoved:
                log.warning("spool not writable (%s): %d delivered events stay in it until "
                            "they can be removed; delivery paused", self.spool.write_error,
                            self.unremoved)
            else:
                log.warning("spool not writable (%s); delivery paused until it is",
                            self.spool.write_error)
        self._retry_wait = min(self.backoff, 2 * self._retry_wait or 0.5)
        self._retry_at = time.monotonic() + self._retry_wait

    def _settle(self) -> bool:
        """Write what the spool could not take before; True once it takes writes again."""
        if not self._retry_wait and not self.unremoved and self.spool.write_error is None:
            return True  # the common case: nothing to do
        if time.monotonic() < self._retry_at:
            return False
        try:
            while self._unrecorded and self.ledger is not None:
                self.ledger.record(**self._unrecorded[0])
                self._unrecorded.pop(0)
            if self._unremoved:
                self.spool.ack(sorted(self._unremoved))
                self._unremoved.clear()
            if self._unburied:
                self.spool.bury([(seq, *why) for seq, why in sorted(self._unburied.items())])
                self._unburied.clear()
        except (sqlite3.Error, LedgerError) as exc:
            if isinstance(exc, LedgerError):
                self.spool.note_failure(exc.reason or "the ledger cannot be written")
            self._write_failed()
            return False
        if self.spool.write_error is not None and not self.spool.probe():
            self._write_failed()  # nothing was waiting, but the spool still cannot write
            return False
        if self._retry_wait:
            log.warning("spool writable again; delivery resumes")
        self._retry_wait = 0.0
        return True


def _unauthorized() -> Response:
    return Response('{"success": false, "message": "invalid write key"}', 401,
                    {"WWW-Authenticate": 'Basic realm="talon-classic"'},
                    content_type="application/json")


def _answer(status: int, message: str | None = None, **headers: str) -> Response:
    body: dict[str, Any] = {"success": status < 300}
    if message:
        body["message"] = message
    return Response(dumps(body), status, headers, content_type="application/json")


class App:
    """The WSGI application of ``talon-classic serve``."""

    def __init__(self, spool: Spool, worker: Worker | None, metrics: Metrics,
                 write_keys: Iterable[str], webhook_secret: str | None = None,
                 max_depth: int = 1_000_000) -> None:
        self.spool, self.worker, self.metrics = spool, worker, metrics
        # kept as digests: compare_digest is constant-time for equal lengths only,
        # so equal-length digests hide the keys' lengths too
        self.write_keys = [hashlib.sha256(k.encode()).digest() for k in write_keys if k]
        self.webhook_secret = webhook_secret.encode() if webhook_secret else None
        self.max_depth = max_depth
        self.accepting = True
        self.busy = 0  # requests being handled now (the worker yields to them)
        self._busy_lock = threading.Lock()
        self._urls = Map([
            Rule("/v1/batch", endpoint="batch", methods=["POST"]),
            Rule("/v1/import", endpoint="batch", methods=["POST"]),
            Rule(f"/v1/<any({', '.join(EVENT_TYPES)}):kind>", endpoint="single",
                 methods=["POST"]),
            Rule("/webhook", endpoint="webhook", methods=["POST"]),
            Rule("/health", endpoint="health", methods=["GET"]),
            Rule("/metrics", endpoint="metrics", methods=["GET"]),
        ])

    def __call__(self, environ: dict, start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        with self._busy_lock:
            self.busy += 1
        try:
            endpoint, args = self._urls.bind_to_environ(environ).match()
            response = getattr(self, f"_on_{endpoint}")(request, **args)
        except NotFound:
            response = _answer(404, "not found")
        except HTTPException as exc:
            response = _answer(exc.code or 400, exc.description)
        except (sqlite3.Error, OSError) as exc:  # disk full, I/O: nothing was acknowledged
            log.warning("%s %s: could not store the events (%s); answered 503",
                        request.method, request.path, logged(exc))
            response = _answer(503, "could not store the events; retry later",
                               **{"Retry-After": "5"})
        except Exception as exc:  # a bug: not the client's fault, but no reason to retry at once
            # no log.exception: a traceback's last line may quote a header
            log.error("%s %s failed: %s", request.method, request.path, logged(exc))
            response = _answer(500, "internal error; see the server log")
        finally:
            with self._busy_lock:
                self.busy -= 1
        return response(environ, start_response)

    # -- helpers ---------------------------------------------------------------
    @staticmethod
    def _basic_key(request: Request) -> bytes | None:
        """The write key of an ``Authorization: Basic`` header (its username); None if absent."""
        auth = request.headers.get("Authorization", "")
        if not auth[:6].lower() == "basic ":
            return None
        try:
            return base64.b64decode(auth[6:].strip(), validate=True).split(b":", 1)[0]
        except ValueError:
            return b""

    def _key_ok(self, offered: bytes | None) -> bool:
        """Is ``offered`` one of the write keys? Constant time, whichever key it matches."""
        digest = hashlib.sha256(offered or b"").digest()
        ok = False
        for key in self.write_keys:  # compare with every key: time does not tell which
            ok |= hmac.compare_digest(digest, key)
        return ok

    def _read(self, request: Request, limit: int, signed: bool = False) -> bytes | Response:
        """The raw (gunzipped) body, or the answer that refuses it.

        Refused: shutting down or spool full (503, ``Retry-After``), over
        ``limit`` bytes before or after gunzip (413, without inflating more
        than ``limit`` bytes of a gzip bomb), a bad webhook signature when
        ``signed`` (401; it covers the body as sent), a broken gzip stream (400), an
        encoding other than gzip (415).
        """
        if not self.accepting:
            return _answer(503, "shutting down; retry later", **{"Retry-After": "5"})
        if self.spool.depth >= self.max_depth:
            return _answer(503, "spool full; retry later", **{"Retry-After": "5"})
        too_big = _answer(413, f"request over {limit} bytes")
        if request.content_length is not None and request.content_length > limit:
            return too_big
        data = request.get_data(cache=False)
        if len(data) > limit:
            return too_big
        if signed and self.webhook_secret is not None:
            expected = hmac.new(self.webhook_secret, data, "sha1").hexdigest()
            offered = request.headers.get("X-Signature", "").strip().lower()
            if not hmac.compare_digest(offered.encode(), expected.encode()):
                return _answer(401, "bad signature")
        encoding = request.headers.get("Content-Encoding", "").strip().lower()
        if encoding not in ("", "identity", "gzip"):
            # 415 is what RFC 9110 gives an encoding the server cannot decode
            return _answer(415, f"Content-Encoding {encoding[:40]!r} is not supported "
                                "(send gzip or no encoding)")
        if encoding == "gzip":
            inflate = zlib.decompressobj(wbits=31)
            try:
                data = inflate.decompress(data, limit + 1)
            except zlib.error:
                return _answer(400, "invalid gzip body")
            if len(data) > limit:
                return too_big
            if not inflate.eof:
                return _answer(400, "invalid gzip body (truncated)")
        return data

    def _store(self, events: list[Any], batch: bool = True) -> Response:
        """Spool the events (all or none) and acknowledge once they are on disk.

        An event that can never be stored refuses the whole request with 400
        (413 when too big), naming it (``batch[3]``) and saying why; only a
        storage failure is 503 (see :meth:`__call__`).
        """
        pairs = []
        for n, event in enumerate(events):
            which = f"batch[{n}]" if batch else "the event"
            if not isinstance(event, dict):
                return _answer(400, f"{which} is not a JSON object")
            event.pop("writeKey", None)  # a secret: never into the spool or a dead letter
            try:
                body = dumps_bytes(event)
            except Unserialisable as exc:  # never for what loads() read; a guard, not a path
                return _answer(400, f"{which} cannot be stored: {exc}")
            if len(body) > MAX_EVENT_BYTES:
                return _answer(413, f"{which} is over {MAX_EVENT_BYTES} bytes")
            mid = event.get("messageId")
            pairs.append((body, mid if isinstance(mid, str) and mid else None))
        stored, dupes = self.spool.append(pairs)
        self.metrics.accepted.inc(stored)
        self.metrics.duplicates.inc(dupes)
        self.metrics.depth.set(self.spool.depth)
        if self.worker is not None:
            self.worker.wake()
        return _answer(200)

    # -- endpoints ---------------------------------------------------------------
    def _on_single(self, request: Request, kind: str) -> Response:
        return self._tracking(request, MAX_EVENT_BYTES, kind)

    def _on_batch(self, request: Request) -> Response:
        return self._tracking(request, MAX_BATCH_BYTES, None)

    def _read_json(self, request: Request, limit: int, signed: bool = False) -> Any:
        """The decoded body, or the answer refusing it (see :meth:`_read`; 400 if not JSON)."""
        data = self._read(request, limit, signed=signed)
        if isinstance(data, Response):
            return data
        try:
            return loads(data)
        except BadLine as bad:
            return _answer(400, f"invalid JSON: {bad}")

    def _tracking(self, request: Request, limit: int, kind: str | None) -> Response:
        """The tracking API: one event (``kind`` from the path) or ``{"batch": [...]}``."""
        offered = self._basic_key(request)
        if offered is not None and not self._key_ok(offered):
            return _unauthorized()  # a header key decides before the body is even read
        body = self._read_json(request, limit)
        if isinstance(body, Response):
            return body
        if offered is None:
            key = body.get("writeKey") if isinstance(body, dict) else None
            if not (isinstance(key, str) and self._key_ok(key.encode())):
                return _unauthorized()
        if not isinstance(body, dict):
            return _answer(400, "the body must be a JSON object")
        if kind is not None:
            body["type"] = kind  # the path says what it is, as at Segment
            return self._store([body], batch=False)
        events = body.get("batch")
        if not isinstance(events, list):
            return _answer(400, "batch must be an array")
        context = body.get("context")
        for event in events:
            if isinstance(event, dict) and isinstance(context, dict):
                event.setdefault("context", context)
        return self._store(events)

    def _on_webhook(self, request: Request) -> Response:
        """Segment's Webhooks destination: one event or an array, signed when a secret is set."""
        body = self._read_json(request, MAX_BATCH_BYTES, signed=True)
        if isinstance(body, Response):
            return body
        if isinstance(body, list):
            return self._store(body)
        return self._store([body], batch=False)

    def _on_health(self, request: Request) -> Response:
        """200 ``ok``, or 503 ``unhealthy`` with a ``reason``: the worker stopped, or the
        spool cannot be written (new events are refused, delivered ones stay in it).

        ``last_delivery_error`` (Talon.One unreachable, ...) does not make it
        unhealthy: events are still accepted and kept.
        """
        worker = self.worker
        worker_ok = worker is None or worker.is_alive()
        problems = [] if worker_ok else ["the delivery worker stopped"]
        spool_error = self.spool.write_error
        if spool_error is None and not self.spool.writable():
            spool_error = "locked or read-only"
        if spool_error is not None:
            problem = f"spool not writable: {spool_error}"
            if worker is not None and worker.unremoved:
                problem += (f"; {worker.unremoved} delivered events cannot be removed from it, "
                            f"delivery paused until they are")
            problems.append(problem)
        body = {"status": "unhealthy" if problems else "ok",
                "reason": "; ".join(problems) or None, "spool_depth": self.spool.depth,
                "worker": "running" if worker_ok else "stopped",
                "last_delivery_error": worker.last_error if worker else None}
        return Response(dumps(body), 503 if problems else 200, content_type="application/json")

    def _on_metrics(self, request: Request) -> Response:
        self.metrics.depth.set(self.spool.depth)
        return Response(self.metrics.render(), 200,
                        content_type="text/plain; version=0.0.4; charset=utf-8")


class Service:
    """Spool + worker + HTTP server: what ``talon-classic serve`` runs."""

    def __init__(self, spool_path: str, engine: Engine, client: Any, write_keys: Iterable[str],
                 *, webhook_secret: str | None = None, host: str = "127.0.0.1", port: int = 8080,
                 threads: int = 8, max_depth: int = 1_000_000, linger: float = 1.0,
                 dedupe_window: float = 24 * 3600, backoff: float = 5.0,
                 grace: float = 10.0, connection_limit: int | None = None,
                 idle_timeout: float = DEFAULT_IDLE_TIMEOUT, state: bool = True,
                 skip_unchanged: bool = False,
                 memberships: MembershipDelivery | None = None) -> None:
        """``connection_limit`` and ``idle_timeout``: see :class:`WaitressServer`;
        ``memberships``: see :class:`Worker` (closed by the caller).

        ``state``: keep the ordering ledger in the spool's database, for the
        client's deployment (``client.base_url``); ``skip_unchanged``: leave
        out values equal to the acknowledged ones.

        Raises :class:`~talon_classic.exceptions.AddressInUse` or
        :class:`~talon_classic.exceptions.ServeError` when the address cannot
        be listened on, :class:`~talon_classic.exceptions.LedgerError` when
        the spool's ledger cannot be used (nothing is left open then).
        """
        self.spool = Spool(spool_path, dedupe_window=dedupe_window)
        self.ledger: Ledger | None = None
        if state:
            try:
                self.ledger = Ledger(spool_path, getattr(client, "base_url", "").rstrip("/"),
                                     hint=SERVE_HINT)
            except BaseException:
                self.spool.close()
                raise
        self.metrics = Metrics()
        try:
            self.worker = Worker(self.spool, engine, client, self.metrics, linger=linger,
                                 backoff=backoff, memberships=memberships, ledger=self.ledger,
                                 skip_unchanged=skip_unchanged and self.ledger is not None)
        except BaseException:  # the ledger could not be written (Ledger.overtaken_until)
            if self.ledger is not None:
                self.ledger.close()
            self.spool.close()
            raise
        self.metrics.watch(self.spool, self.worker)
        self.app = App(self.spool, self.worker, self.metrics, write_keys,
                       webhook_secret=webhook_secret, max_depth=max_depth)
        self.worker.busy = lambda: self.app.busy > 0
        # waitress buffers a whole body before the app sees it: refuse far
        # oversized ones there (413) rather than spill them to disk first
        try:
            self.http = WaitressServer(self.app, host=host, port=port, threads=threads,
                                       connection_limit=connection_limit,
                                       idle_timeout=idle_timeout,
                                       max_request_body_size=2 * MAX_BATCH_BYTES)
        except BaseException:
            self.spool.close()
            if self.ledger is not None:
                self.ledger.close()
            raise
        self.url = self.http.url
        self.grace = grace
        self._stop_requested = False
        self._stopped = False

    def start(self) -> Service:
        """Start the worker and serve in a background thread."""
        self.worker.start()
        self.http.start()
        return self

    def request_stop(self) -> None:
        """Ask :meth:`serve_forever` to stop (safe from a signal handler: sets a flag only)."""
        self._stop_requested = True

    def serve_forever(self) -> None:
        """Serve until :meth:`request_stop` (e.g. on SIGTERM) or Ctrl-C, then :meth:`stop`."""
        self.start()
        try:
            while not self._stop_requested:
                time.sleep(0.1)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop accepting, finish requests in progress, stop the worker, close the spool.

        New connections are no longer accepted and new requests on open
        connections get 503 with ``Retry-After``; requests already inside
        the application finish and their answers are sent (up to ``grace``
        seconds). The worker stops after its current Talon.One request;
        whatever is not delivered stays in the spool for the next start.
        """
        if self._stopped:
            return
        self._stopped = True
        self.app.accepting = False
        self.http.drain(self.grace, busy=lambda: self.app.busy > 0)
        self.http.stop(timeout=self.grace)
        self.worker.stop()
        if self.worker.is_alive():
            self.worker.join(timeout=self.grace)
        if self.worker.is_alive():
            # still inside a Talon.One request (retrying): its events stay in the
            # spool; leave the connection open for it, the process is ending
            log.warning("stopped while a delivery was in progress; its events stay spooled")
            return
        self.spool.close()
        if self.ledger is not None:
            self.ledger.close()

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
