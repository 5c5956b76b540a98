"""Compaction on Spark: the same job as the local engine, for what outgrows one machine.

Inside an existing job (Databricks, EMR, Dataproc)::

    from talon_classic.spark import compact, profile_lines
    profiles = compact(spark, ["s3a://bucket/segment/2026/*/*.gz"], settings)
    profile_lines(profiles).write.text("s3a://bucket/talon/profiles")   # identify --profiles

``talon-classic compact --engine spark`` does the same on ``local[*]`` or
``--spark-master``, and writes the profiles with the local writer.

How it stays identical to the local engine:

* Lines are read as bytes (``spark.read.text`` with ``lineSep="\\n"``, the
  value cast to binary) and go through the same Python functions
  (:func:`talon_classic.compact.lines.process_line`, the same
  :class:`~talon_classic.transform.Engine`) on the executors.
* Positions are exact, not ``monotonically_increasing_id``: each line is
  keyed by (input rank, split start, record index within the split). Inputs
  are ranked in the order given, each glob's matches sorted by path (as
  Hadoop lists them); a split's lines are contiguous and in order. Those
  keys order records exactly as the local engine numbers them, and the
  records per split (counted in the same pass) turn the winners' keys into
  the same 0-based positions.
* The reduction is Spark's own aggregation (``max`` of structs), the rule
  of :mod:`talon_classic.compact.reduce`.

Differences that remain: a ``.gz`` that ends early fails the Spark job
(Spark cannot read past it; the local engine skips the rest of that file),
and Spark decides compression by the file name (``.gz``), the local engine
by the content.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from talon_classic.compact.lines import INPUT_REASONS, Kept, is_blank, process_line
from talon_classic.exceptions import CompactError, InputError, MissingDependency, first_line
from talon_classic.jsonio import dumps, loads
from talon_classic.reader import DEFAULT_MAX_LINE_BYTES
from talon_classic.summary import Summary
from talon_classic.transform import Engine

INSTALL_PYSPARK = "pip install 'talon-classic[spark]'"
#: Broken-line messages an executor sends back per partition (the counts are always exact).
WARNINGS_PER_PARTITION = 1000
#: Broken-line messages shown at most.
WARNINGS_SHOWN = 100

_FIELDS = ("kind", "iid", "attr", "val", "ts", "file", "block", "rec", "name", "reason", "count")


def require_spark() -> Any:
    """The pyspark module, or one line saying what to install (pyspark, a Java runtime)."""
    try:
        import pyspark
    except ImportError:
        raise MissingDependency(f"the Spark engine needs pyspark: {INSTALL_PYSPARK}") from None
    if not java_available():
        raise MissingDependency("the Spark engine needs a Java 17 runtime: install one "
                                "(e.g. apt-get install openjdk-17-jre-headless) and put java on "
                                "PATH or set JAVA_HOME")
    return pyspark


def java_available() -> bool:
    """Is there a ``java`` to start Spark's JVM with (``$JAVA_HOME/bin/java`` or on PATH)?"""
    home = os.environ.get("JAVA_HOME")
    if home and os.access(os.path.join(home, "bin", "java"), os.X_OK):
        return True
    return shutil.which("java") is not None


def session(master: str | None = None, shuffle_partitions: int | None = None) -> Any:
    """A SparkSession for ``talon-classic compact --engine spark`` (UI off, this Python)."""
    require_spark()
    from pyspark.sql import SparkSession

    master = master or "local[*]"
    cores = os.cpu_count() or 1
    builder = SparkSession.builder
    if master.startswith("local"):
        # the executors are this machine's: this Python (this install), and the driver's JVM,
        # which holds every task, gets a share of the memory instead of Spark's 1 GB
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        from talon_classic.compact import default_memory_limit

        builder = builder.config("spark.driver.memory", default_memory_limit().lower()[:-1])
    builder = (builder.master(master)
               .appName("talon-classic compact")
               .config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.shuffle.partitions", str(shuffle_partitions or 4 * cores))
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.driver.extraJavaOptions",
                       f"-Dlog4j2.configurationFile={_quiet_logging()}"))
    import tempfile

    # The JVM inherits stderr: send its start-up chatter to a file, shown only if it fails.
    with tempfile.TemporaryFile() as log:
        saved = os.dup(2)
        try:
            sys.stderr.flush()
            os.dup2(log.fileno(), 2)
            try:
                return builder.getOrCreate()
            except Exception as exc:  # the JVM did not start: one line, not a Java stack
                log.seek(0)
                said = [line.strip() for line in log.read().decode("utf-8", "replace")
                        .splitlines() if line.strip()]
                why = said[-1][:300] if said else _first_line(exc)
                raise CompactError(f"Spark did not start: {why}") from None
        finally:
            os.dup2(saved, 2)
            os.close(saved)


_LOG4J2 = """\
rootLogger.level = off
rootLogger.appenderRef.stderr.ref = stderr
appender.console.type = Console
appender.console.name = stderr
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %m%n
"""


def _quiet_logging() -> str:
    """A log4j2 configuration that keeps Spark's own log off the terminal (errors come back
    to Python and are reported in one line)."""
    import tempfile

    path = os.path.join(tempfile.gettempdir(), "talon-classic-log4j2.properties")
    if not os.path.exists(path):
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path))
        with os.fdopen(fd, "w") as fh:
            fh.write(_LOG4J2)
        os.replace(tmp, path)
    return path


@dataclass
class Compaction:
    """A compaction on Spark: the profiles (lazy DataFrame) and what the input held."""

    profiles: Any
    kept: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    dropped: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: ``file:line: reason: message`` of broken lines, in input order (the first ones).
    warnings: list[str] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)

    def summary(self) -> Summary:
        """The counts as a :class:`~talon_classic.summary.Summary` (as ``identify`` prints)."""
        out = Summary()
        out.count(self.kept, self.skipped, self.dropped)
        out.finish()
        return out


def compact(spark: Any, paths: Iterable[str] | str, settings: Any, *,
            transformer: Engine | None = None,
            max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> Any:
    """The compacted profiles of ``paths`` as a DataFrame, sorted by integrationId.

    Columns: ``integrationId`` (string), ``attributes`` (map of attribute to
    its value as JSON text), ``timestamps`` (map of attribute to
    ``struct<timestamp: double, position: bigint>``). :func:`profile_lines`
    turns it into the JSONL that ``identify --profiles`` sends.
    """
    return compaction(spark, paths, settings, transformer=transformer,
                      max_line_bytes=max_line_bytes).profiles


def compaction(spark: Any, paths: Iterable[str] | str, settings: Any, *,
               transformer: Engine | None = None,
               max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> Compaction:
    """Like :func:`compact`, with the input's counts (runs one Spark job for them now)."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    rules = transformer if transformer is not None else Engine(settings)
    files = list_inputs(spark, [paths] if isinstance(paths, str) else list(paths))
    ranks = {_normal(f): n for n, f in enumerate(files)}
    raw = (spark.read.option("lineSep", "\n").text(files)
           .select(F.input_file_name().alias("file"),
                   F.input_file_block_start().alias("block"),
                   F.col("value").cast("binary").alias("raw")))
    schema = T.StructType([
        T.StructField("kind", T.StringType()), T.StructField("iid", T.StringType()),
        T.StructField("attr", T.StringType()), T.StructField("val", T.StringType()),
        T.StructField("ts", T.DoubleType()), T.StructField("file", T.IntegerType()),
        T.StructField("block", T.LongType()), T.StructField("rec", T.LongType()),
        T.StructField("name", T.StringType()), T.StructField("reason", T.StringType()),
        T.StructField("count", T.LongType()),
    ])
    limit = max_line_bytes

    def transform(rows: Iterable[Any]) -> Iterator[tuple[Any, ...]]:
        return transform_partition(rows, rules, limit, ranks)

    rows = spark.createDataFrame(raw.rdd.mapPartitions(transform), schema)
    rows = rows.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        small = rows.filter(~F.col("kind").isin("a", "e")).collect()
    except Exception as exc:
        rows.unpersist()
        raise CompactError(_job_error(exc)) from None
    result = Compaction(profiles=None, inputs=files)
    splits: dict[tuple[int, int], tuple[int, int]] = {}
    pending_warnings = []
    for r in small:
        if r.kind == "k":
            result.kept += r["count"]
        elif r.kind == "s":
            result.skipped[r.reason] += r["count"]
        elif r.kind == "d":
            result.dropped[(r.name, r.reason)] += r["count"]
        elif r.kind == "n":
            splits[(r.file, r.block)] = (r.rec, r["count"])  # physical lines, records
        elif r.kind == "w":
            pending_warnings.append(r)
    bases, line_bases = _bases(splits)
    shown = [f[5:] if f.startswith("file:") else f for f in files]
    result.warnings = [
        f"{shown[w.file]}:{line_bases[(w.file, w.block)] + w.rec + 1}: {w.reason}: {w.name}"
        for w in sorted(pending_warnings, key=lambda w: (w.file, w.block, w.rec))]
    base_df = spark.createDataFrame(
        [(f, b, base) for (f, b), base in bases.items()] or [(-1, -1, 0)],
        "file INT, block BIGINT, base BIGINT")
    result.profiles = _profiles(rows.filter(F.col("kind").isin("a", "e")), base_df)
    return result


def transform_partition(rows: Iterable[Any], engine: Engine, max_line_bytes: int,
                        ranks: dict[str, int]) -> Iterator[tuple[Any, ...]]:
    """One partition's lines -> attribute rows, and count rows for the driver (on executors)."""
    kept = 0
    skipped: Counter[str] = Counter()
    dropped: Counter[tuple[str, str]] = Counter()
    warned = 0
    current: tuple[int, int] | None = None
    physical = records = 0
    names: dict[str, int] = {}
    for file_url, block, raw in rows:
        rank = names.get(file_url)
        if rank is None:
            rank = names[file_url] = _rank(ranks, file_url)
        split = (rank, block)
        if split != current:
            if current is not None:
                yield _row("n", file=current[0], block=current[1], rec=physical, count=records)
            current, physical, records = split, 0, 0
        line = bytes(raw)
        index = physical
        physical += 1
        if len(line) <= max_line_bytes and is_blank(line):
            continue
        lineno = 1 if block == 0 and index == 0 else index + 2
        outcome = process_line(line, lineno, engine, max_line_bytes)
        if type(outcome) is Kept:
            kept += 1
            if outcome.dropped:
                dropped.update(outcome.dropped)
            iid, ts = outcome.integration_id, outcome.timestamp
            if outcome.attributes:
                for name, value in outcome.attributes.items():
                    yield ("a", iid, name, dumps(value), ts, rank, block, records,
                           None, None, None)
            else:
                yield ("e", iid, None, None, ts, rank, block, records, None, None, None)
        else:
            reason = outcome.reason  # type: ignore[union-attr]
            skipped[reason] += 1
            if reason in INPUT_REASONS and warned < WARNINGS_PER_PARTITION:
                warned += 1
                yield _row("w", file=rank, block=block, rec=index, reason=reason,
                           name=outcome.error)  # type: ignore[union-attr]
        records += 1
    if current is not None:
        yield _row("n", file=current[0], block=current[1], rec=physical, count=records)
    yield _row("k", count=kept)
    for reason, n in skipped.items():
        yield _row("s", reason=reason, count=n)
    for (name, reason), n in dropped.items():
        yield _row("d", name=name, reason=reason, count=n)


def _profiles(rows: Any, bases: Any) -> Any:
    """The reduction (per integrationId and attribute), then one row per integrationId."""
    from pyspark.sql import functions as F

    col = F.col
    per_attribute = rows.groupBy("iid", "attr").agg(
        F.max(F.when(col("ts").isNotNull(),
                     F.struct("ts", "file", "block", "rec", "val"))).alias("tsd"),
        F.max(F.when(col("ts").isNull(), F.struct("file", "block", "rec", "val"))).alias("nul"))
    later_null = col("tsd").isNull() | (
        F.struct(col("nul.file"), col("nul.block"), col("nul.rec"))
        > F.struct(col("tsd.file"), col("tsd.block"), col("tsd.rec")))
    winners = per_attribute.select(
        "iid", "attr", col("tsd.ts").alias("m"),
        *[F.when(later_null, col(f"nul.{name}")).otherwise(col(f"tsd.{name}")).alias(name)
          for name in ("file", "block", "rec", "val")])
    placed = (winners.join(F.broadcast(bases), ["file", "block"])
              .select("iid", "attr", "val", "m", (col("base") + col("rec")).alias("pos")))
    grouped = placed.groupBy("iid").agg(
        F.collect_list(F.when(col("attr").isNotNull(),
                              F.struct("attr", "val", "m", "pos"))).alias("items"))
    return grouped.select(
        col("iid").alias("integrationId"),
        F.map_from_entries(F.transform("items", lambda x: F.struct(x.attr, x.val)))
        .alias("attributes"),
        F.map_from_entries(F.transform("items", lambda x: F.struct(
            x.attr, F.struct(x.m.alias("timestamp"), x.pos.alias("position")))))
        .alias("timestamps"),
    ).orderBy("integrationId")


def profile_lines(profiles: Any) -> Any:
    """The compacted JSONL lines of a :func:`compact` DataFrame (column ``value``), in order.

    ``profile_lines(df).write.text(path)`` writes part files that ``identify
    --profiles`` sends as they are.
    """
    from talon_classic.compact.output import profile_record

    def lines(rows: Iterable[Any]) -> Iterator[tuple[str]]:
        for row in rows:
            attributes, stamps = row_profile(row)
            yield (dumps(profile_record(row.integrationId, attributes, stamps)),)

    return profiles.rdd.mapPartitions(lines).toDF("value string")


def row_profile(row: Any) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """A DataFrame row's attributes (decoded) and ordering keys ``[timestamp, position]``."""
    attributes = {name: loads(text) for name, text in (row.attributes or {}).items()}
    stamps = {name: [key.timestamp, key.position] for name, key in (row.timestamps or {}).items()}
    return attributes, stamps


def list_inputs(spark: Any, paths: list[str]) -> list[str]:
    """Every input file, in the order given, each glob's (or directory's) files sorted."""
    jvm = spark.sparkContext._jvm
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    files: list[str] = []
    for text in paths:
        try:
            path = jvm.org.apache.hadoop.fs.Path(text)
            fs = path.getFileSystem(conf)
            matches = fs.globStatus(path)
        except Exception as exc:
            raise InputError(f"{text}: cannot list: {_first_line(exc)}") from None
        if not matches:
            raise InputError(f"{text}: no such file")
        for status in sorted(matches, key=lambda s: s.getPath().toString()):
            if status.isDirectory():
                inner = sorted((s for s in fs.listStatus(status.getPath())
                                if s.isFile() and not s.getPath().getName().startswith(("_", "."))),
                               key=lambda s: s.getPath().toString())
                files += [s.getPath().toString() for s in inner]
            else:
                files.append(status.getPath().toString())
    if not files:
        raise InputError(f"{', '.join(paths)}: no input files")
    seen: set[str] = set()
    for name in files:
        if _normal(name) in seen:
            raise InputError(f"{name}: given twice (directly or through a glob); give each "
                             "input once")
        seen.add(_normal(name))
    return files


def compact_to_file(paths: list[str], rules: Engine, out: str, summary: Any, *,
                    master: str | None = None, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
                    warn: Callable[[str], None] | None = None) -> None:
    """``compact --engine spark``: run on a new session, write ``out`` with the local writer."""
    require_spark()
    from pyspark.sql import SparkSession

    from talon_classic.compact.output import ProfileWriter

    writer = ProfileWriter(out)
    ours = SparkSession.getActiveSession() is None  # inside a job: use its session, keep it
    spark = session(master)
    try:
        result = compaction(spark, paths, None, transformer=rules, max_line_bytes=max_line_bytes)
        summary.count(result.kept, result.skipped, result.dropped)
        if warn is not None:
            for line in result.warnings[:WARNINGS_SHOWN]:
                warn(line)
            hidden = sum(n for r, n in result.skipped.items() if r in INPUT_REASONS) - min(
                len(result.warnings), WARNINGS_SHOWN)
            if hidden > 0:
                warn(f"... and {hidden:,} more broken lines (counted in the summary)")
        try:
            for row in result.profiles.toLocalIterator(prefetchPartitions=True):
                attributes, stamps = row_profile(row)
                writer.write(row.integrationId, attributes, stamps)
        except Exception as exc:
            raise CompactError(_job_error(exc)) from None
        writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        if ours:
            spark.stop()
    summary.profiles_written = writer.count


def _bases(splits: dict[tuple[int, int], tuple[int, int]]
           ) -> tuple[dict[tuple[int, int], int], dict[tuple[int, int], int]]:
    """Per split: the position of its first record, and the file line before its first line."""
    bases: dict[tuple[int, int], int] = {}
    line_bases: dict[tuple[int, int], int] = {}
    total = 0
    lines = 0
    last_file = None
    for key in sorted(splits):
        physical, records = splits[key]
        if key[0] != last_file:
            last_file, lines = key[0], 0
        bases[key], line_bases[key] = total, lines
        total += records
        lines += physical
    return bases, line_bases


def _row(kind: str, **values: Any) -> tuple[Any, ...]:
    return tuple(kind if f == "kind" else values.get(f) for f in _FIELDS)


def _normal(url: str) -> str:
    """One spelling per file: Hadoop lists ``file:/x``, Spark reports ``file:///x`` (quoted)."""
    text = unquote(url)
    if text.startswith("file:"):
        text = "file:///" + text[5:].lstrip("/")
    return text


def _rank(ranks: dict[str, int], url: str) -> int:
    rank = ranks.get(_normal(url))
    if rank is None:
        raise CompactError(f"Spark read {url}, which is not among the listed inputs")
    return rank


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    if "Traceback (most recent call last)" in text:  # a Python error on an executor: its last line
        tail = text.split("Traceback (most recent call last)", 1)[1].splitlines()
        errors = [line.strip() for line in tail if line and not line[0].isspace()
                  and not line.startswith(("\tat ", "at "))]
        if errors:
            return errors[-1][:300]
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("at ", "Traceback", "File ")):
            return line[:300]
    return first_line(exc)


def _job_error(exc: BaseException) -> str:
    text = str(exc)
    if "EOFException" in text or "Unexpected end of" in text or "Not in GZIP format" in text:
        return ("Spark job failed: a .gz input ends early or is corrupt, and Spark cannot read "
                "past it; fix or remove it (the local engine, --engine duckdb, skips the rest of "
                "such a file); nothing was written")
    return f"Spark job failed: {_first_line(exc)}; nothing was written"
