"""Group commit: the changes of many threads in one transaction and one fsync.

Concurrent callers each hand in a ticket. One of them (the leader) commits
every ticket queued so far at once, then wakes the others; a caller that
arrives while a commit runs waits and goes in the next one. Each caller
returns only once its own ticket is committed, so acknowledging after the
call is safe; when a commit fails, every ticket in it carries the error.

The spool (every event ``serve`` acknowledges) and the ordering ledger
(without its background writer) commit this way.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar


class Ticket(Protocol):
    """What a caller hands in: marked done once committed, with the error if that failed."""

    done: bool
    error: BaseException | None


T = TypeVar("T", bound=Ticket)


class GroupCommit(Generic[T]):
    """Commits tickets in groups with ``commit(group)`` (one transaction for the group)."""

    def __init__(self, commit: Callable[[list[T]], None]) -> None:
        self._commit = commit
        self._cond = threading.Condition()
        self._queue: list[T] = []
        self._leading = False

    def submit(self, ticket: T) -> None:
        """Commit ``ticket`` with whatever else is queued; return once that commit is over.

        Never raises what the commit raised: ``ticket.error`` holds it (every
        ticket of a failed group gets the same error), so each caller decides
        how to report it.
        """
        with self._cond:
            self._queue.append(ticket)
            while not ticket.done and self._leading:
                self._cond.wait()
            if ticket.done:
                return
            self._leading = True
            group, self._queue = self._queue, []
        try:
            self._commit(group)
        except BaseException as exc:
            for t in group:
                t.error = exc
        with self._cond:
            for t in group:
                t.done = True
            self._leading = False
            self._cond.notify_all()
