"""``talon-classic check-config``: validate the settings, test the keys, check the allowlist."""

from __future__ import annotations

import sys

import click

from talon_classic.cli.options import (
    SchemaArgs,
    SettingsArgs,
    UsageFailure,
    out,
    pull_schema,
    schema_line,
    schema_options,
    settings_options,
)
from talon_classic.exceptions import RetriesExhausted, SettingsError, TalonClassicError
from talon_classic.schema import Schema
from talon_classic.settings import Settings, redact

#: How each level of :func:`~talon_classic.schema.check_allowlist` is printed.
PREFIXES = {"ok": "ok   ", "warning": "warn ", "note": "note "}


@click.command("check-config",
               short_help="Validate the settings, test the keys, check the allowlist.")
@settings_options
@schema_options(pull=False)
@click.option("--timeout", default=10.0, show_default=True, type=click.FloatRange(0.1),
              help="Seconds to wait for Talon.One.")
def check_config(settings_args: SettingsArgs, schema_args: SchemaArgs, timeout: float) -> None:
    """Validate the settings and test the API key against the deployment (GET /v2/authping).

    With a management key it is tested too (by reading the attribute
    schema); with --schema FILE or that key, each customAttributes entry is
    looked up in Talon.One's attributes (does it exist, of which type; does
    a pattern match any).

    One line per finding ("ok", "warn", "note" or "FAIL"). Exit status: 0
    all is well (warnings included), 1 something failed.
    """
    from talon_classic.client import Client

    label = settings_args.label
    try:
        settings = settings_args.load()
    except UsageFailure as exc:
        out(f"FAIL {exc.message}")
        sys.exit(1)
    out(f"ok   {label}: settings are valid")
    pattern = sum("*" in a for a in settings.custom_attributes)
    if settings.custom_attributes:
        out(
            f"ok   customAttributes: {len(settings.custom_attributes)} entries"
            + (f" ({pattern} patterns)" if pattern else "")
        )
    else:
        out("warn customAttributes: empty, so only Engage audiences and computed traits "
            "will be sent")
    schema = None
    if schema_args.path:
        schema = _schema_file(schema_args.path)
        if schema is None:
            sys.exit(1)
        _allowlist_findings(schema, settings)
    try:
        settings.require_delivery(label)
    except SettingsError as exc:
        out(f"FAIL {exc}")
        sys.exit(1)
    domain, key = settings.application_domain or "", settings.api_key or ""
    out(f"ok   applicationDomain: {domain} is a well-formed deployment URL")
    ok = True
    client = Client(domain, key, rate_limit=0, connect_timeout=timeout, read_timeout=timeout,
                    max_attempts=1)
    try:
        client.check_auth()
        out(f"ok   apiKey {redact(key)}: accepted by {domain}/v2/authping")
    except RetriesExhausted as exc:
        ok = False
        problem = f"answered {exc.status}" if exc.status else f"cannot reach {domain}"
        out(f"FAIL applicationDomain: {problem} ({exc})")
    except TalonClassicError as exc:
        ok = False
        out(f"FAIL apiKey {redact(key)}: {exc}")
    finally:
        client.close()
    if settings.management_key:
        pulled = _management_key(settings, timeout)
        ok = ok and pulled is not None
        if pulled is not None and schema is None:
            _allowlist_findings(pulled, settings)
    sys.exit(0 if ok else 1)


def _schema_file(path: str) -> Schema | None:
    """``--schema FILE`` read, with an ok or FAIL line; None when it cannot be used."""
    from talon_classic.schemacache import resolve_schema

    try:
        source = resolve_schema(path)
    except TalonClassicError as exc:
        out(f"FAIL schema: {exc}")
        return None
    assert source is not None
    out(f"ok   {schema_line(source)}")
    return source.schema


def _management_key(settings: Settings, timeout: float) -> Schema | None:
    """Test the management key by reading the attribute schema; None when that fails."""
    shown = redact(settings.management_key)
    try:
        schema = pull_schema(settings, connect_timeout=timeout, read_timeout=timeout,
                             max_attempts=1)
    except RetriesExhausted as exc:
        problem = f"answered {exc.status}" if exc.status else "cannot reach it"
        out(f"FAIL managementKey {shown}: the Management API {problem} ({exc})")
        return None
    except TalonClassicError as exc:
        out(f"FAIL managementKey {shown}: {exc}")
        return None
    out(f"ok   managementKey {shown}: read {len(schema):,} customer-profile attributes "
        f"from {schema.source}")
    return schema


def _allowlist_findings(schema: Schema, settings: Settings) -> None:
    """One line per :func:`~talon_classic.schema.check_allowlist` finding (never a failure)."""
    from talon_classic.schema import check_allowlist

    for level, message in check_allowlist(schema, settings.custom_attributes):
        out(f"{PREFIXES.get(level, 'note ')}{message}")
