"""``talon-classic schema pull``: save Talon.One's customer-profile attributes and their types."""

from __future__ import annotations

import os

import click

from talon_classic.cli.options import (
    SettingsArgs,
    UsageFailure,
    out,
    pull_schema,
    schema_failure,
    settings_options,
    warn,
)
from talon_classic.exceptions import TalonClassicError
from talon_classic.files import write_atomic
from talon_classic.schema import schema_bytes

#: Mode of a new schema file: it lists attribute names and types, no user's data.
NEW_FILE_MODE = 0o644


@click.group(short_help="Read Talon.One's attribute schema (names and types).")
def schema() -> None:
    """Talon.One's customer-profile attributes and their types, for --schema."""


@schema.command("pull", short_help="Save every customer-profile attribute and its type.")
@settings_options
@click.option("--output", "-o", type=click.Path(dir_okay=False), metavar="FILE",
              help="Write the schema here (replaced whole; a new file is created 0644, an "
              "existing one keeps its mode) instead of stdout.")
def schema_pull(settings_args: SettingsArgs, output: str | None) -> None:
    """Read every customer-profile attribute (custom and built-in) from the Management API.

    Needs the deployment (applicationDomain) and a Management API key
    (managementKey, TALON_MANAGEMENT_KEY or --management-key) with read
    access to attributes. Reads GET /v1/attributes in pages of 1000, at most
    3 requests per second, and writes the answer as one JSON document
    ({"totalResultSize": n, "data": [...]}), which --schema and `talon-classic
    emulator --attributes-file` read.

    Exit status: 0 written, 2 settings error or the Management API could not
    be read, 3 the management key was refused.
    """
    settings = settings_args.load()
    try:
        pulled = pull_schema(settings)
    except TalonClassicError as exc:
        raise schema_failure(exc, settings.application_domain, hint=False) from None
    data = schema_bytes(pulled)
    if output is None:
        out(data.decode(), nl=False)
    else:
        try:
            mode = os.stat(output).st_mode & 0o7777
        except FileNotFoundError:
            mode = NEW_FILE_MODE
        except OSError as exc:
            raise UsageFailure(f"{output}: cannot write: {exc.strerror}") from None
        try:
            write_atomic(output, data, mode=mode)
        except OSError as exc:
            raise UsageFailure(f"{output}: cannot write: {exc.strerror or exc}") from None
    where = f" into {output}" if output else ""
    warn(f"pulled {len(pulled):,} attributes from {pulled.source}{where}")

