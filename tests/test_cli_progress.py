"""The status line the long-running commands draw on a terminal (talon_classic.cli.progress)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from talon_classic.cli import progress as progress_module
from talon_classic.cli.progress import StatusLine, input_eta


class Counting(StatusLine[int]):
    def text(self, subject: int) -> str:
        return f"{subject:,} done"


@pytest.fixture
def clock(monkeypatch) -> list[float]:
    now = [100.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: now[0])
    return now


def test_draws_over_itself_at_most_twice_a_second(capsys, clock) -> None:
    line = Counting(enabled=True)
    line(1000)
    clock[0] += 0.2
    line(2000)  # too soon: not drawn
    clock[0] += 0.4
    line(3000)
    assert capsys.readouterr().err == "\r1,000 done   \r3,000 done   "


def test_close_ends_the_line_once_and_only_when_drawn(capsys, clock) -> None:
    line = Counting(enabled=True)
    line.close()
    assert capsys.readouterr().err == ""
    line(5)
    line.close()
    line.close()
    assert capsys.readouterr().err == "\r5 done   \n"


def test_disabled_draws_nothing(capsys, clock) -> None:
    line = Counting(enabled=False)
    line(5)
    line.close()
    assert capsys.readouterr().err == ""


def test_input_eta() -> None:
    source = SimpleNamespace(name="big.jsonl", size=1000, consumed=250)
    assert input_eta(source, 10.0, 500.0) == "  big.jsonl 25%, ETA 30s"
    assert input_eta(None, 10.0, 500.0) == ""
    assert input_eta(source, 10.0, 0.0) == ""
    for size, consumed in ((None, 0), (0, 0), (1000, 0), (1000, 1000)):
        assert input_eta(SimpleNamespace(name="x", size=size, consumed=consumed), 1.0, 1.0) == ""


def test_each_command_says_its_own_line(capsys, clock) -> None:
    from talon_classic.cli.audience import Progress as AudienceProgress
    from talon_classic.cli.compact import CompactProgress

    source = SimpleNamespace(name="m.csv", size=1000, consumed=400)
    summary = SimpleNamespace(members_read=12345, added=7, removed=3, delivery_seconds=2.0,
                              events_read=900, elapsed=3.0, current_input=source)
    assert AudienceProgress(True).text(
        SimpleNamespace(summary=summary, phase="reading", current_input=source)
    ) == "12,345 members read  m.csv 40%"
    assert AudienceProgress(True).text(
        SimpleNamespace(summary=summary, phase="delivering", current_input=source)
    ) == "added 7  removed 3  5 actions/s"
    assert CompactProgress(True).text(summary) == "900 events read  300 events/s  m.csv 40%, ETA 4s"
