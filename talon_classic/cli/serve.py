"""``talon-classic serve``: stand in for the classic destination over HTTP."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
from typing import TYPE_CHECKING, Any

import click

from talon_classic.cli.options import (
    SchemaArgs,
    SettingsArgs,
    UsageFailure,
    engage_option,
    ledger_options,
    load_schema,
    out,
    schema_line,
    schema_options,
    secret,
    server_options,
    settings_options,
)
from talon_classic.exceptions import SettingsError, TalonClassicError

if TYPE_CHECKING:
    from talon_classic.client import Client
    from talon_classic.memberships import MembershipDelivery
    from talon_classic.settings import Settings

ENV_WRITE_KEYS = "TALON_WRITE_KEYS"
ENV_WEBHOOK_SECRET = "TALON_WEBHOOK_SECRET"


def _split_keys(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> list[str]:
    """Write keys from repeated flags, or from the comma-separated variable."""
    keys: list[str] = []
    for item in value:
        keys += [k.strip() for k in item.split(",") if k.strip()]
    return keys


@click.command(short_help="Stand in for the classic destination over HTTP.")
@settings_options
@schema_options(pull=True)
@engage_option
@click.option("--spool", "spool_path", required=True, metavar="PATH",
              help="SQLite file where accepted events wait for delivery.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535),
              help="Port (0 picks a free one).")
@click.option("--write-key", "write_keys", multiple=True, metavar="KEY", callback=_split_keys,
              envvar=ENV_WRITE_KEYS, show_envvar=True,
              help="Accepted Segment write key (repeatable; the variable is comma-separated "
              "and keeps keys out of `ps`).")
@click.option("--webhook-secret", metavar="SECRET", envvar=ENV_WEBHOOK_SECRET, show_envvar=True,
              help="Shared secret of Segment's Webhooks destination (X-Signature).")
@click.option("--threads", default=8, show_default=True, type=click.IntRange(1, 256),
              help="HTTP server threads.")
@click.option("--max-spool", default=1_000_000, show_default=True, type=click.IntRange(1),
              help="Above this many waiting events, answer 503 with Retry-After.")
@click.option("--linger", default=1.0, show_default=True, type=click.FloatRange(0.01),
              help="Seconds to gather a micro-batch.")
@click.option("--dedupe-hours", default=24.0, show_default=True, type=click.FloatRange(0),
              help="Drop a messageId seen within this window.")
@click.option("--rate-limit", default=60.0, show_default=True, type=click.FloatRange(0),
              help="Requests per second to Talon.One.")
@click.option("--emulator", is_flag=True,
              help="Deliver to a local Talon.One emulator started in-process.")
@ledger_options(no_state_help="Keep no ordering ledger in the spool: after a restart an older "
                "event can replace a newer value.")
@server_options
def serve(settings_args: SettingsArgs, schema_args: SchemaArgs, spool_path: str, host: str,
          port: int, write_keys: list[str], webhook_secret: str | None, threads: int,
          max_spool: int, linger: float, dedupe_hours: float, rate_limit: float, emulator: bool,
          no_state: bool, skip_unchanged: bool, read_timeout: float,
          connection_limit: int | None, idle_timeout: float) -> None:
    """Accept Segment events over HTTP (tracking API, webhooks), spool them, deliver them.

    Segment's server libraries work unchanged when pointed at this host
    (e.g. analytics-python's host=http://HOST:PORT). The spool also keeps
    the ordering ledger (what Talon.One acknowledged), so after a restart an
    older event still never replaces a newer value. SIGTERM or Ctrl-C:
    stop accepting, finish requests in progress, exit 0; undelivered events
    stay in the spool for the next start. With an attribute schema (--schema,
    or pulled once at start with a management key) values are coerced to
    Talon.One's types and what cannot be is dropped. Exit status 2: it
    cannot start (settings, options, the schema, the port is in use); 3: the
    management key was refused.
    """
    from talon_classic.cli.identify import emulator_for
    from talon_classic.client import Client
    from talon_classic.server import Service
    from talon_classic.transform import Engine

    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise UsageFailure("serve needs the 'serve' extra: pip install 'talon-classic[serve]'"
                           ) from None

    settings = settings_args.load()
    if skip_unchanged and (no_state or emulator):
        raise UsageFailure("--skip-unchanged compares with the ordering ledger, and this server "
                           "keeps none (--no-state, or --emulator, which forgets on restart)")
    if not write_keys:
        raise UsageFailure(f"give at least one --write-key (or {ENV_WRITE_KEYS})")
    write_keys = [secret(k, "writeKey", "write_keys", ENV_WRITE_KEYS) for k in write_keys]
    if webhook_secret:
        webhook_secret = secret(webhook_secret, "webhookSecret", "webhook_secret",
                                ENV_WEBHOOK_SECRET)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    source = load_schema(schema_args, settings, pull=True)
    schema = source.schema if source else None
    engine = Engine(settings, schema)
    with contextlib.ExitStack() as stack:
        client: Any
        if emulator:
            # the server's worker does not report Engage names: accept every attribute
            # (with a schema, every attribute it has)
            server = stack.enter_context(emulator_for(settings, rate_limit, None, strict=False,
                                                      schema=schema))
            client = Client(server.url, server.app.config.api_key, rate_limit=rate_limit,
                            read_timeout=read_timeout)
            out(f"emulator: delivering to the local Talon.One emulator at {server.url}")
        else:
            try:
                settings.require_delivery(settings_args.label)
            except SettingsError as exc:
                raise UsageFailure(str(exc)) from None
            client = Client.from_settings(settings, rate_limit=rate_limit, concurrency=1,
                                          read_timeout=read_timeout)
        stack.callback(client.close)
        memberships = open_memberships(settings, client, stack, emulator)
        try:
            service = Service(spool_path, engine, client, write_keys,
                              webhook_secret=webhook_secret or None, host=host, port=port,
                              threads=threads, max_depth=max_spool, linger=linger,
                              dedupe_window=dedupe_hours * 3600,
                              connection_limit=connection_limit, idle_timeout=idle_timeout,
                              memberships=memberships,
                              state=not (no_state or emulator), skip_unchanged=skip_unchanged)
        except TalonClassicError as exc:
            raise UsageFailure(str(exc)) from None

        signal.signal(signal.SIGTERM, lambda signum, frame: service.request_stop())
        if source is not None:
            out(schema_line(source) or "")
        out(f"talon-classic serving on {service.url} (spool {spool_path}, "
            f"{service.spool.depth:,} events waiting)")
        sys.stdout.flush()
        try:
            service.serve_forever()  # until SIGTERM or Ctrl-C; then a graceful stop
        finally:
            service.stop()
            out("stopped; events not yet delivered stay in the spool")


def open_memberships(settings: Settings, client: Client, stack: contextlib.ExitStack,
                     emulator: bool) -> MembershipDelivery | None:
    """With ``engageAudiences`` memberships or both: what the worker delivers them with.

    Its state database is the deployment's (:func:`~talon_classic.state.state_file`);
    none with ``--emulator``, which forgets everything when it stops.
    """
    import os
    import sqlite3

    from talon_classic.memberships import MembershipDelivery
    from talon_classic.state import state_file

    if settings.engage_audiences == "attributes":
        return None
    path = None if emulator else os.fspath(state_file(settings.application_domain or ""))
    try:
        delivery = MembershipDelivery.open(client, settings, path)
    except (OSError, sqlite3.Error) as exc:
        raise UsageFailure(f"{path}: cannot open the state database ({exc})") from None
    stack.callback(delivery.close)
    return delivery
