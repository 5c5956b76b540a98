"""The progress line the long-running commands draw on stderr (a terminal only).

One :class:`StatusLine` subclass per command says what the line reads
(:meth:`StatusLine.text`); drawing it, redrawing it at most twice a second
and ending it before the summary are the same for all of them.
"""

from __future__ import annotations

import time
from typing import Generic, Protocol, TypeVar

import click

T = TypeVar("T")
#: The fewest seconds between two redraws.
REDRAW_SECONDS = 0.5


class Source(Protocol):
    """An input being read, as :class:`~talon_classic.reader.InputFile` tells its progress."""

    @property
    def name(self) -> str: ...
    @property
    def size(self) -> int | None: ...
    @property
    def consumed(self) -> int: ...


class StatusLine(Generic[T]):
    """A one-line status on stderr, redrawn at most twice a second, when ``enabled``.

    Called with whatever the command's runner hands its ``on_progress``
    (``T``); :meth:`text` makes the line of it. Commands enable it on a
    terminal only, so nothing of it ever reaches a file or a pipe.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._last = 0.0
        self._drawn = False

    def text(self, subject: T) -> str:
        """The line for ``subject``, without the carriage return (each command's own)."""
        raise NotImplementedError

    def __call__(self, subject: T) -> None:
        now = time.monotonic()
        if not self.enabled or now - self._last < REDRAW_SECONDS:
            return
        self._last = now
        click.echo(f"\r{self.text(subject)}   ", err=True, nl=False)
        self._drawn = True

    def close(self) -> None:
        """End the status line so the summary starts on a fresh one (once, however often called)."""
        if self._drawn:
            click.echo("", err=True)
            self._drawn = False


def input_eta(source: Source | None, elapsed: float, rate: float) -> str:
    """``"  big.jsonl 25%, ETA 30s"`` for the input being read, or ``""`` when unknown.

    Unknown: no input yet, one of unknown size (stdin), nothing read yet or
    all of it, or no rate yet.
    """
    if source is None or not source.size or rate <= 0:
        return ""
    done = source.consumed / source.size
    if not 0 < done < 1:
        return ""
    return f"  {source.name} {done:.0%}, ETA {elapsed * (1 - done) / done:,.0f}s"
