"""One input line -> what compaction keeps of it: the rules both engines share.

The DuckDB engine's worker processes and the Spark engine's executors call
the same functions here, so the two read, skip and transform every line the
same way as ``talon-classic identify`` does (:mod:`talon_classic.reader`,
:class:`~talon_classic.transform.Engine`):

* a line longer than ``max_line_bytes`` is ``line_too_long``; a blank
  (whitespace-only) line is no record at all; a UTF-8 byte order mark on a
  file's first line is ignored;
* a line that is not JSON (or not UTF-8) is ``invalid_json``, with the
  reader's message;
* the engine's skip reasons and dropped attributes, as in ``identify``;
* the ``timestamp`` is read with :func:`talon_classic.bulk.parse_timestamp`.

A value that the JSON encoder cannot write (the engine normally drops those
first) is dropped as ``unsupported_value`` here, so one odd value never stops
a compaction.
"""

from __future__ import annotations

from typing import Any

from talon_classic.exceptions import BadLine
from talon_classic.intake import reread
from talon_classic.jsonio import dumps_bytes, loads_quick
from talon_classic.merge import parse_timestamp
from talon_classic.transform import Engine

BOM = b"\xef\xbb\xbf"
#: Reasons of broken lines: each is reported with its ``file:line`` (as identify does).
INPUT_REASONS = frozenset({"invalid_json", "line_too_long", "truncated_input"})
_ENCODE_ERRORS = (TypeError, ValueError, OverflowError, UnicodeError, RecursionError)


def is_blank(line: bytes) -> bool:
    """No record: an empty or whitespace-only line."""
    return not line or line.isspace()


def too_long(size: int, max_line_bytes: int) -> str:
    """The reader's message for an over-long line."""
    return f"line is longer than {max_line_bytes} bytes ({size} bytes)"


class Kept:
    """A kept event: its integrationId, timestamp (epoch seconds or None), attributes, drops."""

    __slots__ = ("integration_id", "timestamp", "attributes", "dropped")

    def __init__(self, integration_id: str, timestamp: float | None,
                 attributes: dict[str, Any], dropped: list[tuple[str, str]]) -> None:
        self.integration_id = integration_id
        self.timestamp = timestamp
        self.attributes = attributes
        self.dropped = dropped


class Skipped:
    """A skipped line: the reason code and the message in words."""

    __slots__ = ("reason", "error")

    def __init__(self, reason: str, error: str) -> None:
        self.reason = reason
        self.error = error


def process_line(line: bytes, lineno: int, engine: Engine, max_line_bytes: int) -> Kept | Skipped:
    """What one non-blank line (without its newline) becomes."""
    if len(line) > max_line_bytes:
        return Skipped("line_too_long", too_long(len(line), max_line_bytes))
    if lineno == 1 and line.startswith(BOM):
        line = line[3:]
    try:
        event = loads_quick(line)
    except BadLine as bad:
        return Skipped(bad.reason, str(bad))
    result = engine.transform(event)
    if result.approximate:
        result = reread(engine, line)
    if result.skipped is not None:
        return Skipped(result.skipped, result.error or result.skipped)
    iid = result.integration_id or ""
    if not _is_text(iid):
        return Skipped("invalid_user_id", "userId holds a lone surrogate, so it is not text")
    dropped = result.dropped
    attributes = sendable(result.attributes or {}, dropped)
    return Kept(iid, parse_timestamp(event.get("timestamp")), attributes, dropped)


def sendable(attributes: dict[str, Any], dropped: list[tuple[str, str]]) -> dict[str, Any]:
    """``attributes`` without what the JSON encoder cannot write (dropped as unsupported_value)."""
    if not attributes:
        return attributes
    try:
        dumps_bytes(attributes)
        return attributes
    except _ENCODE_ERRORS:
        pass
    kept = {}
    for name, value in attributes.items():
        try:
            dumps_bytes({name: value})
        except _ENCODE_ERRORS:
            dropped.append((name.encode("utf-8", "backslashreplace").decode("utf-8"),
                            "unsupported_value"))
            continue
        kept[name] = value
    return kept


def _is_text(value: str) -> bool:
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
