"""Merging events into profiles: per integrationId, attribute by attribute, newest first.

Both ``talon-classic identify`` (:mod:`talon_classic.bulk`) and the server's
worker feed kept events to a :class:`Merger` and take :class:`Batch` es out
of it. The rules, which this module is the one place to implement:

* **Newest timestamp wins, per attribute.** Each value keeps the timestamp
  of its event; a value from an older event never replaces a newer one,
  whatever order the events arrive in. Equal timestamps: the later event
  (input order) wins.
* **No timestamp means file order.** An event without a (readable)
  timestamp counts as the latest so far: its values replace what is there
  and are always sent. They keep the timestamp of the value they replaced
  (none for a new attribute), so later events are judged against that.
  No timestamp sorts before every timestamp.
* **Never behind what Talon.One has.** The merger remembers, per attribute,
  the timestamp of what it sent for the most recent ``window`` profiles (an
  LRU). With a :class:`~talon_classic.ledger.Ledger` that window is a cache
  in front of it: a profile the window does not hold is looked up there (one
  query per batch), so what was acknowledged in earlier runs, replays and
  restarts counts too. A value older than the one remembered is left out
  (``superseded``); with ``skip_unchanged`` a value whose digest equals the
  acknowledged one's is too (``unchanged``); a known profile left with
  nothing to send is not sent (:attr:`Batch.current`: it exists already).
* **Undo for what was not delivered.** A batch records what it changed in
  that memory; :meth:`Merger.rollback` takes it back for the profiles
  Talon.One did not take, so a retry (or a later, older event) is not left
  out because of a value that never arrived.

Two steps make a batch. :meth:`Merger.detach` (the reading thread) takes
profiles out of the open ones; which ones depends only on the input, so
batches are deterministic. :meth:`Merger.settle` (any thread) compares them
with what is remembered. The bulk pipeline settles a batch only once no
earlier batch with one of its profiles is in flight, so what is remembered
for them is exactly what Talon.One acknowledged (a later batch is never
settled against a value that is still in flight and may fail).
:meth:`Merger.close` does both at once, for callers that send one batch at a
time. After delivery, :meth:`Merger.entries` gives the ledger entries of
the profiles Talon.One acknowledged.

The ordering key of a value is (its timestamp, the order it was read in);
input order needs no storing, as later batches come from later input (see
:mod:`talon_classic.ledger`). :meth:`Batch.stamps` gives the timestamps of a
batch's delivered profiles.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from talon_classic.ledger import Entries, Ledger

#: Where an event came from: ``(event, "file:line")`` in bulk runs, ``(event, seq)`` in serve.
Source = tuple[Any, Any]


#: What the merger remembers of one profile sent: ``(stamps, high, entry, plain)``, the
#: timestamp behind each attribute, the newest of them (None when none had one), the
#: profile's ledger entry as Talon.One acknowledged it (None when unknown or none), and
#: whether it was new with every attribute at timestamp ``high`` (the cheapest ledger
#: entry). A plain tuple, never changed (replaced whole): the cheapest object to make,
#: one per profile sent, and the cyclic collector stops scanning tuples of untracked
#: items, which the ordering window holds by the hundred thousand.
_Sent = tuple[dict[str, "float | None"], "float | None", "bytes | None", bool]
_STAMPS: Final = 0
_HIGH: Final = 1
_ENTRY: Final = 2
_PLAIN: Final = 3


def parse_timestamp(value: Any) -> float | None:
    """ISO 8601 -> epoch seconds; None when absent or unreadable (file order)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


@dataclass
class Batch:
    """Up to ``batch_size`` merged profiles and the events they came from.

    ``sources`` lists each profile's events, for acknowledging or
    dead-lettering them. Once settled (:meth:`Merger.settle`), ``profiles``
    are ready to send (``{"integrationId", "attributes"}``), ``current``
    holds the profiles with nothing newer than what is remembered (not sent;
    their events are done) and ``dropped`` the ``(attribute, reason)`` of
    each value left out (``superseded``, ``unchanged``).
    """

    seq: int
    profiles: list[dict[str, Any]]
    sources: dict[str, list[Source]] = field(repr=False)
    current: list[str] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list, repr=False)
    #: detached profiles, until settled
    _open: list[tuple[str, _Open]] = field(default_factory=list, repr=False, compare=False)
    settled: bool = field(default=False, repr=False)
    # per settled profile: what the merger remembered of it before this batch (absent:
    # nothing), and what this batch left there (None once rolled back)
    _before: dict[str, _Sent] = field(default_factory=dict, repr=False, compare=False)
    _after: dict[str, _Sent | None] = field(default_factory=dict, repr=False, compare=False)
    #: digests of values settle compared (skip_unchanged), for the ledger entries
    _digests: dict[str, dict[str, int]] = field(default_factory=dict, repr=False,
                                                compare=False)

    def stamps(self) -> dict[str, dict[str, float | None]]:
        """Per profile, the timestamp behind each attribute value this batch sends.

        A value from an event without a timestamp has the one of the value
        it replaced (None for a new attribute; see the module). Profiles rolled
        back are left out, so after the undelivered ones are rolled back this
        is what Talon.One acknowledged.
        """
        out = {}
        for profile in self.profiles:
            iid = profile["integrationId"]
            entry = self._after.get(iid)
            if entry is not None:
                stamps = entry[_STAMPS]
                out[iid] = {key: stamps.get(key) for key in profile["attributes"]}
        return out


class _Open:
    """One profile being merged: values, the timestamp behind each, and bounds.

    ``low``/``high`` are the oldest and newest timestamps of its events
    (None until one had a timestamp); ``loose`` says some value came from
    an event without one. A value without timestamp takes the timestamp of
    the value it replaces, which may be one only the window or the ledger
    knows; so from the first such event on, ``base`` keeps what was merged
    before it and ``log`` every event since, and settling replays them
    against what is known (:meth:`Merger._replay`).
    """

    __slots__ = ("values", "stamps", "low", "high", "loose", "base", "log")

    def __init__(self, attributes: dict[str, Any], ts: float | None) -> None:
        self.values = dict(attributes)
        self.stamps: dict[str, float | None] = dict.fromkeys(attributes, ts)
        self.low = self.high = ts
        self.loose = ts is None
        self.base: tuple[dict[str, Any], dict[str, float | None]] | None = None
        self.log: list[tuple[dict[str, Any], float | None]] | None = None
        if ts is None:
            self.base, self.log = ({}, {}), [(attributes, None)]


class Merger:
    """The open batch: merges events per integrationId, and what was sent.

    It also remembers the ids of the last ``lookback`` batches. When a batch
    closes, profiles sent in one of those (likely still in flight) are
    carried over to the next batch, as long as most of the batch is fresh,
    so consecutive batches rarely share an id and can go out in parallel.
    The decision depends only on the input, so batches stay deterministic.

    ``ledger``: what Talon.One acknowledged before (the window is its
    cache); ``skip_unchanged``: leave out values equal to the acknowledged
    ones (needs a ledger, which keeps their digests).

    The common cases (events in time order, profiles seen for the first time)
    take C-level dict operations only; per-attribute work happens only when
    timestamps go backwards or a profile is known.

    :meth:`add`, :meth:`detach` and :meth:`discard_open` belong to one
    thread (the reader); :meth:`settle`, :meth:`rollback` and
    :meth:`entries` may come from any thread and are serialised, but one
    profile must not be in two batches being settled or sent at once.
    """

    def __init__(self, batch_size: int, lookback: int, window: int,
                 ledger: Ledger | None = None, skip_unchanged: bool = False) -> None:
        if skip_unchanged and ledger is None:
            raise ValueError("skip_unchanged needs a ledger (it keeps the values' digests)")
        self.batch_size = batch_size
        self.window = window
        self.ledger = ledger
        self.skip_unchanged = skip_unchanged
        self._open: dict[str, _Open] = {}
        self._sources: dict[str, list[Source]] = {}
        # per recently sent id, least recently sent first (an LRU)
        self._sent: dict[str, _Sent] = {}
        self._recent: deque[frozenset[str]] = deque(maxlen=lookback)
        self._carried = 0
        self._lock = threading.Lock()
        #: Profiles left the window (so the ledger may know ones the window does not).
        self._evicted = False
        #: Ledger entries this merger produced (see :meth:`settle`).
        self._produced = 0
        #: Times the window was cut back (a lookup before one may have missed a profile).
        self._trims = 0

    # -- the open batch ---------------------------------------------------------
    def add(self, iid: str, attributes: dict[str, Any], ts: float | None,
            source: Source | None) -> None:
        """Merge one kept event into the open profiles. ``source`` None: more values of
        the event added last for ``iid`` (a compacted profile's values of another timestamp)."""
        current = self._open.get(iid)
        if current is None:
            self._open[iid] = _Open(attributes, ts)
            self._sources[iid] = [] if source is None else [source]
            return
        if source is not None:
            self._sources[iid].append(source)
        if current.log is not None:
            current.log.append((attributes, ts))
        if ts is None:  # file order: this one is the latest
            if current.log is None:
                current.base = (dict(current.values), dict(current.stamps))
                current.log = [(attributes, None)]
            current.values.update(attributes)
            for key in attributes:
                current.stamps.setdefault(key, None)
            current.loose = True
            return
        if current.high is None or ts >= current.high:
            current.values.update(attributes)
            current.stamps.update(dict.fromkeys(attributes, ts))
            current.high = ts
        else:
            values, stamps = current.values, current.stamps
            for key, value in attributes.items():
                old = stamps.get(key)
                if old is None or ts >= old:
                    values[key] = value
                    stamps[key] = ts
        if current.low is None or ts < current.low:
            current.low = ts

    @property
    def pending(self) -> int:
        """How many profiles are open (merged, not yet in a batch)."""
        return len(self._open)

    @property
    def full(self) -> bool:
        """Enough fresh profiles (not sent in the last batches) for a batch?"""
        return len(self._open) - self._carried >= self.batch_size

    def discard_open(self) -> None:
        """Drop the open profiles unsent (their events must still be held elsewhere).

        The server's worker does this when it stops or a micro-batch fails:
        the events are still in its spool and are merged again next time.
        What was sent is still remembered.
        """
        self._open.clear()
        self._sources.clear()
        self._carried = 0

    def close(self, seq: int, final: bool = False) -> Batch:
        """:meth:`detach` and :meth:`settle`: a batch ready to send."""
        return self.settle(self.detach(seq, final))

    def detach(self, seq: int, final: bool = False) -> Batch:
        """Take up to ``batch_size`` open profiles out as a batch, not settled yet.

        Unless ``final``, profiles of the last batches are carried over when
        at least half the batch can be filled with fresh ones. Which profiles
        go depends only on what was added, never on timing.
        """
        recent = self._recent
        take = list(self._open)
        if not final and recent:
            in_recent = frozenset().union(*recent)
            fresh = [i for i in take if i not in in_recent]
            if len(fresh) >= self.batch_size // 2:
                take = fresh
        take = take[: self.batch_size]
        pop_open, pop_sources = self._open.pop, self._sources.pop
        items = [(iid, pop_open(iid)) for iid in take]
        sources = {iid: pop_sources(iid) for iid in take}
        recent.append(frozenset(sources))
        self._carried = len(self._open)
        return Batch(seq, [], sources, _open=items)

    # -- what was sent ------------------------------------------------------------
    def settle(self, batch: Batch) -> Batch:
        """Compare ``batch`` with what was sent and acknowledged, and remember it as sent.

        Values older than the ones remembered (in the window, else in the
        ledger) are left out as ``superseded``; with ``skip_unchanged``,
        values whose digest equals the acknowledged one's as ``unchanged``
        (their newer timestamp is still remembered). A known profile left
        with nothing is put in :attr:`Batch.current` instead of
        :attr:`Batch.profiles`. Settling twice does nothing.
        """
        if batch.settled:
            return batch
        ledger = self.ledger
        found: dict[str, bytes] = {}
        # A ledger that was empty when opened, and was given only what this merger
        # produced, knows nothing the window does not, until the window drops a
        # profile: no query needed until then (a first import's common case).
        ask = ledger is not None and not (ledger.started_empty and not self._evicted
                                          and ledger.recorded == self._produced)
        trims = self._trims
        if ask and ledger is not None:
            sent = self._sent
            found = ledger.lookup([iid for iid, _ in batch._open if iid not in sent])
        with self._lock:
            if ledger is not None and (ask or self._evicted) and trims != self._trims:
                # left the window since: rare, but then the ledger must answer for them
                late = [iid for iid, _ in batch._open if iid not in self._sent
                        and iid not in found]
                if late:
                    found.update(ledger.lookup(late))
            self._settle(batch, found)
        return batch

    def _settle(self, batch: Batch, found: dict[str, bytes]) -> None:
        ledger = self.ledger
        skip = self.skip_unchanged
        profiles, current, dropped = batch.profiles, batch.current, batch.dropped
        befores, afters = batch._before, batch._after
        sent = self._sent
        pop_sent = sent.pop
        append = profiles.append
        for iid, item in batch._open:
            before = pop_sent(iid, None)
            if before is None and found:
                blob = found.get(iid)
                if blob is not None and ledger is not None:
                    known, known_high = ledger.stamps(blob)
                    before = (known, known_high, blob, False)
            if before is None:  # never sent: the common case, no per-attribute work
                high = item.high
                entry: _Sent = (item.stamps, high, None, not item.loose and item.low == high)
                sent[iid] = entry  # inserted last: the dict is an LRU
                afters[iid] = entry
                append({"integrationId": iid, "attributes": item.values})
                continue
            # What was sent is never changed in place (a batch may need it back
            # on rollback): a profile sent before gets a new dict.
            last_stamps, last_high, known_entry = before[_STAMPS], before[_HIGH], before[_ENTRY]
            if item.log is not None and last_high is not None:
                attributes, stamps = self._replay(item, last_stamps, dropped)
            elif last_high is None or (item.low is not None and item.low >= last_high):
                attributes = item.values  # nothing here is older than what was sent
                if item.loose:  # a value without timestamp keeps the one it replaced
                    stamps = dict(last_stamps)
                    for key, ts in item.stamps.items():
                        if ts is not None:
                            stamps[key] = ts
                        elif key not in stamps:
                            stamps[key] = None
                else:
                    stamps = {**last_stamps, **item.stamps}
            else:
                stamps = dict(last_stamps)
                attributes = {}
                for key, value in item.values.items():
                    ts = item.stamps[key]
                    if ts is not None:
                        last = stamps.get(key)
                        if last is not None and ts < last:
                            dropped.append((key, "superseded"))
                            continue  # a newer value was sent (and acknowledged) before
                        stamps[key] = ts
                    else:
                        stamps.setdefault(key, None)
                    attributes[key] = value
            if last_high is None:
                high = item.high
            else:
                high = last_high if item.high is None or item.high < last_high else item.high
            if skip and attributes and known_entry is not None and ledger is not None:
                attributes = self._leave_unchanged(batch, iid, attributes, known_entry)
            entry = (stamps, high, known_entry, False)
            sent[iid] = entry  # re-inserted last: the dict is an LRU
            befores[iid] = before
            afters[iid] = entry
            if not attributes:
                current.append(iid)  # it exists, and nothing here is newer
            else:
                append({"integrationId": iid, "attributes": attributes})
        if len(sent) > self.window + self.window // 4:
            # drop the least recently sent, in one pass (deleting from the front
            # of a dict one by one gets slower and slower)
            self._sent = dict(islice(sent.items(), len(sent) - self.window, None))
            self._evicted = True
            self._trims += 1
        batch._open = []
        batch.settled = True

    @staticmethod
    def _replay(item: _Open, known: dict[str, float | None], dropped: list[tuple[str, str]]
                ) -> tuple[dict[str, Any], dict[str, float | None]]:
        """A loose profile's events, in order, against what is ``known``: what to send,
        and the timestamps then.

        A value with a timestamp replaces one at most as old (no timestamp is
        oldest); a value without one always replaces, keeping the timestamp
        of what it replaced: exactly what merging every event one by one
        after the known ones gives.
        """
        assert item.base is not None and item.log is not None
        stamps = dict(known)
        attributes: dict[str, Any] = {}
        values, times = item.base
        steps: list[tuple[dict[str, Any], float | None]] = [
            ({key: value}, times[key]) for key, value in values.items()]
        for changes, ts in steps + item.log:
            for key, value in changes.items():
                if ts is None:
                    attributes[key] = value
                    stamps.setdefault(key, None)
                    continue
                last = stamps.get(key)
                if last is None or ts >= last:
                    attributes[key] = value
                    stamps[key] = ts
        dropped += [(key, "superseded") for key in item.values if key not in attributes]
        return attributes, stamps

    def _leave_unchanged(self, batch: Batch, iid: str, attributes: dict[str, Any],
                         entry: bytes) -> dict[str, Any]:
        """``attributes`` without those whose digest equals the acknowledged one's."""
        from talon_classic.ledger import digests

        assert self.ledger is not None
        old = self.ledger.digests(entry)
        new = digests(attributes)
        same = [key for key, digest in new.items() if old.get(key) == digest]
        batch._digests[iid] = new
        if not same:
            return attributes
        batch.dropped += [(key, "unchanged") for key in same]
        return {key: value for key, value in attributes.items() if key not in set(same)}

    def rollback(self, batch: Batch, iids: Iterable[str]) -> None:
        """Forget what ``batch`` recorded as sent for ``iids``: Talon.One did not take them.

        Call it for every profile of a batch that was not delivered (failed,
        rejected, or the whole request), before those profiles can be merged
        again. The memory goes back to what it was before the batch, so a
        retry sends every value again, and a later event older than an
        undelivered value is not left out because of it.

        Exact when no later batch was settled with the same profile in the
        meantime: always so in the bulk pipeline (a batch is settled only
        once no earlier batch with its profiles is in flight) and in the
        server's worker (one batch at a time). When one was (a caller
        settling batches ahead of their outcome), that later memory is kept:
        it may hold a timestamp that was not delivered, so an older value can
        still be left out (never an older value sent over a newer one).
        Rolling back the same profile twice does nothing.
        """
        with self._lock:
            sent = self._sent
            afters = batch._after
            for iid in iids:
                entry = afters.get(iid)
                if entry is None:
                    continue
                afters[iid] = None
                before = batch._before.get(iid)
                if sent.get(iid) is not entry:
                    continue  # a later batch recorded it, or it left the window
                if before is None:
                    del sent[iid]
                else:
                    sent[iid] = before

    def entries(self, batch: Batch, delivered: Collection[str] | None = None) -> Entries:
        """The ledger entries of ``batch``'s profiles that Talon.One acknowledged.

        Call it once the undelivered profiles are rolled back: every profile
        not rolled back counts as acknowledged (``delivered``, when given,
        narrows that down). Profiles in :attr:`Batch.current` are included
        when settling advanced a timestamp (an unchanged value of a newer
        event). Empty without a ledger, or with a read-only one. What is
        remembered of each profile takes the new entry (a new profile's plain
        entry, without digests, need not be: its timestamps are, and it has
        no digest).
        """
        from talon_classic.ledger import NO_TS, PACK_TS, Entries

        out = Entries()
        ledger = self.ledger
        if ledger is None or not ledger.writable:
            return out
        ids, blobs = out.ids, out.blobs
        add_id, add_blob = ids.append, blobs.append
        skip = self.skip_unchanged
        heads, head_of = ledger.plain_heads, ledger.plain_head
        others: list[tuple[str, _Sent]] = []
        for iid, after in batch._after.items():
            if after is None or (delivered is not None and iid not in delivered):
                continue
            if after[_PLAIN] and not skip:  # new, one timestamp: the common case
                stamps = after[_STAMPS]
                head = heads.get(tuple(stamps)) or head_of(stamps)
                if head is not None:
                    high = after[_HIGH]
                    add_id(iid)
                    add_blob(head + PACK_TS(NO_TS if high is None else high))
                    continue
            others.append((iid, after))
        if others:
            from talon_classic.ledger import HAS_DIGESTS

            entry, undigested = ledger.entry, ledger.undigested
            digests, befores, afters = batch._digests, batch._before, batch._after
            current = set(batch.current)
            attributes_of: dict[str, dict[str, Any]] | None = None  # only to keep digests
            renewed: list[tuple[str, _Sent, _Sent]] = []
            for iid, after in others:
                stamps = after[_STAMPS]
                if current and iid in current:  # recorded only when a timestamp advanced
                    before = befores.get(iid)
                    if before is None or stamps == before[_STAMPS]:
                        continue
                known = after[_ENTRY]
                if not skip and (known is None or not known[0] & HAS_DIGESTS):
                    blob = undigested(stamps)  # no digest to keep
                else:
                    if attributes_of is None:
                        attributes_of = {p["integrationId"]: p["attributes"]
                                         for p in batch.profiles}
                    attributes = attributes_of.get(iid, {})  # none sent: current
                    blob = entry(stamps, attributes, known, skip, digests.get(iid))
                add_id(iid)
                add_blob(blob)
                renewed.append((iid, after, (stamps, after[_HIGH], blob, after[_PLAIN])))
            if renewed:  # what is remembered takes the new entry (unless replaced since)
                with self._lock:
                    window = self._sent
                    for iid, after, new in renewed:
                        afters[iid] = new
                        if window.get(iid) is after:
                            window[iid] = new
        with self._lock:
            self._produced += len(out)
        return out

    def remembered(self, iid: str) -> dict[str, float | None] | None:
        """What is remembered as sent for ``iid``: the timestamp behind each attribute.

        None when the profile was never sent or has left the ``window`` (the
        ledger may still know it).
        """
        entry = self._sent.get(iid)
        return None if entry is None else dict(entry[_STAMPS])

    @property
    def remembered_count(self) -> int:
        """How many profiles' sent values are remembered (at most ``window`` * 1.25)."""
        return len(self._sent)
