"""``talon-classic check-config``: validate the settings and test the API key."""

from __future__ import annotations

import sys

import click

from talon_classic.cli.options import SettingsArgs, UsageFailure, settings_options
from talon_classic.exceptions import RetriesExhausted, SettingsError, TalonClassicError
from talon_classic.settings import redact


@click.command("check-config", short_help="Validate the settings and test the API key.")
@settings_options
@click.option("--timeout", default=10.0, show_default=True, type=click.FloatRange(0.1),
              help="Seconds to wait for Talon.One.")
def check_config(settings_args: SettingsArgs, timeout: float) -> None:
    """Validate the settings and test the API key against the deployment (GET /v2/authping).

    One line per finding ("ok", "warn" or "FAIL"). Exit status: 0 all is
    well, 1 something failed.
    """
    from talon_classic.client import Client

    label = settings_args.label
    try:
        settings = settings_args.load()
    except UsageFailure as exc:
        click.echo(f"FAIL {exc.message}")
        sys.exit(1)
    click.echo(f"ok   {label}: settings are valid")
    pattern = sum("*" in a for a in settings.custom_attributes)
    if settings.custom_attributes:
        click.echo(
            f"ok   customAttributes: {len(settings.custom_attributes)} entries"
            + (f" ({pattern} patterns)" if pattern else "")
        )
    else:
        click.echo("warn customAttributes: empty, so only Engage audiences and computed traits "
                   "will be sent")
    try:
        settings.require_delivery(label)
    except SettingsError as exc:
        click.echo(f"FAIL {exc}")
        sys.exit(1)
    domain, key = settings.application_domain or "", settings.api_key or ""
    click.echo(f"ok   applicationDomain: {domain} is a well-formed deployment URL")
    ok = True
    client = Client(domain, key, rate_limit=0, connect_timeout=timeout, read_timeout=timeout,
                    max_attempts=1)
    try:
        client.check_auth()
        click.echo(f"ok   apiKey {redact(key)}: accepted by {domain}/v2/authping")
    except RetriesExhausted as exc:
        ok = False
        problem = f"answered {exc.status}" if exc.status else f"cannot reach {domain}"
        click.echo(f"FAIL applicationDomain: {problem} ({exc})")
    except TalonClassicError as exc:
        ok = False
        click.echo(f"FAIL apiKey {redact(key)}: {exc}")
    finally:
        client.close()
    sys.exit(0 if ok else 1)
