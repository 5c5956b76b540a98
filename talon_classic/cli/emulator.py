"""``talon-classic emulator``: a local Talon.One Integration API for trials and tests."""

from __future__ import annotations

import click

from talon_classic.cli.options import UsageFailure, secret, server_options
from talon_classic.exceptions import TalonClassicError
from talon_classic.settings import redact

ENV_EMULATOR_KEY = "TALON_EMULATOR_API_KEY"


@click.command(short_help="Run a local Talon.One Integration API emulator.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8321, show_default=True, type=click.IntRange(0, 65535),
              help="Port (0 picks a free one).")
@click.option("--api-key", default="emulator-key", show_default=True, metavar="KEY",
              envvar=ENV_EMULATOR_KEY, show_envvar=True,
              help="The key clients must send (Authorization: ApiKey-v1 KEY); prefer the "
              "variable (a flag shows in `ps`).")
@click.option("--attribute", "attributes", multiple=True, metavar="NAME",
              help="A customer-profile attribute that exists (repeatable). With none, "
              "every name is accepted.")
@click.option("--attributes-file", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help="Attribute names, one per line or a JSON array.")
@click.option("--db", metavar="PATH", help="Keep profiles in this SQLite file (else in memory).")
@click.option("--rate-limit", default=60.0, show_default=True, type=click.FloatRange(0),
              help="Requests per second before answering 429 (0 = no limit).")
@click.option("--latency-ms", default=0.0, show_default=True, type=click.FloatRange(0),
              help="Delay added to every request.")
@click.option("--fail-rate", default=0.0, show_default=True, type=click.FloatRange(0, 1),
              help="Fraction of requests answered with --fail-status.")
@click.option("--fail-status", default=503, show_default=True, type=click.IntRange(400, 599),
              help="Status for injected failures.")
@click.option("--seed", type=int, help="Seed for the injected failures.")
@click.option("--threads", default=8, show_default=True, type=click.IntRange(1, 256),
              help="Server threads.")
@server_options
def emulator(host: str, port: int, api_key: str, attributes: tuple[str, ...],
             attributes_file: str | None, db: str | None, rate_limit: float, latency_ms: float,
             fail_rate: float, fail_status: int, seed: int | None, threads: int,
             connection_limit: int | None, idle_timeout: float) -> None:
    """Run a local Talon.One Integration API emulator for trials and tests.

    Exit status: 0 after Ctrl-C, 2 when it cannot start (bad options, the
    port is in use).
    """
    from talon_classic.emulator import EmulatorConfig, EmulatorServer, parse_attributes_file

    api_key = secret(api_key, "apiKey", "api_key", ENV_EMULATOR_KEY)
    try:
        names = set(attributes)
        if attributes_file:
            names |= parse_attributes_file(attributes_file)
        config = EmulatorConfig(
            api_key=api_key,
            attributes=frozenset(names) if names else None,
            db=db,
            rate_limit=rate_limit,
            latency_ms=latency_ms,
            fail_rate=fail_rate,
            fail_status=fail_status,
            seed=seed,
        )
        server = EmulatorServer(config, host=host, port=port, threads=threads,
                                connection_limit=connection_limit, idle_timeout=idle_timeout)
    except (TalonClassicError, ValueError) as exc:
        raise UsageFailure(str(exc)) from None
    click.echo(f"Talon.One emulator on {server.url} (API key {redact(api_key)}; "
               f"inspect {server.url}/_emulator/stats); Ctrl-C stops it")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
