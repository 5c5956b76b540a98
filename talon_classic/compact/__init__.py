"""Compaction: every event of each user merged first, exactly, so each profile is sent once.

A backfill (months of Segment identify history) sent by the streaming
``identify`` writes a returning user again in every batch it appears in, and
merges events further apart than its ordering window in file order.
:func:`compact` instead merges every event of each integrationId with the
streaming merge's own rule (:mod:`talon_classic.compact.reduce`), as if it
could hold every profile at once, and writes one record per integrationId,
sorted by it (:mod:`talon_classic.compact.output`), which ``identify
--profiles`` sends as it is.

Two engines, identical output for the same input:

* ``"duckdb"`` (default, embedded): lines are parsed and transformed in
  ``workers`` processes (:mod:`~talon_classic.compact.events`), the
  reduction runs in DuckDB under ``memory_limit``, spilling to disk
  (:mod:`~talon_classic.compact.duckdb_engine`);
* ``"spark"``: the same job on Spark (:mod:`talon_classic.spark`), for what
  outgrows one machine.

The events are transformed by ``transformer`` (an
:class:`~talon_classic.transform.Engine`, by default one built from the
settings' allowlist), pickled to each worker or executor, so an engine with
more rules (a schema) can be passed in.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from typing import IO, Any

from talon_classic.exceptions import CompactError
from talon_classic.reader import DEFAULT_MAX_LINE_BYTES
from talon_classic.summary import Summary
from talon_classic.transform import Engine

ENGINES = ("duckdb", "spark")
#: The default DuckDB memory limit, as a fraction of this machine's memory.
MEMORY_FRACTION = 0.5

__all__ = ["ENGINES", "CompactSummary", "compact", "default_memory_limit"]


class CompactSummary(Summary):
    """What a compaction read and wrote: the input counts of ``identify``, and the output."""

    def __init__(self, output: str = "", engine: str = "duckdb") -> None:
        super().__init__()
        self.output = output
        self.engine = engine
        self.profiles_written = 0
        self.workers = 1
        #: The input being read (for a progress line), when known.
        self.current_input: Any = None

    def as_dict(self) -> dict[str, Any]:
        """The stable ``compact --json`` shape."""
        full = super().as_dict()
        keep = ("events_read", "kept", "skipped", "dropped")
        return {
            **{k: full[k] for k in keep},
            "profiles_written": self.profiles_written,
            "output": self.output,
            "engine": self.engine,
            "workers": self.workers,
            "stopped": self.stopped,
            **{k: full[k] for k in ("elapsed_s", "events_per_s", "peak_rss_mb")},
        }

    def render(self) -> str:
        """Human summary, one fact per line."""
        d = self.as_dict()
        lines = self.input_lines(d)
        lines.append(f"profiles written   {d['profiles_written']:>12,}  to {self.output} "
                     f"({self.engine}" + (f", {self.workers} worker{'s' * (self.workers != 1)})"
                                           if self.engine == "duckdb" else ")"))
        lines.append(self.elapsed_line(d))
        if d["stopped"]:
            lines.append(f"stopped early: {d['stopped']}")
        return "\n".join(lines)


def unsupported(rules: Any) -> str | None:
    """Why ``rules`` (an Engine) cannot compact, or None: memberships are not profiles.

    With ``engageAudiences`` ``memberships`` or ``both``, Engage audiences
    become Talon.One audience memberships, which a compacted file does not
    hold; compacting would lose them.
    """
    from talon_classic.engage import ATTRIBUTES

    mode = getattr(rules, "engage_audiences", ATTRIBUTES)
    if mode == ATTRIBUTES:
        return None
    return (f"compaction keeps profile attributes only, and engageAudiences is {mode!r}: its "
            "audience memberships would be lost; send this input without compaction, or "
            "compact with engageAudiences 'attributes'")


def _small(paths: list[str]) -> bool:
    """Inputs that are files of two blocks or less in all (not worth a worker process)."""
    from talon_classic.compact.events import BLOCK_BYTES

    try:
        return sum(os.path.getsize(p) for p in paths) <= 2 * BLOCK_BYTES
    except (OSError, TypeError):  # stdin, or gone (the reader names it)
        return False


def default_memory_limit() -> str:
    """:data:`MEMORY_FRACTION` of this machine's memory, as DuckDB takes it (``"11GB"``...)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return "2GB"
    return f"{max(256, int(total * MEMORY_FRACTION / 2**20))}MB"


def compact(paths: Iterable[str], settings: Any, out: str, *, engine: str = "duckdb",
            workers: int | None = None, memory_limit: str | None = None,
            max_line_bytes: int = DEFAULT_MAX_LINE_BYTES, transformer: Engine | None = None,
            spark_master: str | None = None, temp_dir: str | None = None,
            stdin: IO[bytes] | None = None,
            on_progress: Callable[[CompactSummary], None] | None = None,
            warn: Callable[[str], None] | None = None) -> CompactSummary:
    """Compact the events of ``paths`` into ``out`` (``.jsonl``, ``.jsonl.gz``, ``.parquet``).

    ``settings`` gives the allowlist (a :class:`~talon_classic.settings.Settings`,
    or anything :class:`~talon_classic.transform.Engine` takes) unless
    ``transformer`` is given. ``workers`` defaults to the machine's cores,
    ``memory_limit`` (DuckDB's, e.g. ``"500MB"``) to half its memory (inputs of
    two blocks, 8 MiB, or less are transformed in this process);
    ``temp_dir`` is where rows and DuckDB's spill files go (default: the
    system's, ``TMPDIR``). ``warn`` receives one line per broken input line
    (``file:line: reason: message``), ``on_progress`` the summary as it grows.
    Bad lines are skipped and counted, never fatal; :class:`CompactError`
    (nothing written) when the job itself fails.
    """
    paths = list(paths)
    if engine not in ENGINES:
        raise CompactError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")
    from talon_classic.compact.output import ProfileWriter, output_format

    output_format(out)  # refuse a wrong name or size before reading anything
    if memory_limit is not None:
        from talon_classic.compact.duckdb_engine import memory_size

        memory_limit = memory_size(memory_limit)
    rules = transformer if transformer is not None else Engine(settings)
    problem = unsupported(rules)
    if problem:
        raise CompactError(problem)
    summary = CompactSummary(os.fspath(out), engine)
    if engine == "spark":
        from talon_classic.spark import compact_to_file

        compact_to_file(paths, rules, out, summary, master=spark_master,
                        max_line_bytes=max_line_bytes, warn=warn)
        summary.finish()
        return summary

    from talon_classic.compact import duckdb_engine
    from talon_classic.compact.events import Tally, transform_inputs

    duckdb_engine.import_duckdb()  # one line if it is missing, before any work
    workers = max(1, workers or os.cpu_count() or 1)
    if workers > 1 and _small(paths):  # starting processes would take longer than the work
        workers = 1
    summary.workers = workers

    def opened(source: Any) -> None:
        summary.current_input = source

    def tallied(tally: Tally) -> None:
        summary.count(tally.kept, tally.skipped, tally.dropped)
        if warn is not None:
            for line in tally.warnings:
                warn(line)
        if on_progress is not None:
            on_progress(summary)

    writer = ProfileWriter(out)  # an output that cannot be written fails before the work
    try:
        try:
            scratch = tempfile.TemporaryDirectory(prefix="talon-compact-", dir=temp_dir)
        except OSError as exc:
            raise CompactError(f"{temp_dir or tempfile.gettempdir()}: cannot make a temporary "
                               f"directory: {exc.strerror or exc}; give --temp-dir DIR, or "
                               "TMPDIR, on a disk with room") from None
        with scratch as tmp:
            rows_dir = os.path.join(tmp, "rows")
            os.mkdir(rows_dir, 0o700)
            records = transform_inputs(paths, rules, rows_dir, workers=workers,
                                       max_line_bytes=max_line_bytes, stdin=stdin,
                                       on_open=opened, on_tally=tallied)
            spill = os.path.join(tmp, "duckdb")
            con = duckdb_engine.connect(memory_limit or default_memory_limit(), spill, workers)
            try:
                for iid, attributes, stamps in duckdb_engine.profiles(con, rows_dir, records,
                                                                      max_line_bytes):
                    writer.write(iid, attributes, stamps)
            finally:
                con.close()
        writer.close()
    except BaseException:
        writer.abort()
        raise
    summary.profiles_written = writer.count
    summary.finish()
    return summary
