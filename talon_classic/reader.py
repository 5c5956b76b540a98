"""Read JSONL input: files, gzip files and stdin, one record per line.

Bad input never stops a read. Each problem becomes a :class:`Record` with a
reason code and a one-line message that names the file and line:

* ``invalid_json``: not JSON, or not UTF-8;
* ``line_too_long``: longer than ``max_line_bytes`` (the rest of the line is
  skipped without holding it in memory);
* ``truncated_input``: a ``.gz`` that ends early or is corrupt; the reader
  reports it once and goes on with the next input.

Blank lines produce nothing. Lines are parsed by :func:`talon_classic.jsonio.loads`
(the same result with or without orjson): integers of any size, lone
surrogates and NaN are read as written; a line nested more than
:data:`~talon_classic.jsonio.MAX_NESTING` levels deep is ``invalid_json``
("nested too deeply").
"""

from __future__ import annotations

import gzip
import io
import os
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from operator import itemgetter
from typing import IO, Any, TypeVar

from talon_classic.exceptions import InputError

# dumps and dumps_bytes are re-exported for the CLI, which imports them from here;
# new code imports them from talon_classic.jsonio.
from talon_classic.jsonio import BadLine, loads

DEFAULT_MAX_LINE_BYTES = 8 * 1024 * 1024
GZIP_MAGIC = b"\x1f\x8b"
STDIN = "-"
T = TypeVar("T")


@dataclass(slots=True)
class Record:
    """One non-blank input line: a decoded ``event`` or a ``skipped`` reason.

    ``raw`` is the line's bytes (without a byte order mark), for every line
    that was read whole: a batch keeps it instead of the decoded event.
    """

    input: str
    line: int
    event: Any = None
    skipped: str | None = None
    error: str | None = None
    raw: bytes | None = None

    @property
    def where(self) -> str:
        """``file:line``, the way every message names a position."""
        return f"{self.input}:{self.line}"


def display_name(path: str) -> str:
    """How an input is named in messages and output."""
    return "<stdin>" if path == STDIN else path


class InputFile:
    """One input opened for streaming, with byte counts for progress."""

    def __init__(self, path: str, stdin: IO[bytes] | None = None) -> None:
        self.path = path
        self.name = display_name(path)
        if path == STDIN:
            raw: IO[bytes] = stdin if stdin is not None else sys.stdin.buffer
            self.size = None
        else:
            try:
                raw = open(path, "rb")  # noqa: SIM115 - closed in close()
                self.size = os.fstat(raw.fileno()).st_size
            except OSError as exc:
                raise InputError(f"{path}: cannot open: {exc.strerror or exc}") from None
        self._raw = raw
        buffered: Any = raw if hasattr(raw, "peek") else io.BufferedReader(raw)
        head = buffered.peek(2)[:2]
        self.compressed = head == GZIP_MAGIC
        self.stream: IO[bytes] = (gzip.GzipFile(fileobj=buffered)  # type: ignore[assignment]
                                  if self.compressed else buffered)

    @property
    def consumed(self) -> int:
        """Bytes of the file (compressed bytes for .gz) read so far."""
        try:
            return self._raw.tell()
        except (OSError, ValueError):
            return 0

    def close(self) -> None:
        """Close the file (never stdin)."""
        if self.path != STDIN:
            self._raw.close()


CHUNK_BYTES = 1024 * 1024


def _too_long(size: int, max_line_bytes: int) -> BadLine:
    return BadLine("line_too_long", f"line is longer than {max_line_bytes} bytes ({size} bytes)")


#: How :func:`read_line_blocks` cuts what it has read: ``cut(buffer, final)`` is the
#: block of whole lines, how many lines it holds, and the partial line left over
#: (``final``: the buffer is the input's last line, without its newline).
Cut = Callable[[bytes, bool], tuple[T, int, bytes]]


#: A line without its last byte (its newline), at C speed.
_WITHOUT_NEWLINE = itemgetter(slice(None, -1))


def split_lines(buffer: bytes, final: bool) -> tuple[list[bytes], int, bytes]:
    """A :data:`Cut` into the list of whole lines, without their newlines.

    ``BytesIO.readlines`` finds the newlines with ``memchr``; ``bytes.split``
    compares byte by byte, which cost twice as much per line.
    """
    if final:
        lines = buffer.split(b"\n")
        return lines, len(lines), b""
    lines = io.BytesIO(buffer).readlines()
    rest = lines.pop() if lines and not lines[-1].endswith(b"\n") else b""
    lines = list(map(_WITHOUT_NEWLINE, lines))
    return lines, len(lines), rest


def whole_lines(buffer: bytes, final: bool) -> tuple[bytes, int, bytes]:
    """A :data:`Cut` into bytes of whole lines, each ending with its newline but the input's last."""
    if final:
        return buffer, 1, b""
    end = buffer.rfind(b"\n") + 1
    block = buffer[:end]
    return block, block.count(b"\n"), buffer[end:]


def read_line_blocks(
    source: InputFile, cut: Cut[T], max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    chunk_bytes: int = CHUNK_BYTES,
) -> Iterator[tuple[int, T | BadLine]]:
    """Yield ``(number of its first line, block of whole lines)``, or ``(line, BadLine)``.

    The input is read ``chunk_bytes`` at a time and ``cut`` makes the block
    (:func:`split_lines`, :func:`whole_lines`). A line longer than
    ``max_line_bytes`` that runs past what was read is skipped as it
    streams past (never held whole, so memory is bounded by
    ``max_line_bytes`` plus one chunk) and comes as a ``line_too_long``
    BadLine; a shorter over-long line stays in its block, for the caller to
    measure. A ``.gz`` that ends early or is corrupt ends the input with one
    ``truncated_input``, after every good line before it. :func:`read_lines`
    and the compaction (:mod:`talon_classic.compact.events`) read through this.
    """
    # read1: whatever is decoded so far, so a truncated .gz still yields its good lines
    read = getattr(source.stream, "read1", source.stream.read)
    lineno = 0
    pending = b""
    skipping = -1  # bytes of an over-long line seen so far, or -1
    try:
        while True:
            chunk = read(chunk_bytes)
            if not chunk:
                break
            if skipping >= 0:
                end = chunk.find(b"\n")
                if end < 0:
                    skipping += len(chunk)
                    continue
                lineno += 1
                yield lineno, _too_long(skipping + end, max_line_bytes)
                skipping = -1
                chunk = chunk[end + 1:]
            block, count, pending = cut(pending + chunk if pending else chunk, False)
            if count:
                yield lineno + 1, block
                lineno += count
            if len(pending) > max_line_bytes:
                skipping, pending = len(pending), b""
        if skipping >= 0:
            yield lineno + 1, _too_long(skipping, max_line_bytes)
        elif pending:
            yield lineno + 1, cut(pending, True)[0]
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
        detail = str(exc) or exc.__class__.__name__
        yield lineno + 1, BadLine(
            "truncated_input", f"input ends early or is corrupt ({detail}); rest of file skipped"
        )


def read_lines(
    source: InputFile, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES, start_line: int = 0
) -> Iterator[tuple[int, bytes | BadLine]]:
    """Yield ``(line number, bytes without the newline)`` for non-blank lines, or a BadLine.

    Reads 1 MiB at a time (:func:`read_line_blocks`) and splits in C (much
    faster than ``readline``). Lines up to ``start_line`` are read but not
    yielded (resume); a ``truncated_input`` always is. Memory is bounded by
    ``max_line_bytes`` plus one chunk whatever the input holds: an over-long
    line is skipped as it streams past, never held whole.
    """
    for first, lines in read_line_blocks(source, split_lines, max_line_bytes, CHUNK_BYTES):
        if isinstance(lines, BadLine):
            if first > start_line or lines.reason == "truncated_input":
                yield first, lines
            continue
        lineno = first - 1
        for line in lines:
            lineno += 1
            if lineno <= start_line:
                continue
            if len(line) > max_line_bytes:
                yield lineno, _too_long(len(line), max_line_bytes)
            elif line and not line.isspace():
                if lineno == 1 and line.startswith(b"\xef\xbb\xbf"):
                    line = line[3:]
                yield lineno, line


def read_records(
    paths: Iterable[str],
    *,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    stdin: IO[bytes] | None = None,
    on_open: Any = None,
    start: dict[str, int] | None = None,
    decode: bool = True,
    parse: Callable[[bytes], Any] = loads,
) -> Iterator[Record]:
    """Stream :class:`Record` objects from every input in order.

    ``on_open(InputFile)`` is called as each input opens (for progress);
    ``start`` maps an input path to the number of lines already done;
    ``parse`` reads one line (it raises :class:`~talon_classic.jsonio.BadLine`
    as :func:`~talon_classic.jsonio.loads` does).
    ``decode`` False: a line's record holds its bytes (``raw``) undecoded,
    for a worker process to decode (``identify --workers``).
    """
    for path in paths:
        source = InputFile(path, stdin=stdin)
        if on_open is not None:
            on_open(source)
        try:
            done = (start or {}).get(path, 0)
            for lineno, data in read_lines(source, max_line_bytes, done):
                if isinstance(data, BadLine):
                    yield Record(source.name, lineno, skipped=data.reason, error=str(data))
                    continue
                if not decode:
                    yield Record(source.name, lineno, raw=data)
                    continue
                try:
                    event = parse(data)
                except BadLine as bad:
                    yield Record(
                        source.name, lineno, skipped=bad.reason, error=str(bad), raw=data
                    )
                    continue
                yield Record(source.name, lineno, event=event, raw=data)
        finally:
            source.close()
