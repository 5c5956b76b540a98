"""Reading compacted profiles back (``identify --profiles``): records, checked.

``.jsonl`` and ``.jsonl.gz`` inputs go through :func:`talon_classic.reader.read_records`
(same bad-line handling as events); ``.parquet`` inputs (as ``compact -o
X.parquet`` writes them) are read with DuckDB, row by row, each row a
record numbered from 1. :func:`problem` says what is wrong with a record
that is not a compacted profile, in one line, so the pipeline can skip it
as ``invalid_profile``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import IO, Any

from talon_classic.exceptions import InputError
from talon_classic.jsonio import loads
from talon_classic.reader import DEFAULT_MAX_LINE_BYTES, STDIN, Record, read_records
from talon_classic.transform import MAX_ID_LENGTH

PARQUET_MAGIC = b"PAR1"
#: Rows read from a Parquet input at a time.
PARQUET_ROWS = 10_000


def problem(data: Any) -> str | None:
    """Why ``data`` is not a compacted profile record, or None when it is one."""
    if not isinstance(data, dict):
        return "not a JSON object"
    iid = data.get("integrationId")
    if not isinstance(iid, str) or not iid.strip():
        return "integrationId is missing or not a non-empty string"
    if len(iid) > MAX_ID_LENGTH:
        return f"integrationId is {len(iid)} characters long; at most {MAX_ID_LENGTH}"
    attributes = data.get("attributes")
    if not isinstance(attributes, dict):
        return "attributes is missing or not an object"
    stamps = data.get("timestamps")
    if not isinstance(stamps, dict):
        return "timestamps is missing or not an object"
    for name, key in stamps.items():
        if (not isinstance(key, list) or len(key) != 2
                or not (key[0] is None or (isinstance(key[0], (int, float))
                                           and not isinstance(key[0], bool)))
                or type(key[1]) is not int):
            return f"timestamps.{name} is not [timestamp or null, position]"
    missing = [name for name in attributes if name not in stamps]
    if missing:
        return f"timestamps has no key for attribute {missing[0]!r}"
    return None


def newest(data: dict[str, Any]) -> float | None:
    """The newest timestamp among a profile's attributes (None when none has one)."""
    times = [key[0] for key in data["timestamps"].values() if key[0] is not None]
    return max(times) if times else None


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
                         start: dict[str, int] | None = None) -> Iterator[Record]:
    """Records of compacted-profile inputs in order (JSONL, gzip or Parquet)."""
    for path in paths:
        if is_parquet(path):
            yield from _parquet_records(path, on_open)
        else:
            yield from read_records([path], max_line_bytes=max_line_bytes, stdin=stdin,
                                    on_open=on_open, start=start)


def _parquet_records(path: str, on_open: Any) -> Iterator[Record]:
    from talon_classic.compact.duckdb_engine import import_duckdb

    duckdb = import_duckdb()
    source = ParquetInput(path)
    if on_open is not None:
        on_open(source)
    con = duckdb.connect(":memory:")
    line = 0
    try:
        cursor = con.execute("SELECT integrationId, attributes, timestamps FROM read_parquet(?)",
                             [path])
        while True:
            rows = cursor.fetchmany(PARQUET_ROWS)
            if not rows:
                break
            for iid, attributes, timestamps in rows:
                line += 1
                try:
                    event = {"integrationId": iid,
                             "attributes": loads(attributes) if attributes is not None else None,
                             "timestamps": loads(timestamps) if timestamps is not None else None}
                except ValueError as exc:
                    yield Record(path, line, skipped="invalid_profile",
                                 error=f"attributes or timestamps is not JSON ({exc})")
                    continue
                yield Record(path, line, event=event)
    except duckdb.Error as exc:
        raise InputError(f"{path}: not a compacted-profile Parquet file "
                         f"({str(exc).splitlines()[0][:200]})") from None
    finally:
        con.close()
