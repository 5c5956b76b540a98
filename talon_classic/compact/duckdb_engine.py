"""The reduction and the grouping in DuckDB: out of core, under a memory limit.

The workers' row files (:mod:`talon_classic.compact.events`) are read with
``read_json``, each event's attributes are spread into one row per
attribute (``json_each``), the newest-wins reduction of
:mod:`talon_classic.compact.reduce` picks each attribute's value, and the
attributes are grouped into one profile per integrationId, in order.
DuckDB spills to its temporary directory whatever does not fit under
``memory_limit``, so an input larger than memory works.

How rows reach DuckDB was measured (200,000 benchmark events, 2.2 million
attribute rows, one core): one JSON object per event costs the workers
1.7 us per event against 8 us for one row per attribute built in Python,
so attributes are spread by DuckDB. Written as gzip'd JSONL the rows take
0.58 s in the workers and 1.36 s to read (4 MB on disk); as Parquet through
pyarrow 0.66-0.80 s and 0.86 s (4 MB); as plain JSONL 0.46-0.62 s and 0.90 s
(60 MB). Parquet was about 0.3 s per 200,000 events faster in all, but
needs pyarrow (a 40 MB dependency); gzip'd JSONL keeps the spill small
without it.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from typing import Any

from talon_classic.compact.reduce import WINNERS_SQL, block_bases
from talon_classic.exceptions import CompactError, MissingDependency, first_line
from talon_classic.jsonio import loads

#: Profiles fetched from DuckDB at a time.
FETCH_ROWS = 10_000

PROFILES_SQL = """
WITH ev AS (
    SELECT r.i AS iid, r.t AS ts, b.base + r.p AS pos, r.a AS a
    FROM read_json({rows}, format = 'newline_delimited', compression = 'gzip',
                   maximum_object_size = {max_object},
                   columns = {{c: 'BIGINT', p: 'BIGINT', i: 'VARCHAR', t: 'DOUBLE', a: 'JSON'}}) r
    JOIN bases b ON b.c = r.c
),
kv AS (
    SELECT ev.iid, j.key AS attr, j.value::VARCHAR AS val, ev.ts, ev.pos
    FROM ev LEFT JOIN LATERAL json_each(ev.a) j ON true
),
win AS ({winners})
SELECT iid,
       '{{' || coalesce(string_agg(to_json(attr) || ':' || val, ',')
                        FILTER (WHERE attr IS NOT NULL), '') || '}}' AS attributes,
       '{{' || coalesce(string_agg(to_json(attr) || ':' || json_array(m, pos)::VARCHAR, ',')
                        FILTER (WHERE attr IS NOT NULL), '') || '}}' AS timestamps
FROM win
GROUP BY iid
ORDER BY iid
"""


def connect(memory_limit: str | None, temp_dir: str, threads: int | None = None) -> Any:
    """A DuckDB connection that spills to ``temp_dir`` past ``memory_limit`` (e.g. ``"500MB"``)."""
    duckdb = import_duckdb()
    con = duckdb.connect(":memory:")
    try:
        if memory_limit:
            con.execute(f"SET memory_limit = '{memory_size(memory_limit)}'")
        con.execute(f"SET temp_directory = '{quote(temp_dir)}'")
        con.execute("SET preserve_insertion_order = false")
        if threads:
            con.execute(f"SET threads = {int(threads)}")
    except duckdb.Error as exc:
        con.close()
        raise CompactError(f"DuckDB: {first_line(exc)}") from None
    return con


def profiles(con: Any, rows_dir: str, records_per_block: list[int], max_line_bytes: int
             ) -> Iterator[tuple[str, dict[str, Any], dict[str, list[Any]]]]:
    """``(integrationId, attributes, timestamps)`` per profile, sorted by integrationId."""
    duckdb = import_duckdb()
    files = sorted(os.path.join(rows_dir, f) for f in os.listdir(rows_dir)
                   if f.startswith("rows-") and os.path.getsize(os.path.join(rows_dir, f)))
    if not files:
        return
    bases_csv = os.path.join(rows_dir, "bases.csv")
    try:
        with open(bases_csv, "w") as fh:
            fh.write("c,base\n")
            fh.writelines(f"{n},{b}\n" for n, b in enumerate(block_bases(records_per_block)))
    except OSError as exc:
        raise CompactError(f"{rows_dir}: cannot write: {exc.strerror or exc}; nothing was "
                           "written (give --temp-dir DIR, or TMPDIR, on a disk with room)"
                           ) from None
    sql = PROFILES_SQL.format(
        rows="[" + ", ".join(f"'{quote(f)}'" for f in files) + "]",
        max_object=max(16 * 1024 * 1024, 2 * max_line_bytes + 1024 * 1024),
        winners=WINNERS_SQL.format(rows="kv"),
    )
    try:
        with interruptible():
            con.execute(f"CREATE TEMP TABLE bases AS SELECT * FROM read_csv("
                        f"'{quote(bases_csv)}', header = true, "
                        "columns = {'c': 'BIGINT', 'base': 'BIGINT'})")
            cursor = con.execute(sql)
        while True:
            with interruptible():
                rows = cursor.fetchmany(FETCH_ROWS)
            if not rows:
                break
            for iid, attributes, timestamps in rows:
                yield iid, loads(attributes), loads(timestamps)
    except duckdb.Error as exc:
        raise CompactError(f"DuckDB: {first_line(exc)}; nothing was written "
                           "(out of memory or disk? try --memory-limit, or TMPDIR on a larger "
                           "disk)") from None


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Ctrl-C during a DuckDB call as KeyboardInterrupt. DuckDB notices the signal itself,
    takes Python's pending KeyboardInterrupt and raises ``RuntimeError("Query
    interrupted")`` (or its InterruptException) instead, which would reach the user as
    a traceback."""
    duckdb = import_duckdb()
    try:
        yield
    except duckdb.InterruptException:
        raise KeyboardInterrupt from None
    except RuntimeError as exc:
        if str(exc) != "Query interrupted":
            raise
        raise KeyboardInterrupt from None


def import_duckdb() -> Any:
    """The duckdb module, or one line saying how to install it."""
    try:
        import duckdb
    except ImportError:
        raise MissingDependency("the local compaction engine needs duckdb: "
                                "pip install 'duckdb>=1.1'") from None
    return duckdb


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*((?:[KMGT]i?)?B)?", re.IGNORECASE)


def memory_size(limit: str) -> str:
    """``"500MB"``, ``"4 GiB"``, ``"2gb"``... as DuckDB takes it; CompactError otherwise."""
    found = _SIZE.fullmatch(limit.strip())
    if found is None:
        raise CompactError(f"memory limit {limit!r} is not a size like 500MB or 4GB")
    number, unit = found.groups()
    unit = (unit or "B").upper().replace("IB", "iB")
    return f"{number}{unit}"



def quote(text: str) -> str:
    """``text`` as the inside of an SQL string literal (a ``'`` doubled)."""
    return text.replace("'", "''")



