"""The dead-letter file: any event the reader produced can be written, and read back."""

from __future__ import annotations

from pathlib import Path

import hostile

from talon_classic.deadletter_file import DeadLetters
from talon_classic.reader import loads


def test_hostile_events_are_written_whole(tmp_path: Path) -> None:
    """Huge integers, lone surrogates, deep nesting: each dead letter is one readable line.

    Before: writing one raised, so a rejected profile carrying such a value
    was neither delivered nor dead-lettered.
    """
    event = loads(hostile.good("u1", **hostile.HOSTILE_CONTEXT))
    dead = DeadLetters(tmp_path / "dead.jsonl")
    dead.write(event, "rejected", "attribute \ud800 is bad", "in.jsonl:3")
    dead.close()
    raw = (tmp_path / "dead.jsonl").read_bytes()
    raw.decode("utf-8")  # strict UTF-8: lone surrogates are escapes, never raw
    [line] = raw.splitlines()
    letter = loads(line)
    assert letter == {"event": event, "reason": "rejected", "error": "attribute \ud800 is bad",
                      "input": "in.jsonl:3"}
    assert b"\\ud800" in line and letter["event"]["context"]["huge"] == 10**5000 - 1


def test_problem_says_why_no_dead_letter_could_be_written(tmp_path: Path) -> None:
    assert DeadLetters(tmp_path / "d.jsonl").problem() is None  # created when needed
    assert not (tmp_path / "d.jsonl").exists()  # checking creates nothing
    assert DeadLetters(tmp_path).problem() == f"{tmp_path}: is a directory; give --dead-letter FILE"
    missing = tmp_path / "no" / "d.jsonl"
    assert DeadLetters(missing).problem() == (f"{missing}: no such directory {tmp_path / 'no'}; "
                                              "give --dead-letter FILE")
