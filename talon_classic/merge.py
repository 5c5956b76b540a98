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
* **Never behind what was sent.** The merger remembers, per attribute, the
  timestamp of what it sent for the most recent ``window`` profiles (an
  LRU); a later batch leaves out a value older than one already sent.
* **Undo for what was not delivered.** A batch records what it changed in
  that memory; :meth:`Merger.rollback` takes it back for the profiles
  Talon.One did not take, so a retry (or a later, older event) is not left
  out because of a value that never arrived.

What the merger remembers is the ordering key of each value sent (its
timestamp; input order breaks ties implicitly, as later batches come from
later input). :meth:`Batch.stamps` gives the keys of a batch's delivered profiles, which
is what a durable record of acknowledged values needs.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from typing import Any

#: Where an event came from: ``(event, "file:line")`` in bulk runs, ``(event, seq)`` in serve.
Source = tuple[Any, Any]
#: What the merger remembers of one sent profile: the timestamp behind each
#: attribute, and the newest timestamp among them (None when none had one).
_Sent = tuple[dict[str, float | None], float | None]


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

    ``profiles`` are ready to send (``{"integrationId", "attributes"}``);
    ``sources`` lists each profile's events, for acknowledging or
    dead-lettering them.
    """

    seq: int
    profiles: list[dict[str, Any]]
    sources: dict[str, list[Source]] = field(repr=False)
    # aligned with ``profiles``: what the merger remembered of each before this
    # batch, and what this batch left there (None once rolled back)
    _before: list[_Sent | None] = field(default_factory=list, repr=False, compare=False)
    _after: list[_Sent | None] = field(default_factory=list, repr=False, compare=False)

    def stamps(self) -> dict[str, dict[str, float | None]]:
        """Per profile, the timestamp behind each attribute value this batch sends.

        A value from an event without a timestamp has the one of the value
        it replaced (None for a new attribute; see the module). Profiles rolled
        back are left out, so after the undelivered ones are rolled back this
        is what Talon.One acknowledged.
        """
        out = {}
        for profile, entry in zip(self.profiles, self._after, strict=True):
            if entry is not None:
                stamps = entry[0]
                out[profile["integrationId"]] = {
                    key: stamps.get(key) for key in profile["attributes"]}
        return out


class _Open:
    """One profile being merged: values, the timestamp behind each, and bounds.

    ``low``/``high`` are the oldest and newest timestamps of its events
    (None until one had a timestamp); ``loose`` says some value came from
    an event without one.
    """

    __slots__ = ("values", "stamps", "low", "high", "loose")

    def __init__(self, attributes: dict[str, Any], ts: float | None) -> None:
        self.values = dict(attributes)
        self.stamps: dict[str, float | None] = dict.fromkeys(attributes, ts)
        self.low = self.high = ts
        self.loose = ts is None


class Merger:
    """The open batch: merges events per integrationId, and what was sent.

    It also remembers the ids of the last ``lookback`` batches. When a batch
    closes, profiles sent in one of those (likely still in flight) are
    carried over to the next batch, as long as most of the batch is fresh,
    so consecutive batches rarely share an id and can go out in parallel.
    The decision depends only on the input, so batches stay deterministic.

    The common cases (events in time order) take C-level dict operations
    only; per-attribute work happens only when timestamps go backwards.

    :meth:`add`, :meth:`close` and :meth:`discard_open` belong to one
    thread (the reader); :meth:`rollback` may come from any thread (a
    sender), and is serialised with :meth:`close`.
    """

    def __init__(self, batch_size: int, lookback: int, window: int) -> None:
        self.batch_size = batch_size
        self.window = window
        self._open: dict[str, _Open] = {}
        self._sources: dict[str, list[Source]] = {}
        # per recently sent id, least recently sent first (an LRU)
        self._sent: dict[str, _Sent] = {}
        self._recent: deque[frozenset[str]] = deque(maxlen=lookback)
        self._carried = 0
        self._lock = threading.Lock()

    # -- the open batch ---------------------------------------------------------
    def add(self, iid: str, attributes: dict[str, Any], ts: float | None, source: Source) -> None:
        """Merge one kept event into the open profiles."""
        current = self._open.get(iid)
        if current is None:
            self._open[iid] = _Open(attributes, ts)
            self._sources[iid] = [source]
            return
        self._sources[iid].append(source)
        if ts is None:  # file order: this one is the latest
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
        """Take up to ``batch_size`` profiles out as a batch, and remember them as sent.

        Values older than ones already sent for the same attribute are left
        out. Unless ``final``, profiles of the last batches are carried over
        when at least half the batch can be filled with fresh ones.
        """
        with self._lock:
            return self._close(seq, final)

    def _close(self, seq: int, final: bool) -> Batch:
        recent = self._recent
        take = list(self._open)
        if not final and recent:
            in_recent = frozenset().union(*recent)
            fresh = [i for i in take if i not in in_recent]
            if len(fresh) >= self.batch_size // 2:
                take = fresh
        take = take[: self.batch_size]
        profiles: list[dict[str, Any]] = []
        sources = {}
        befores: list[_Sent | None] = []
        afters: list[_Sent | None] = []
        add_before, add_after = befores.append, afters.append
        sent = self._sent
        pop_open, pop_sources, pop_sent = self._open.pop, self._sources.pop, sent.pop
        for iid in take:
            item = pop_open(iid)
            sources[iid] = pop_sources(iid)
            before = pop_sent(iid, None)
            # What was sent is never changed in place (a batch may need it back
            # on rollback): a profile sent before gets a new dict.
            if before is None:
                attributes = item.values
                stamps = item.stamps
                high = item.high
            else:
                last_high = before[1]
                if last_high is None or (item.low is not None and item.low >= last_high):
                    attributes = item.values  # nothing here is older than what was sent
                    if item.loose:  # a value without timestamp keeps the one it replaced
                        stamps = dict(before[0])
                        for key, ts in item.stamps.items():
                            if ts is not None:
                                stamps[key] = ts
                            elif key not in stamps:
                                stamps[key] = None
                    else:
                        stamps = {**before[0], **item.stamps}
                else:
                    stamps = dict(before[0])
                    attributes = {}
                    for key, value in item.values.items():
                        ts = item.stamps[key]
                        if ts is not None:
                            last = stamps.get(key)
                            if last is not None and ts < last:
                                continue  # an earlier batch already sent a newer value
                            stamps[key] = ts
                        else:
                            stamps.setdefault(key, None)
                        attributes[key] = value
                if last_high is None:
                    high = item.high
                else:
                    high = last_high if item.high is None or item.high < last_high else item.high
            entry = (stamps, high)
            sent[iid] = entry  # re-inserted last: the dict is an LRU
            add_before(before)
            add_after(entry)
            profiles.append({"integrationId": iid, "attributes": attributes})
        if len(sent) > self.window + self.window // 4:
            # drop the least recently sent, in one pass (deleting from the front
            # of a dict one by one gets slower and slower)
            self._sent = dict(islice(sent.items(), len(sent) - self.window, None))
        recent.append(frozenset(sources))
        self._carried = len(self._open)
        return Batch(seq, profiles, sources, befores, afters)

    # -- what was sent ------------------------------------------------------------
    def rollback(self, batch: Batch, iids: Iterable[str]) -> None:
        """Forget what ``batch`` recorded as sent for ``iids``: Talon.One did not take them.

        Call it for every profile of a batch that was not delivered (failed,
        rejected, or the whole request), before those profiles can be merged
        again. The memory goes back to what it was before the batch, so a
        retry sends every value again, and a later event older than an
        undelivered value is not left out because of it.

        Exact when no later batch recorded the same profile in the meantime
        (always so in the server's worker, which sends one batch at a time
        and has each id in at most one batch of a micro-batch). When one did
        (bulk batches in parallel), that later memory is kept: it may hold a
        timestamp that was not delivered, so an older value can still be
        left out (never an older value sent over a newer one); the
        undelivered events are dead-lettered, and replaying them restores
        the newest values. Rolling back the same profile twice does nothing.
        """
        wanted = set(iids)
        with self._lock:
            sent = self._sent
            for n, profile in enumerate(batch.profiles):
                iid = profile["integrationId"]
                entry = batch._after[n]
                if iid not in wanted or entry is None:
                    continue
                batch._after[n] = None
                before = batch._before[n]
                if sent.get(iid) is not entry:
                    continue  # a later batch recorded it, or it left the window
                if before is None:
                    del sent[iid]
                else:
                    sent[iid] = before

    def remembered(self, iid: str) -> dict[str, float | None] | None:
        """What is remembered as sent for ``iid``: the timestamp behind each attribute.

        None when the profile was never sent or has left the ``window``.
        """
        entry = self._sent.get(iid)
        return None if entry is None else dict(entry[0])

    @property
    def remembered_count(self) -> int:
        """How many profiles' sent values are remembered (at most ``window`` * 1.25)."""
        return len(self._sent)
