"""Read member lists: the integrationIds an audience should hold, from CSV, JSONL or plain text.

``talon-classic audience sync`` takes any of these, ``.gz`` compressed or
not, from files or stdin (``-``):

* **CSV with a header**: the id is the column ``--id-column`` names, else
  the first of ``integration_id``, ``integrationId``, ``userId`` the header
  has (other columns are ignored). A header with none of them is an
  :class:`~talon_classic.exceptions.InputError`: guessing a column would
  fill an audience with emails or names.
* **JSONL**: one object a line, the id under ``--id-column`` or the first of
  those keys that is set; a string, or an integer (written in decimal).
* **Plain text**: one id a line.

Which one a file is: ``.csv``, ``.jsonl``/``.ndjson``/``.json`` and
``.txt`` say so (before ``.gz``); otherwise its first non-blank line does: an
object is JSONL, a line that parses as CSV into several fields, or into a
known column name, is a CSV header, anything else is plain text.

Ids are trimmed and prefixed (``id_prefix``); an empty one is a blank
(skipped, counted). Problems never stop a read: each is a
:class:`Member` with a reason code and a one-line message naming the file
and line (``id_too_long``: more than 1000 characters with the prefix;
``invalid_json``, ``not_an_object``, ``no_id``, ``not_text``,
``invalid_utf8``, ``invalid_csv``, ``line_too_long``, ``truncated_input``).
Memory is bounded by one line (at most :data:`MAX_LINE_BYTES`) whatever the
input holds.
"""

from __future__ import annotations

import csv
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import IO, NamedTuple

from talon_classic.exceptions import BadLine, InputError
from talon_classic.jsonio import loads
from talon_classic.reader import InputFile, read_lines

#: The columns (CSV) and keys (JSONL) an id is looked for in, in this order.
ID_COLUMNS = ("integration_id", "integrationId", "userId")
#: Longest integrationId Talon.One accepts.
MAX_ID_LENGTH = 1000
#: Longest line read; a longer one is ``line_too_long`` (an id is at most 4000 bytes).
MAX_LINE_BYTES = 1024 * 1024
FORMATS = ("csv", "jsonl", "text")
_EXTENSIONS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
               ".txt": "text"}
_SURROGATE = re.compile("[\ud800-\udfff]")


class Member(NamedTuple):
    """One entry of a member list: an ``integration_id``, or why there is none.

    ``source`` is the input's index among the paths read, ``line`` its line
    (1-based). ``reason`` is None for an id, ``"blank"`` for an empty one,
    else the problem's code, with ``message`` saying what is wrong.
    """

    source: int
    line: int
    integration_id: str | None
    reason: str | None = None
    message: str | None = None


def format_of(path: str, first_line: bytes, id_column: str | None = None) -> str:
    """``csv``, ``jsonl`` or ``text``: from the name's extension, else from the first line."""
    name = path.lower().removesuffix(".gz")
    for extension, kind in _EXTENSIONS.items():
        if name.endswith(extension):
            return kind
    head = first_line.lstrip()
    if head.startswith(b"{"):
        return "jsonl"
    try:
        fields = next(csv.reader([first_line.decode("utf-8")]), [])
    except (UnicodeDecodeError, csv.Error):
        return "text"
    names = {f.strip() for f in fields}
    if len(fields) > 1 or names & {*ID_COLUMNS, *([id_column] if id_column else [])}:
        return "csv"
    return "text"


class _Ids:
    """Turns raw values into :class:`Member` entries: trim, prefix, check."""

    def __init__(self, source: int, id_prefix: str) -> None:
        self.source = source
        self.prefix = id_prefix

    def of(self, line: int, value: str) -> Member:
        text = value.strip()
        if not text:
            return Member(self.source, line, None, "blank")
        if not text.isascii() and _SURROGATE.search(text):
            return Member(self.source, line, None, "invalid_utf8",
                          "the id is not valid UTF-8 (or holds a lone surrogate)")
        full = self.prefix + text
        if len(full) > MAX_ID_LENGTH:
            with_prefix = " with --id-prefix" if self.prefix else ""
            return Member(self.source, line, None, "id_too_long",
                          f"the id is {len(full):,} characters long{with_prefix}; Talon.One "
                          f"allows at most {MAX_ID_LENGTH}")
        return Member(self.source, line, full)

    def bad(self, line: int, reason: str, message: str) -> Member:
        return Member(self.source, line, None, reason, message)


def _text(lines: Iterator[tuple[int, bytes | BadLine]], ids: _Ids) -> Iterator[Member]:
    for lineno, data in lines:
        if isinstance(data, BadLine):
            yield ids.bad(lineno, data.reason, str(data))
            continue
        try:
            value = data.decode("utf-8")
        except UnicodeDecodeError:
            yield ids.bad(lineno, "invalid_utf8", "the line is not valid UTF-8")
            continue
        yield ids.of(lineno, value)


def _names(keys: tuple[str, ...]) -> str:
    """``a``, ``a or b``, ``a, b or c``."""
    return keys[0] if len(keys) == 1 else f"{', '.join(keys[:-1])} or {keys[-1]}"


def _jsonl(lines: Iterator[tuple[int, bytes | BadLine]], ids: _Ids,
           keys: tuple[str, ...]) -> Iterator[Member]:
    for lineno, data in lines:
        if isinstance(data, BadLine):
            yield ids.bad(lineno, data.reason, str(data))
            continue
        try:
            item = loads(data)
        except BadLine as bad:
            yield ids.bad(lineno, bad.reason, str(bad))
            continue
        if not isinstance(item, dict):
            yield ids.bad(lineno, "not_an_object", f"expected a JSON object with {_names(keys)}")
            continue
        key = next((k for k in keys if item.get(k) is not None), None)
        if key is None:
            yield ids.bad(lineno, "no_id", f"the object has no {_names(keys)}")
            continue
        value = item[key]
        if isinstance(value, int) and not isinstance(value, bool):
            if value.bit_length() > 3400:  # more than 1000 digits, and str() may refuse it
                yield ids.bad(lineno, "id_too_long", f"{key} is a number of more than "
                              f"{MAX_ID_LENGTH} digits; Talon.One allows at most {MAX_ID_LENGTH}")
                continue
            value = str(value)
        if not isinstance(value, str):
            yield ids.bad(lineno, "not_text", f"{key} is not a string or an integer")
            continue
        yield ids.of(lineno, value)


#: A quoted CSV field may span lines (an address with a line break); a record longer than
#: this many lines is taken as an unclosed quote, which would swallow the rest of the file.
MAX_RECORD_LINES = 100


class _Unclosed(Exception):
    """A CSV record ran past :data:`MAX_RECORD_LINES` lines."""


def _one_line(text: str) -> str:
    """``text`` with each character that is not printable (a newline, a tab) as its
    Python escape (``\\n``), so a message quoting it stays one line."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def _csv(lines: Iterator[tuple[int, bytes | BadLine]], ids: _Ids, name: str,
         id_column: str | None) -> Iterator[Member]:
    """Rows of a CSV list. A row that cannot be read (a stray or unclosed quote, a field
    past the csv module's size limit) is ``invalid_csv`` at the line it starts on, and
    reading goes on at the line after: an unclosed quote never takes the rest with it."""
    problems: list[Member] = []
    source = iter(lines)
    replay: deque[tuple[int, str]] = deque()  # lines a failed record read past: read again
    record: list[tuple[int, str]] = []  # the physical lines of the record being read

    def text_lines() -> Iterator[str]:
        while True:
            if replay:
                lineno, text = replay.popleft()
            else:
                item = next(source, None)
                if item is None:
                    return
                lineno, data = item
                if isinstance(data, BadLine):
                    problems.append(ids.bad(lineno, data.reason, str(data)))
                    continue
                text = data.decode("utf-8", "surrogateescape") + "\n"
            if len(record) >= MAX_RECORD_LINES:
                replay.appendleft((lineno, text))
                raise _Unclosed
            record.append((lineno, text))
            yield text

    def failed() -> int:
        """Forget the record that failed (its first line); its other lines are read again."""
        first = record[0][0] if record else 0
        replay.extendleft(reversed([*record[1:]]))
        record.clear()
        return first

    rows = csv.reader(text_lines(), strict=True)
    try:
        header = [cell.strip() for cell in next(rows)]
    except StopIteration:
        return
    except (csv.Error, _Unclosed) as exc:
        why = exc if isinstance(exc, csv.Error) else _unclosed()
        raise InputError(f"{name}:{failed()}: the CSV header cannot be read ({why})") from None
    wanted = (id_column,) if id_column else ID_COLUMNS
    column = next((header.index(c) for c in wanted if c in header), None)
    if column is None:
        # one line whatever the header holds: a quoted cell may hold a newline
        shown = _one_line(", ".join(header[:10])[:200])
        raise InputError(
            f"{name}: the CSV header ({shown}) has no "
            + (f"column {id_column!r}" if id_column else
               "integration_id, integrationId or userId column")
            + ": name the id column with --id-column")
    yield from problems
    problems.clear()
    while True:
        record.clear()
        try:
            row = next(rows)
        except StopIteration:
            break
        except (csv.Error, _Unclosed) as exc:
            why = (_unclosed(at_end=True) if "unexpected end of data" in str(exc) else
                   f"not a CSV row ({exc})") if isinstance(exc, csv.Error) else _unclosed()
            yield from problems
            problems.clear()
            yield ids.bad(failed(), "invalid_csv", why)
            rows = csv.reader(text_lines(), strict=True)  # afresh, from the next line
            continue
        yield from problems
        problems.clear()
        current = record[0][0] if record else 0
        if not row or row == [""]:
            continue
        if column >= len(row):
            yield ids.bad(current, "no_id", f"the row has {len(row)} field"
                          f"{'s' if len(row) != 1 else ''}; the id is field {column + 1} "
                          f"({_one_line(header[column])})")
            continue
        yield ids.of(current, row[column])
    yield from problems


def _unclosed(at_end: bool = False) -> str:
    where = "before the end of the input" if at_end else f"within {MAX_RECORD_LINES} lines"
    return f"a quoted field is not closed {where}; read on from the next line"


def read_members(paths: Iterable[str], *, id_column: str | None = None, id_prefix: str = "",
                 stdin: IO[bytes] | None = None,
                 on_open: Callable[[InputFile], None] | None = None) -> Iterator[Member]:
    """Every entry of every member list, in order (see the module's docstring).

    ``on_open(InputFile)`` is called as each input opens (for progress).
    Raises :class:`~talon_classic.exceptions.InputError` for an input that
    cannot be opened, or a CSV header without the id column.
    """
    keys = (id_column,) if id_column else ID_COLUMNS
    for index, path in enumerate(paths):
        source = InputFile(path, stdin=stdin)
        if on_open is not None:
            on_open(source)
        try:
            lines = read_lines(source, MAX_LINE_BYTES)
            first = next(lines, None)
            if first is None:
                continue
            head = first[1] if isinstance(first[1], bytes) else b""
            kind = format_of(path, head, id_column)
            ids = _Ids(index, id_prefix)
            again = _chain(first, lines)
            if kind == "csv":
                yield from _csv(again, ids, source.name, id_column)
            elif kind == "jsonl":
                yield from _jsonl(again, ids, keys)
            else:
                yield from _text(again, ids)
        finally:
            source.close()


def _chain(first: tuple[int, bytes | BadLine],
           rest: Iterator[tuple[int, bytes | BadLine]]) -> Iterator[tuple[int, bytes | BadLine]]:
    yield first
    yield from rest
