"""What one input record becomes for the bulk pipeline: kept (and how) or skipped (and why).

:class:`Intake` holds the rules of the reading stage of ``identify`` (the
transform engine, ``--replay-dead-letters``, ``--profiles``). The pipeline
(:mod:`talon_classic.bulk`) calls :meth:`Intake.digest` on every decoded
record in its own process; with ``--workers N`` each worker process gets a
copy of the Intake and calls it on chunks of raw lines
(:meth:`Intake.__call__`: decode, then the same :meth:`~Intake.digest`), so
both ways make the same decisions by construction.

What goes back from a worker is only what the main process needs, cheap to
pickle: a :data:`Kept` tuple (integrationId, attributes, timestamp, dropped
names; a plain tuple: the fastest to unpickle) or a :class:`Skipped`
(reason, message). The main process keeps each
line's raw bytes; the original event is decoded again from them
(:class:`RawEvent`) only when it is needed: for a dead letter. Events that
carry an Engage audience membership (with ``engageAudiences`` memberships
or both) come back decoded, since every batch's memberships read them.

The in-process reader does the same: a batch holds each event's line, not
the decoded event, which is freed as soon as it is transformed, while it is
still in the processor's cache (in an alternating comparison a dry run took
about a tenth less CPU; the instructions it executes are the same), and a
batch in flight holds one bytes object per event instead of the dozens of
objects a decoded event is.
"""

from __future__ import annotations

from typing import Any

from talon_classic.compact.profiles import check as check_profile
from talon_classic.engage import ATTRIBUTES, membership_of
from talon_classic.exceptions import BadLine
from talon_classic.jsonio import loads, loads_quick
from talon_classic.merge import parse_timestamp
from talon_classic.schema import Schema
from talon_classic.transform import Engine, Result

#: A kept record: ``(integrationId without --id-prefix, attributes, timestamp (epoch
#: seconds or None), dropped (name, reason) pairs, the decoded event when the main process
#: needs it (a membership, or a compacted profile) else None)``.
Kept = tuple[str, dict[str, Any], "float | None", list[tuple[str, str]], Any]


class Skipped:
    """A skipped record: the reason code, the message in words, and whether the line was
    decoded (else it is not JSON, and its dead letter holds the line as text)."""

    __slots__ = ("reason", "error", "decoded")

    def __init__(self, reason: str, error: str | None, decoded: bool = True) -> None:
        self.reason = reason
        self.error = error
        self.decoded = decoded

    def __reduce__(self) -> tuple[Any, ...]:
        return Skipped, (self.reason, self.error, self.decoded)

    def __eq__(self, other: object) -> bool:
        if type(other) is not Skipped:
            return NotImplemented
        return (self.reason, self.error, self.decoded) == (other.reason, other.error,
                                                           other.decoded)

    def __hash__(self) -> int:
        return hash((self.reason, self.error, self.decoded))

    def __repr__(self) -> str:
        return f"Skipped({self.reason!r}, {self.error!r}, decoded={self.decoded})"


class RawEvent:
    """An input line kept undecoded in a batch's sources; :meth:`decode` gives the event
    (the dead letter's original event) as the in-process reader would have."""

    __slots__ = ("line", "inner")

    def __init__(self, line: bytes, inner: bool) -> None:
        self.line = line
        #: The line is a dead letter (``--replay-dead-letters``): its ``event`` is the event.
        self.inner = inner

    def decode(self) -> Any:
        """The event, decoded again from the line."""
        event = loads(self.line)
        if self.inner and isinstance(event, dict):
            event = event.get("event")
        return event


def reread(engine: Engine, line: bytes, unwrap: Any = None) -> Result:
    """What ``engine`` makes of the event on ``line`` read exactly (``unwrap`` applied, as
    to the event read first).

    For an event read by :func:`~talon_classic.jsonio.loads_quick` whose result says
    ``approximate``: it depends on a float that may stand for a long integer, so the
    line's exact reading decides. Every reader of events does::

        result = engine.transform(event)
        if result.approximate and line is not None:
            result = reread(engine, line)

    (inline, not a function around ``transform``: that call costs more than the
    check.) Only the result is read again: what a caller takes from the event
    itself (its ``timestamp``, a string) is the same either way.
    """
    event = loads(line)
    return engine.transform(event if unwrap is None else unwrap(event))


def original(event: Any) -> Any:
    """A source's event as the dead-letter file writes it (a :class:`RawEvent` decoded)."""
    return event.decode() if type(event) is RawEvent else event


class Intake:
    """The reading stage's rules: a decoded record -> :class:`Kept` or :class:`Skipped`.

    Picklable (the engine with its schema included): the worker pool sends a
    copy to every worker process once.
    """

    def __init__(self, engine: Engine, *, replay_dead_letters: bool = False,
                 profiles: bool = False) -> None:
        self.engine = engine
        self.replay_dead_letters = replay_dead_letters
        self.profiles = profiles
        #: Events with an Engage membership are needed whole by the main process.
        self.memberships = engine.engage_audiences != ATTRIBUTES
        self._reported: set[str] = set()

    def unwrap(self, event: Any) -> Any:
        """The event to transform: a dead letter's ``event`` with ``--replay-dead-letters``."""
        if self.replay_dead_letters and isinstance(event, dict):
            return event.get("event")
        return event

    @property
    def parse(self) -> Any:
        """How to read a line for :meth:`digest`: quickly (see
        :func:`~talon_classic.jsonio.loads_quick`) unless the decoded event itself is kept
        (a membership's; a compacted profile is checked, not transformed)."""
        return loads if self.memberships or self.profiles else loads_quick

    def digest(self, event: Any, line: bytes | None = None) -> Kept | Skipped:
        """What one decoded (and unwrapped) record becomes; ``line`` is the text it was read
        from with :attr:`parse` (read again when the engine needs it exactly)."""
        if self.profiles:
            problem, newest = check_profile(event)
            if problem is not None:
                return Skipped("invalid_profile", problem)
            # the record itself: its attributes' own timestamps go to the merger
            return (event["integrationId"], event["attributes"], newest, [], event)
        result = self.engine.transform(event)
        if result.approximate and line is not None:
            result = reread(self.engine, line, self.unwrap)
        if result.skipped is not None:
            return Skipped(result.skipped, result.error)
        assert result.integration_id is not None and result.attributes is not None  # kept
        return (result.integration_id, result.attributes,
                parse_timestamp(event.get("timestamp")), result.dropped, None)

    def __call__(self, lines: list[bytes]) -> tuple[list[Kept | Skipped], list[str]]:
        """A worker's job: each raw line decoded and digested, and the Engage attribute names
        met for the first time (the main process's engine learns them)."""
        out: list[Kept | Skipped] = []
        append, digest, unwrap, parse = out.append, self.digest, self.unwrap, self.parse
        memberships = self.memberships
        for line in lines:
            try:
                event = unwrap(parse(line))
            except BadLine as bad:
                append(Skipped(bad.reason, str(bad), decoded=False))
                continue
            outcome = digest(event, line)
            if memberships and type(outcome) is tuple and membership_of(event) is not None:
                outcome = (*outcome[:4], event)
            append(outcome)
        names = self.engine.engage_names
        new = []
        if len(names) > len(self._reported):
            new = sorted(names - self._reported)
            self._reported.update(new)
        return out, new

    def __getstate__(self) -> dict[str, Any]:
        """The engine as its recipe (allowlist, schema, engageAudiences): a compiled schema's
        coercers are closures, which do not pickle; the worker compiles its own."""
        engine = self.engine
        schema = engine.schema
        return {"allowlist": engine.allowlist, "engage_audiences": engine.engage_audiences,
                "schema": None if schema is None else (dict(schema.items()), schema.source),
                "replay_dead_letters": self.replay_dead_letters, "profiles": self.profiles}

    def __setstate__(self, state: dict[str, Any]) -> None:
        schema = None
        if state["schema"] is not None:
            types, source = state["schema"]
            schema = Schema(types, source=source)
        self.__init__(Engine(state["allowlist"], schema,  # type: ignore[misc]
                             engage_audiences=state["engage_audiences"]),
                      replay_dead_letters=state["replay_dead_letters"],
                      profiles=state["profiles"])


__all__ = ["Intake", "Kept", "RawEvent", "Skipped", "original"]
