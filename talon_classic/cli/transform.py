"""``talon-classic transform``: what the engine makes of each event, as JSONL; sends nothing."""

from __future__ import annotations

import sys

import click

from talon_classic.cli.options import (
    SchemaArgs,
    SettingsArgs,
    UsageFailure,
    check_inputs,
    engage_option,
    load_schema,
    schema_options,
    settings_options,
    silence_stdout,
    stdout_failed,
    warn_without_allowlist,
)
from talon_classic.exceptions import InputError
from talon_classic.intake import reread
from talon_classic.jsonio import dumps, loads_quick
from talon_classic.reader import read_records
from talon_classic.transform import Engine


@click.command(short_help="Show what the engine makes of each event; sends nothing.")
@settings_options
@schema_options(pull=False)
@engage_option
@click.argument("inputs", nargs=-1, metavar="[INPUT]...")
def transform(settings_args: SettingsArgs, schema_args: SchemaArgs, inputs: tuple[str, ...]
              ) -> None:
    """Show what the engine makes of each event (JSONL in, JSONL out; sends nothing).

    INPUT is a .jsonl file, a .gz of one, or '-' for stdin (the default).
    One output line per non-blank input line, with its 1-based "line"
    number: the upsert ("integrationId", "attributes", "dropped") or
    "skipped" with a reason code and an "error" in words. With --schema,
    values are coerced to Talon.One's types, and attributes it does not have
    or values that do not fit are dropped (unknown_attribute, type_mismatch).
    With --engage-audiences memberships or both, an Engage audience event
    also shows its "memberships" ([{"action", "audience", "computation_id"}]).

    Exit status: 0 the input was read to the end (or the reader of the
    output went away, as with `| head`), 1 the output cannot be written (a
    full disk), 2 usage or settings error.
    """
    settings = settings_args.load()
    warn_without_allowlist(settings)
    source = load_schema(schema_args, settings, pull=False)
    engine = Engine(settings, source.schema if source else None)
    paths = check_inputs(inputs)
    write = sys.stdout.write
    try:
        for record in read_records(paths, parse=loads_quick):
            head = {"line": record.line, "input": record.input}
            if record.skipped is not None:
                head["skipped"] = record.skipped
                head["error"] = record.error
            else:
                result = engine.transform(record.event)
                if result.approximate and record.raw is not None:
                    result = reread(engine, record.raw)
                head.update(result.as_dict())
            write(dumps(head) + "\n")
        sys.stdout.flush()
    except InputError as exc:
        raise UsageFailure(str(exc)) from None
    except BrokenPipeError:  # e.g. piped into `head`: stop quietly, as other tools do
        silence_stdout()
    except OSError as exc:  # the inputs' errors are InputError: this is stdout (a full disk)
        stdout_failed(exc)
