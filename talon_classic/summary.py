"""What a run did, counted as it goes and printed at the end (text or JSON)."""

from __future__ import annotations

import collections
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

#: Distinct dropped attribute names remembered per reason (keeps memory flat).
MAX_DROPPED_NAMES = 10_000
#: ``Counter.update(items)`` without its Python frame and its Mapping check (an ABC
#: lookup): the C helper Counter itself counts with (half the time, once per event).
_count: Callable[[Any, Any], None] = getattr(collections, "_count_elements", Counter.update)


class Summary:
    """Thread-safe counters for one run."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.started = clock()
        self.finished: float | None = None
        self.events_read = 0
        self.kept = 0
        self.skipped: Counter[str] = Counter()
        self._pairs: Counter[tuple[str, str]] = Counter()
        self._unnamed: Counter[str] = Counter()
        # drops decided at delivery (sender threads), kept apart from the reader's
        self._late: Counter[tuple[str, str]] = Counter()
        self.profiles_upserted = 0
        self.requests = 0
        self.retries = 0
        self.rejected = 0
        self.failed = 0
        self.dead_lettered = 0
        self.batches_resumed = 0
        #: Profiles not sent: nothing newer than what Talon.One acknowledged (the ledger).
        self.profiles_current = 0
        #: Profiles whose newest values were sent again after an uncertain request.
        self.profiles_repaired = 0
        #: Profiles of uncertain requests not repaired yet (the next run does it).
        self.repairs_left = 0
        #: Profiles whose repair Talon.One refused (it may hold older values).
        self.repairs_refused = 0
        #: Seconds the run waited before repairing (until uncertain requests could no longer land).
        self.repair_wait = 0.0
        #: The ordering ledger this run used (set by the caller), None without one.
        self.state_file: str | None = None
        #: Why there is none, or how it was used (``dry run: read, not written``).
        self.state_note = ""
        #: Batches hit by an unexpected error (a bug): dead-lettered, exit status 4.
        self.internal_errors = 0
        #: Dead letters this run added to the dead-letter file (set by the caller).
        self.dead_letter_file: str | None = None
        self.stopped: str | None = None
        #: Engage audience memberships (``added``, ``removed``, ``superseded``), when the run
        #: sends them (``engageAudiences`` memberships or both); None otherwise.
        self.memberships: dict[str, int] | None = None

    def skip(self, reason: str) -> None:
        """Count one skipped event (main thread)."""
        self.events_read += 1
        self.skipped[reason] += 1

    def keep(self, dropped: list[tuple[str, str]]) -> None:
        """Count one kept event and its dropped attributes (main thread)."""
        self.events_read += 1
        self.kept += 1
        if dropped:
            pairs = self._pairs
            if len(pairs) < MAX_DROPPED_NAMES:
                _count(pairs, dropped)  # C-level counting of (name, reason)
            else:  # enough distinct names: count reasons, and only names already seen
                for pair in dropped:
                    if pair in pairs:
                        pairs[pair] += 1
                    else:
                        self._unnamed[pair[1]] += 1

    def count(self, kept: int, skipped: Counter[str],
              dropped: Counter[tuple[str, str]]) -> None:
        """Count many events at once (from a worker process): kept, skipped, dropped pairs."""
        self.events_read += kept + sum(skipped.values())
        self.kept += kept
        self.skipped.update(skipped)
        pairs = self._pairs
        for pair, n in dropped.items():
            if pair in pairs or len(pairs) < MAX_DROPPED_NAMES:
                pairs[pair] += n
            else:
                self._unnamed[pair[1]] += n

    def take_input_counts(self, other: Summary) -> None:
        """Report ``other``'s events (read, kept, skipped, dropped) and start as this run's.

        ``identify --compact`` sends compacted profiles: the events behind them
        were counted by the compaction.
        """
        self.started = min(self.started, other.started)
        self.events_read, self.kept = other.events_read, other.kept
        self.skipped = Counter(other.skipped)
        self._pairs, self._unnamed = Counter(other._pairs), Counter(other._unnamed)

    def drop(self, dropped: list[tuple[str, str]]) -> None:
        """Count attributes left out when a batch was compared with what Talon.One has
        (``superseded``, ``unchanged``); from any thread."""
        if not dropped:
            return
        with self._lock:
            late = self._late
            if len(late) < MAX_DROPPED_NAMES:
                _count(late, dropped)
            else:
                for pair in dropped:
                    late[pair if pair in late else ("", pair[1])] += 1

    def _all_pairs(self) -> Counter[tuple[str, str]]:
        with self._lock:
            return self._pairs + self._late

    @property
    def dropped(self) -> Counter[str]:
        """Dropped attributes per reason."""
        out = Counter(self._unnamed)
        for (_, reason), count in self._all_pairs().items():
            out[reason] += count
        return out

    @property
    def dropped_names(self) -> dict[str, Counter[str]]:
        """Per reason, how often each attribute name was dropped."""
        out: dict[str, Counter[str]] = {}
        for (name, reason), count in self._all_pairs().items():
            if name:  # "" counts drops past MAX_DROPPED_NAMES names
                out.setdefault(reason, Counter())[name] = count
        return out

    def add_float(self, **amounts: float) -> None:
        """Add to float counters (seconds) from any thread."""
        with self._lock:
            for key, value in amounts.items():
                setattr(self, key, getattr(self, key) + value)

    def add(self, **counts: int) -> None:
        """Add to delivery counters from any thread."""
        with self._lock:
            for key, value in counts.items():
                setattr(self, key, getattr(self, key) + value)

    def count_memberships(self, added: int = 0, removed: int = 0, superseded: int = 0) -> None:
        """Count Engage memberships sent (added, removed) or left out as older (superseded)."""
        with self._lock:
            counts = self.memberships if self.memberships is not None else dict.fromkeys(
                ("added", "removed", "superseded"), 0)
            counts["added"] += added
            counts["removed"] += removed
            counts["superseded"] += superseded
            self.memberships = counts

    def finish(self) -> None:
        """Stop the clock."""
        self.finished = self._clock()

    @property
    def elapsed(self) -> float:
        """Seconds since the start (until finish())."""
        return (self.finished if self.finished is not None else self._clock()) - self.started

    def as_dict(self) -> dict[str, Any]:
        """The stable ``--json`` shape."""
        elapsed = self.elapsed
        out = {
            "events_read": self.events_read,
            "kept": self.kept,
            "skipped": dict(sorted(self.skipped.items())),
            "dropped": {
                reason: {"count": count, "top": dict(names.get(reason, Counter()).most_common(10))}
                for names in [self.dropped_names]
                for reason, count in sorted(self.dropped.items())
            },
            "profiles_upserted": self.profiles_upserted,
            "requests": self.requests,
            "retries": self.retries,
            "rejected": self.rejected,
            "failed": self.failed,
            "dead_lettered": self.dead_lettered,
            "batches_resumed": self.batches_resumed,
            "profiles_current": self.profiles_current,
            "profiles_repaired": self.profiles_repaired,
            "repairs_left": self.repairs_left,
            "repairs_refused": self.repairs_refused,
            "repair_wait_s": round(self.repair_wait, 3),
            "state_file": self.state_file,
            "internal_errors": self.internal_errors,
            "dead_letter_file": self.dead_letter_file if self.dead_lettered else None,
            "stopped": self.stopped,
            "elapsed_s": round(elapsed, 3),
            "events_per_s": round(self.events_read / elapsed, 1) if elapsed > 0 else None,
            "peak_rss_mb": _peak_rss_mb(),
        }
        if self.memberships is not None:
            out["memberships"] = dict(self.memberships)
        return out

    def render(self) -> str:
        """Human summary, one fact per line."""
        d = self.as_dict()
        lines = self.input_lines(d)
        lines += [
            f"profiles upserted  {d['profiles_upserted']:>12,}",
            f"requests sent      {d['requests']:>12,}  (retries {d['retries']:,})",
            f"dead-lettered      {d['dead_lettered']:>12,}"
            f"  events (rejected {d['rejected']:,}, failed {d['failed']:,})",
        ]
        if "memberships" in d:
            m = d["memberships"]
            lines.append(f"memberships added  {m['added']:>12,}  (removed {m['removed']:,}, "
                         f"superseded by newer {m['superseded']:,})")
        if d["dead_letter_file"]:
            lines.append(f"dead letters in    {d['dead_letter_file']}  (appended; earlier runs' "
                         "lines are kept)")
        if d["internal_errors"]:
            lines.append(f"unexpected errors  {d['internal_errors']:>12,}  batches; their events "
                         "are dead-lettered (a bug: please report it)")
        if d["profiles_current"]:
            lines.append(f"up to date         {d['profiles_current']:>12,}  profiles not sent "
                         "(nothing newer than what Talon.One acknowledged)")
        if d["profiles_repaired"]:
            waited = f"; waited {d['repair_wait_s']:.0f}s" if d["repair_wait_s"] >= 1 else ""
            lines.append(f"repaired           {d['profiles_repaired']:>12,}  profiles (newest "
                         f"values sent again: a request with older ones may land late{waited})")
        if d["repairs_refused"]:
            lines.append(f"repair refused     {d['repairs_refused']:>12,}  profiles (Talon.One "
                         "refused their newest values now, so they may hold older ones: see "
                         "the warnings)")
        if d["repairs_left"]:
            lines.append(f"repair pending     {d['repairs_left']:>12,}  profiles (a request "
                         "with older values may land late; the next run with this state file "
                         "repairs them)")
        if d["batches_resumed"]:
            lines.append(f"batches resumed    {d['batches_resumed']:>12,}  (delivered before, not re-sent)")
        if d["state_file"] or self.state_note:
            lines.append(f"state file         {d['state_file'] or 'none'}"
                         + (f"  ({self.state_note})" if self.state_note else ""))
        lines.append(self.elapsed_line(d))
        if d["stopped"]:
            lines.append(f"stopped early: {d['stopped']}")
        return "\n".join(lines)

    def input_lines(self, d: dict[str, Any]) -> list[str]:
        """The summary's first lines: events read, kept, skipped, dropped (of ``as_dict()``)."""
        skipped = sum(self.skipped.values())
        lines = [
            f"events read        {d['events_read']:>12,}",
            f"kept               {d['kept']:>12,}",
            f"skipped            {skipped:>12,}"
            + (
                "  (" + ", ".join(f"{r} {n:,}" for r, n in d["skipped"].items()) + ")"
                if skipped
                else ""
            ),
        ]
        if d["dropped"]:
            total = sum(info["count"] for info in d["dropped"].values())
            lines.append(f"dropped attributes {total:>12,}")
        for reason, info in d["dropped"].items():
            top = ", ".join(f"{n} {c:,}" for n, c in info["top"].items())
            lines.append(f"  {reason:<17}{info['count']:>12,}  top: {top}")
        return lines

    @staticmethod
    def elapsed_line(d: dict[str, Any]) -> str:
        """``elapsed  12.34s  (56,789 events/s)`` (of ``as_dict()``)."""
        rate = f"{d['events_per_s']:,.0f} events/s" if d["events_per_s"] else "-"
        return f"elapsed            {d['elapsed_s']:>11.2f}s  ({rate})"


def _peak_rss_mb() -> float | None:
    """This process's peak resident memory, for capacity planning (None where unknown).

    Linux's VmHWM first: ``ru_maxrss`` carries the parent's peak across
    fork and exec, so a small child of a big parent would report the parent.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)
