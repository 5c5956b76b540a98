"""Group commit: concurrent tickets share commits, each caller returns once its own is in."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from talon_classic.groupcommit import GroupCommit


@dataclass
class Ticket:
    n: int
    done: bool = False
    error: BaseException | None = None
    committed_with: int = 0


def test_callers_arriving_during_a_commit_share_the_next_one() -> None:
    groups: list[list[int]] = []
    committed: set[int] = set()

    def commit(group: list[Ticket]) -> None:
        time.sleep(0.05)  # an fsync: the others queue meanwhile
        groups.append([t.n for t in group])
        committed.update(t.n for t in group)
        for t in group:
            t.committed_with = len(group)

    commits = GroupCommit(commit)
    seen_on_return: dict[int, bool] = {}

    def caller(n: int) -> None:
        ticket = Ticket(n)
        commits.submit(ticket)
        seen_on_return[n] = ticket.done and n in committed  # its own commit is over

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(n for group in groups for n in group) == list(range(20))  # each once
    assert len(groups) < 20 and all(seen_on_return.values()) and len(seen_on_return) == 20


def test_a_failed_commit_marks_its_own_group_only_and_the_next_one_goes_on() -> None:
    release = threading.Event()
    calls = []

    def commit(group: list[Ticket]) -> None:
        calls.append([t.n for t in group])
        if len(calls) == 1:
            release.wait(5)  # the second caller queues behind this one
            raise OSError("disk full")

    commits = GroupCommit(commit)
    first, second = Ticket(1), Ticket(2)
    leader = threading.Thread(target=commits.submit, args=(first,))
    leader.start()
    while not calls:
        time.sleep(0.001)
    follower = threading.Thread(target=commits.submit, args=(second,))
    follower.start()
    time.sleep(0.05)
    release.set()
    leader.join()
    follower.join()
    assert isinstance(first.error, OSError) and str(first.error) == "disk full"
    assert second.error is None and second.done and calls == [[1], [2]]
