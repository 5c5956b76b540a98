"""Read and transform every input line in worker processes, keeping each line's position.

The main process only reads: it cuts the inputs into blocks of whole lines
(a few MiB, numbered in input order) and hands them to ``workers``
processes, the :class:`~talon_classic.workers.WorkerPool` that ``identify
--workers`` uses (Ctrl-C is the main process's alone, even while they start;
none outlives it, even after ``kill -9``; one that dies or fails ends the
run in one line). Each worker splits its blocks into lines, parses and
transforms them (:mod:`talon_classic.compact.lines`) and appends one row per
kept event to its own gzip file::

    {"c": block number, "p": index of the record in its block, "i": integrationId,
     "t": timestamp or null, "a": {attributes} or null}

A record is a non-blank line, kept or not. Its position among all the
run's records is the number of records of the blocks before its own plus
``p``; the workers do not need to know it, the reduction adds it
(:func:`block_bases`). Workers return a :class:`Tally` per block (counts
for the summary, the warnings of broken lines), handed on in block order.

Reading is the reader's own (:func:`talon_classic.reader.read_line_blocks`,
as ``identify`` reads): lines longer than ``max_line_bytes`` are skipped as
they stream past (never held whole), a ``.gz`` that ends early yields its
good lines and then one ``truncated_input``, stdin is read once.
"""

from __future__ import annotations

import os
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO

from talon_classic.compact.lines import INPUT_REASONS, Kept, is_blank, process_line
from talon_classic.exceptions import BadLine, CompactError, WorkerError
from talon_classic.jsonio import dumps_bytes
from talon_classic.reader import DEFAULT_MAX_LINE_BYTES, InputFile, read_line_blocks, whole_lines
from talon_classic.transform import Engine
from talon_classic.workers import WorkerPool

#: Bytes read at a time; a block is about this size (whole lines).
BLOCK_BYTES = 4 * 1024 * 1024
#: Blocks queued per worker: enough to keep them busy, few enough to bound memory.
QUEUED_PER_WORKER = 2


@dataclass(slots=True)
class Block:
    """Whole lines of one input: ``data`` starts at physical line ``first_line`` (1-based)."""

    seq: int
    input: str
    first_line: int
    data: bytes


@dataclass(slots=True)
class Tally:
    """What one block held, for the summary: records, kept, skips, drops, warnings."""

    seq: int
    records: int = 0
    kept: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    dropped: Counter[tuple[str, str]] = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)


def read_blocks(paths: Iterable[str], max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
                stdin: IO[bytes] | None = None,
                on_open: Callable[[InputFile], None] | None = None) -> Iterator[Block | Tally]:
    """Blocks of whole lines in input order, and a :class:`Tally` for each line broken while
    reading (over-long across blocks, a truncated ``.gz``), numbered in one sequence."""
    seq = 0
    for path in paths:
        source = InputFile(path, stdin=stdin)
        if on_open is not None:
            on_open(source)
        try:
            for first, data in read_line_blocks(source, whole_lines, max_line_bytes, BLOCK_BYTES):
                if isinstance(data, BadLine):
                    yield Tally(seq, records=1, skipped=Counter({data.reason: 1}),
                                warnings=[f"{source.name}:{first}: {data.reason}: {data}"])
                else:
                    yield Block(seq, source.name, first, data)
                seq += 1
        finally:
            source.close()


def transform_block(block: Block, engine: Engine, max_line_bytes: int) -> tuple[Tally, bytes]:
    """A block's :class:`Tally` and its rows (JSONL, one per kept event)."""
    tally = Tally(block.seq)
    rows = []
    skipped, dropped, warnings = tally.skipped, tally.dropped, tally.warnings
    lines = block.data.split(b"\n")
    if block.data.endswith(b"\n"):
        lines.pop()
    lineno = block.first_line - 1
    record = 0
    seq = block.seq
    for line in lines:
        lineno += 1
        if len(line) <= max_line_bytes and is_blank(line):
            continue
        outcome = process_line(line, lineno, engine, max_line_bytes)
        if type(outcome) is Kept:
            if outcome.dropped:
                dropped.update(outcome.dropped)
            rows.append(dumps_bytes({"c": seq, "p": record, "i": outcome.integration_id,
                                     "t": outcome.timestamp, "a": outcome.attributes or None}))
            tally.kept += 1
        else:
            reason = outcome.reason  # type: ignore[union-attr]
            skipped[reason] += 1
            if reason in INPUT_REASONS:
                warnings.append(f"{block.input}:{lineno}: {reason}: {outcome.error}")  # type: ignore[union-attr]
        record += 1
    tally.records = record
    if rows:
        rows.append(b"")
    return tally, b"\n".join(rows)


class RowFile:
    """A worker's rows file: one gzip member appended per block (DuckDB reads them as one)."""

    def __init__(self, path: str) -> None:
        self.path = path
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._fh = os.fdopen(fd, "ab")

    def write(self, rows: bytes) -> None:
        """Append one block's rows, compressed (level 1: fast, and small on disk), and flush
        them: a worker process ends without closing its file."""
        if rows:
            self._fh.write(zlib.compress(rows, 1, wbits=31))
            self._fh.flush()

    def close(self) -> None:
        """Flush and close."""
        self._fh.close()


class _Transform:
    """A worker's job: transform a block, append its rows to the worker's own file
    (``rows-{pid}.jsonl.gz`` under ``rows_dir``, opened with its first block), and give
    back its :class:`Tally`."""

    def __init__(self, engine: Engine, max_line_bytes: int, rows_dir: str) -> None:
        self.engine = engine
        self.max_line_bytes = max_line_bytes
        self.rows_dir = rows_dir
        self._out: RowFile | None = None

    def __call__(self, block: Block) -> Tally:
        if self._out is None:
            self._out = RowFile(os.path.join(self.rows_dir, f"rows-{os.getpid()}.jsonl.gz"))
        tally, rows = transform_block(block, self.engine, self.max_line_bytes)
        self._out.write(rows)
        return tally


def transform_inputs(paths: list[str], engine: Engine, rows_dir: str, *, workers: int = 1,
                     max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
                     stdin: IO[bytes] | None = None,
                     on_open: Callable[[InputFile], None] | None = None,
                     on_tally: Callable[[Tally], None] | None = None) -> list[int]:
    """Transform every input into row files under ``rows_dir``; return records per block.

    ``on_tally`` sees every :class:`Tally` in block order. With ``workers``
    1 everything runs in this process; otherwise in that many worker
    processes (spawned, so it is safe whatever threads this process has).
    """
    counts: list[int] = []

    def take(tally: Tally) -> None:
        counts.append(tally.records)
        if on_tally is not None:
            on_tally(tally)

    blocks = read_blocks(paths, max_line_bytes, stdin, on_open)
    if workers <= 1:
        out = RowFile(os.path.join(rows_dir, "rows-0.jsonl.gz"))
        try:
            for item in blocks:
                if isinstance(item, Tally):
                    take(item)
                    continue
                try:
                    tally, rows = transform_block(item, engine, max_line_bytes)
                    out.write(rows)
                except Exception as exc:  # a bug or a full disk: the run stops with one line
                    raise CompactError(f"{exc.__class__.__name__}: {exc}; nothing was "
                                       "written") from None
                take(tally)
        finally:
            out.close()
        return counts
    _run_workers(blocks, engine, rows_dir, workers, max_line_bytes, take)
    return counts


def _run_workers(blocks: Iterator[Block | Tally], engine: Engine, rows_dir: str, workers: int,
                 max_line_bytes: int, take: Callable[[Tally], None]) -> None:
    """Transform ``blocks`` in ``workers`` processes, ``take`` every tally in block order."""
    order = _InOrder(take)
    job = _Transform(engine, max_line_bytes, rows_dir)
    try:
        with WorkerPool(job, workers, depth=workers * QUEUED_PER_WORKER,
                        name="talon-compact") as pool:
            for item in blocks:
                if isinstance(item, Tally):  # a line broken while reading: no work in it
                    order.add(item)
                    continue
                if pool.in_flight >= pool.depth:
                    order.add(pool.take())
                pool.submit(item)
            while pool.in_flight:
                order.add(pool.take())
    except WorkerError as exc:  # killed (out of memory?), or a bug or a full disk in it
        raise CompactError(f"{exc}; nothing was written") from None
    order.finish()


class _InOrder:
    """Hands tallies on in block order, whatever order the workers finish in."""

    def __init__(self, take: Callable[[Tally], None]) -> None:
        self.take = take
        self.next = 0
        self.waiting: dict[int, Tally] = {}

    def add(self, tally: Tally) -> None:
        self.waiting[tally.seq] = tally
        while self.next in self.waiting:
            self.take(self.waiting.pop(self.next))
            self.next += 1

    def finish(self) -> None:
        if self.waiting:  # pragma: no cover - a lost block is a bug
            raise CompactError(f"block {self.next} was never transformed; nothing was written")
