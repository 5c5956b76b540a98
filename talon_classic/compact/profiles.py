"""Reading compacted profiles back (``identify --profiles``): records, checked.

``.jsonl`` and ``.jsonl.gz`` inputs go through :func:`talon_classic.reader.read_records`
(same bad-line handling as events; lines parsed by :func:`parse_line`); ``.parquet`` inputs (as ``compact -o
X.parquet`` writes them) are read with DuckDB, row by row, each row a
record numbered from 1. :func:`problem` says what is wrong with a record
that is not a compacted profile, in one line, so the pipeline can skip it
as ``invalid_profile``.

Most profiles have one ordering key for all their attributes (every value
came from the same event), and parsing that key once per attribute was most
of the cost of sending a compacted file. A line as ``compact`` writes it
(``"timestamps"`` last, its names those of ``"attributes"`` in the same
order, one key for all) is read by :func:`fast_line`: the line without its
``timestamps`` is parsed, and the ``timestamps`` text is compared, as
bytes, with what those names and that one key serialise to; the key is
parsed once and shared by every name. Anything else (several keys, other
names, other spacing, bad JSON) is parsed in full as before, so the record,
and every problem found in it, is the same either way.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from itertools import repeat
from operator import is_, itemgetter
from typing import IO, Any

from talon_classic.exceptions import BadLine, InputError, first_line
from talon_classic.jsonio import loads
from talon_classic.reader import DEFAULT_MAX_LINE_BYTES, STDIN, Record, read_records
from talon_classic.transform import MAX_ID_LENGTH, _is_text

_orjson: Any = None
try:  # the ``fast`` extra: without it every line is parsed in full
    import orjson

    if hasattr(orjson, "Fragment"):
        _orjson = orjson
except ImportError:  # pragma: no cover - exercised where orjson is not installed
    pass

PARQUET_MAGIC = b"PAR1"
#: Rows read from a Parquet input at a time.
PARQUET_ROWS = 10_000


def problem(data: Any) -> str | None:
    """Why ``data`` is not a compacted profile record, or None when it is one."""
    return check(data)[0]


def check(data: Any) -> tuple[str | None, float | None]:
    """``(why data is not a compacted profile or None, its newest timestamp or None)``.

    The pipeline calls this once per profile sent, so the common case (every
    key ``[float, int]``) takes one loop of exact type checks.
    """
    if type(data) is not dict:
        return "not a JSON object", None
    iid = data.get("integrationId")
    if type(iid) is not str or not iid or iid.isspace():
        return "integrationId is missing or not a non-empty string", None
    if len(iid) > MAX_ID_LENGTH:
        return f"integrationId is {len(iid)} characters long; at most {MAX_ID_LENGTH}", None
    if not _is_text(iid):
        return "integrationId holds a lone surrogate, so it is not text and cannot be sent", None
    attributes = data.get("attributes")
    if type(attributes) is not dict:
        return "attributes is missing or not an object", None
    stamps = data.get("timestamps")
    if type(stamps) is not dict:
        return "timestamps is missing or not an object", None
    values = stamps.values()
    first: Any = next(iter(values), None)
    newest = None
    if stamps and all(map(is_, values, repeat(first))):  # one key for every name (fast_line)
        if not _is_key(first):
            name = next(iter(stamps))
            return f"timestamps.{name} is not [timestamp or null, position]", None
        newest = first[0]
        if newest is not None and not _finite(newest):
            return _not_finite(next(iter(stamps))), None
    elif stamps:
        keys = list(values)
        # C-level passes over all keys (a Python loop per key costs more than the rest)
        times = list(map(_first, keys)) if _all_pairs(keys) else None
        if times is None or not set(map(type, times)) <= _TIME_TYPES:
            name = next(n for n, k in stamps.items() if not _is_key(k))
            return f"timestamps.{name} is not [timestamp or null, position]", None
        present = [t for t in times if t is not None]
        if not _all_finite(present):
            name = next(n for n, k in stamps.items() if k[0] is not None and not _finite(k[0]))
            return _not_finite(name), None
        newest = max(present) if present else None
    if not attributes.keys() <= stamps.keys():
        missing = next(n for n in attributes if n not in stamps)
        return f"timestamps has no key for attribute {missing!r}", None
    return None, newest


_first, _second = itemgetter(0), itemgetter(1)
_TIME_TYPES = frozenset({float, int, type(None)})


def _finite(ts: float) -> bool:
    """Is timestamp ``ts`` a finite number a float holds (the ledger's; NaN means none there)?"""
    try:
        return math.isfinite(ts)
    except OverflowError:  # an integer beyond any float
        return False


def _all_finite(times: list[float]) -> bool:
    try:
        return all(map(math.isfinite, times))
    except OverflowError:
        return False


def _not_finite(name: str) -> str:
    return f"timestamps.{name}: the timestamp is not a finite number (NaN, an infinity or too large)"


def _all_pairs(keys: list[Any]) -> bool:
    """Every key is a list of two whose second item is an int."""
    return (set(map(type, keys)) == {list} and set(map(len, keys)) == {2}
            and set(map(type, map(_second, keys))) == {int})


def _is_key(key: Any) -> bool:
    return (type(key) is list and len(key) == 2 and type(key[1]) is int
            and type(key[0]) in _TIME_TYPES)


def fast_line(line: bytes) -> dict[str, Any] | None:
    """The record on ``line`` when it has one ordering key for all its attributes and is
    written as ``compact`` writes it; None otherwise (then parse it with ``loads``).

    Equal to ``loads(line)``, except that every name of ``timestamps`` holds the
    same list object. Exact: the line is the text before ``,"timestamps":`` (an
    object, parsed by ``loads``), then a ``timestamps`` text equal byte for byte to
    the serialisation of ``{name: key for name in attributes}``, then ``}``;
    whatever fails on the way falls back to parsing the whole line.
    """
    cut = line.rfind(b',"timestamps":{')
    if _orjson is None or cut < 0 or line[-2:] != b"}}":
        return None
    try:
        data = loads(line[:cut] + b"}")
    except BadLine:
        return None
    if type(data) is not dict:
        return None
    attributes = data.get("attributes")
    if type(attributes) is not dict:
        return None
    stamps = shared_stamps(attributes, line[cut + 14:-1])
    if stamps is None:
        return None
    data["timestamps"] = stamps
    return data


def shared_stamps(attributes: dict[str, Any], text: bytes) -> dict[str, Any] | None:
    """``loads(text)`` when ``text`` is ``{name: key}`` for exactly the names of
    ``attributes``, in their order, one key for all (as ``compact`` writes it); the key is
    parsed once and shared. None otherwise (then parse ``text`` in full)."""
    if _orjson is None or not attributes:
        return None
    names = tuple(attributes)
    pieces = _PIECES.get(names)
    try:
        if pieces is None:
            if len(_PIECES) >= MAX_SHAPES:
                _PIECES.clear()
            # the text around the keys; NUL never appears raw in JSON text, so the split is exact
            pieces = _PIECES[names] = _orjson.dumps(
                dict.fromkeys(names, _orjson.Fragment(b"\0"))).split(b"\0")
        start = len(pieces[0])
        end = text.find(b"]", start) + 1
        key = text[start:end]
        if not end or text != key.join(pieces):
            return None
        return dict.fromkeys(attributes, loads(key))
    except (TypeError, ValueError):  # a name orjson cannot write; the key is not JSON
        return None


#: Shapes (tuples of names) whose text around the keys is cached; most files have few.
MAX_SHAPES = 4096
_PIECES: dict[tuple[str, ...], list[bytes]] = {}


def parse_line(line: bytes) -> Any:
    """One line of a compacted-profile input: :func:`fast_line`, else ``loads``."""
    return fast_line(line) or loads(line)


def newest(data: dict[str, Any]) -> float | None:
    """The newest timestamp among a profile's attributes (None when none has one)."""
    return check(data)[1]


def is_parquet(path: str) -> bool:
    """Does ``path`` hold Parquet (by its first bytes, whatever its name)?"""
    if path == STDIN:
        return False
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == PARQUET_MAGIC
    except OSError:
        return False


class ParquetInput:
    """What progress reporting needs of an input (name, size, bytes consumed)."""

    def __init__(self, path: str) -> None:
        self.path = self.name = path
        self.size = os.path.getsize(path)
        self.consumed = 0
        self.compressed = False


def read_profile_records(paths: Iterable[str], *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
                         stdin: IO[bytes] | None = None, on_open: Any = None,
                         start: dict[str, int] | None = None,
                         decode: bool = True) -> Iterator[Record]:
    """Records of compacted-profile inputs in order (JSONL, gzip or Parquet); ``decode``
    False leaves JSONL lines undecoded (Parquet rows are always decoded)."""
    for path in paths:
        if is_parquet(path):
            yield from _parquet_records(path, on_open)
        else:
            yield from read_records([path], max_line_bytes=max_line_bytes, stdin=stdin,
                                    on_open=on_open, start=start, decode=decode,
                                    parse=parse_line)


#: The columns a compacted-profile Parquet file holds, each JSON text (or the id).
PARQUET_COLUMNS = ("integrationId", "attributes", "timestamps")


def check_parquet_inputs(paths: Iterable[str]) -> None:
    """Refuse, before anything is sent, a Parquet input that cannot be a compacted-profile
    file: its footer unreadable (a truncated or damaged file), or one of
    :data:`PARQUET_COLUMNS` missing or not text. Raises :class:`InputError` (one line, naming
    the file); the rows themselves are read (and checked) while sending."""
    parquet = [path for path in paths if is_parquet(path)]
    if not parquet:
        return
    from talon_classic.compact.duckdb_engine import import_duckdb, interruptible

    duckdb = import_duckdb()
    con = duckdb.connect(":memory:")
    try:
        for path in parquet:
            try:
                with interruptible():
                    described = con.execute("DESCRIBE SELECT * FROM read_parquet(?)",
                                            [path]).fetchall()
            except duckdb.Error as exc:
                raise InputError(f"{path}: not a compacted-profile Parquet file "
                                 f"({first_line(exc, 200)})") from None
            types = {row[0]: row[1] for row in described}
            for column in PARQUET_COLUMNS:
                if types.get(column) != "VARCHAR":
                    what = (f"no column {column}" if column not in types else
                            f"column {column} is {types[column]}, not text")
                    raise InputError(f"{path}: not a compacted-profile Parquet file ({what})")
    finally:
        con.close()


def _parquet_records(path: str, on_open: Any) -> Iterator[Record]:
    from talon_classic.compact.duckdb_engine import import_duckdb, interruptible

    duckdb = import_duckdb()
    source = ParquetInput(path)
    if on_open is not None:
        on_open(source)
    con = duckdb.connect(":memory:")
    line = 0
    try:
        with interruptible():
            cursor = con.execute("SELECT integrationId, attributes, timestamps "
                                 "FROM read_parquet(?)", [path])
        while True:
            with interruptible():
                rows = cursor.fetchmany(PARQUET_ROWS)
            if not rows:
                break
            for iid, attributes, timestamps in rows:
                line += 1
                try:
                    values = loads(attributes) if attributes is not None else None
                    stamps = None if timestamps is None else (
                        type(values) is dict and shared_stamps(values, timestamps.encode())
                        or loads(timestamps))
                    event = {"integrationId": iid, "attributes": values, "timestamps": stamps}
                except ValueError as exc:
                    yield Record(path, line, skipped="invalid_profile",
                                 error=f"attributes or timestamps is not JSON ({exc})")
                    continue
                yield Record(path, line, event=event)
    except duckdb.Error as exc:
        raise InputError(f"{path}: not a compacted-profile Parquet file "
                         f"({first_line(exc, 200)})") from None
    finally:
        con.close()
