"""``talon-classic compact``: merge every event of each user first, exactly; send nothing.

A shell over :func:`talon_classic.compact.compact`: options in, the summary
out (text or ``--json``), a progress line on a terminal.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from talon_classic.cli.options import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    SchemaArgs,
    SettingsArgs,
    UsageFailure,
    check_inputs,
    load_schema,
    out,
    schema_line,
    schema_options,
    settings_options,
    warn,
    warn_without_allowlist,
)
from talon_classic.cli.progress import StatusLine, input_eta
from talon_classic.exceptions import CompactError, InputError, MissingDependency
from talon_classic.jsonio import dumps
from talon_classic.reader import DEFAULT_MAX_LINE_BYTES
from talon_classic.transform import Engine

EXIT_FAILED = 1


class CompactProgress(StatusLine[Any]):
    """The compaction's status line: events read, their rate, the input's ETA."""

    def text(self, summary: Any) -> str:
        rate = summary.events_read / summary.elapsed if summary.elapsed > 0 else 0.0
        eta = input_eta(summary.current_input, summary.elapsed, rate)
        return f"{summary.events_read:,} events read  {rate:,.0f} events/s{eta}"


def run_compaction(settings: Any, paths: list[str], out: str, options: dict[str, Any],
                   quiet: bool, transformer: Engine | None = None) -> Any:
    """Compact with the CLI's options; one line (UsageFailure, exit 2) for what cannot run.

    ``transformer`` is the engine to transform with (default: the settings' allowlist).
    """
    from talon_classic.compact import compact as compact_events
    from talon_classic.compact import unsupported

    problem = unsupported(transformer if transformer is not None else Engine(settings))
    if problem:
        raise UsageFailure(problem)
    progress = CompactProgress(enabled=not quiet and sys.stderr.isatty())
    try:
        return compact_events(
            paths, settings, out,
            engine=options.get("engine") or "duckdb",
            workers=options.get("workers"),
            memory_limit=options.get("memory_limit"),
            max_line_bytes=options.get("max_line_bytes") or DEFAULT_MAX_LINE_BYTES,
            spark_master=options.get("spark_master"),
            temp_dir=options.get("temp_dir"),
            transformer=transformer,
            on_progress=progress,
            warn=None if quiet else warn,
        )
    except (MissingDependency, InputError) as exc:
        raise UsageFailure(str(exc)) from None
    finally:
        progress.close()


def _same_file(output: str, path: str) -> bool:
    """Is ``output`` the input ``path`` (by name, or as a link to the same file)?"""
    if os.path.abspath(output) == os.path.abspath(path):
        return True
    try:
        return os.path.samefile(output, path)
    except (OSError, ValueError):  # either does not exist (yet), or is no local path
        return False


def check_output(output: str) -> None:
    """Refuse an output name or place that cannot work, before anything is read."""
    from talon_classic.compact.output import output_format

    try:
        output_format(output)
    except CompactError as exc:
        raise UsageFailure(str(exc)) from None
    directory = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(directory):
        raise UsageFailure(f"{output}: no such directory {directory}")
    if not os.access(directory, os.W_OK):
        raise UsageFailure(f"{output}: cannot write in {directory} (permission denied)")


@click.command(short_help="Merge every event of each user first, exactly, into one file.")
@settings_options
@schema_options(pull=True)
@click.argument("inputs", nargs=-1, metavar="INPUT...")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), metavar="OUT",
              help="Where the profiles go: .jsonl, .jsonl.gz or .parquet (created 0600).")
@click.option("--engine", type=click.Choice(["duckdb", "spark"]), default="duckdb",
              show_default=True, help="duckdb: this machine, out of core; spark: a Spark "
              "cluster (or local[*]).")
@click.option("--workers", type=click.IntRange(1, 256), metavar="N",
              help="Processes parsing and transforming events [default: the machine's cores].")
@click.option("--memory-limit", metavar="SIZE",
              help="DuckDB's memory limit, e.g. 500MB or 8GB; it spills to disk past it "
              "[default: half the machine's memory].")
@click.option("--temp-dir", type=click.Path(exists=True, file_okay=False, writable=True),
              metavar="DIR",
              help="Where transformed rows and DuckDB's spill files go [default: $TMPDIR].")
@click.option("--spark-master", metavar="URL", default=None,
              help="With --engine spark: the master [default: local[*]].")
@click.option("--max-line-bytes", default=DEFAULT_MAX_LINE_BYTES, show_default=True,
              type=click.IntRange(1024), help="Longer lines are skipped as line_too_long.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.option("--quiet", "-q", is_flag=True, help="No progress line and no per-line warnings.")
def compact(settings_args: SettingsArgs, schema_args: SchemaArgs, inputs: tuple[str, ...],
            output: str, as_json: bool, quiet: bool, **options: Any) -> None:
    """Merge every event of each user, exactly, into one profile per integrationId.

    Reads identify events (INPUT: .jsonl, a .gz of one, or '-' for stdin;
    with --engine spark any path Spark reads: s3a://, gs://, hdfs://,
    globs) and writes OUT, one record per integrationId sorted by it:
    {"integrationId", "attributes", "timestamps": {attribute: [timestamp,
    position]}}. Attribute by attribute the newest timestamp wins, then the
    later line, however far apart the events are. With a schema (--schema
    FILE, or pulled with the management key) values are typed as `identify`
    types them. Send OUT with `talon-classic identify OUT --profiles`.
    Nothing is sent here.

    Exit status: 0 written (bad lines are skipped and counted), 1 the
    compaction failed (nothing written), 2 usage or settings error,
    130 interrupted (Ctrl-C; nothing written).
    """
    if not inputs:
        raise UsageFailure("give at least one INPUT (a file, or '-' for stdin)")
    if options["engine"] != "spark" and options["spark_master"]:
        raise UsageFailure("--spark-master is only used with --engine spark")
    paths = check_inputs(inputs) if options["engine"] == "duckdb" else list(inputs)
    if any(_same_file(output, p) for p in paths):
        raise UsageFailure(f"{output}: is also an INPUT; write the profiles elsewhere")
    check_output(output)
    if options["memory_limit"] is not None:
        from talon_classic.compact.duckdb_engine import memory_size

        try:
            memory_size(options["memory_limit"])
        except CompactError as exc:
            raise UsageFailure(str(exc)) from None
    settings = settings_args.load()
    if not quiet:
        warn_without_allowlist(settings)
    source = load_schema(schema_args, settings, pull=True)
    engine = Engine(settings, source.schema if source else None)
    try:
        summary = run_compaction(settings, paths, output, options, quiet, transformer=engine)
    except KeyboardInterrupt:
        warn("interrupted (Ctrl-C): nothing was written")
        sys.exit(EXIT_INTERRUPTED)
    except CompactError as exc:
        if as_json:
            out(dumps({"error": str(exc), "exit_code": EXIT_FAILED}))
        else:
            warn(f"Error: {exc}")
        sys.exit(EXIT_FAILED)
    if as_json:
        data = summary.as_dict()
        data["schema"] = (None if source is None else
                          {"origin": source.origin, "attributes": len(source.schema)})
        data["exit_code"] = EXIT_OK
        out(dumps(data))
    else:
        line = schema_line(source)
        out(f"{line}\n{summary.render()}" if line else summary.render())
    sys.exit(EXIT_OK)
