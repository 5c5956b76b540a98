"""``talon-classic emulator``: a local, strict Talon.One (Integration and Management API)."""

from __future__ import annotations

import click

from talon_classic.cli.options import (
    UsageFailure,
    out,
    secret,
    server_options,
    warn,
)
from talon_classic.exceptions import TalonClassicError
from talon_classic.settings import redact

ENV_EMULATOR_KEY = "TALON_EMULATOR_API_KEY"
ENV_EMULATOR_MANAGEMENT_KEY = "TALON_EMULATOR_MANAGEMENT_KEY"


def _schema(attributes: tuple[str, ...], attributes_file: str | None) -> dict[str, str | None]:
    """The attributes of ``--attributes-file`` then ``--attribute`` (a flag's type wins)."""
    from talon_classic.emulator.attributes import parse_attribute_spec, parse_attributes_file
    from talon_classic.emulator.types import TYPES

    schema = parse_attributes_file(attributes_file) if attributes_file else {}
    for spec in attributes:
        try:
            name, type_ = parse_attribute_spec(spec)
        except ValueError as exc:
            raise UsageFailure(f"--attribute {exc}") from None
        if "*" in name and type_ is not None:
            raise UsageFailure(f"--attribute {spec!r}: pattern {name!r} cannot have a type")
        schema[name] = type_ if type_ is not None else schema.get(name)
    for name, type_ in sorted(schema.items()):
        if type_ is not None and type_ not in TYPES:
            warn(f"warning: attribute {name!r} has type {type_!r}, which Talon.One does not "
                 "have: any value is accepted for it")
    return schema


@click.command(short_help="Run a local Talon.One emulator (Integration and Management API).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8321, show_default=True, type=click.IntRange(0, 65535),
              help="Port (0 picks a free one).")
@click.option("--api-key", default="emulator-key", show_default=True, metavar="KEY",
              envvar=ENV_EMULATOR_KEY, show_envvar=True,
              help="The key clients must send (Authorization: ApiKey-v1 KEY); prefer the "
              "variable (a flag shows in `ps`).")
@click.option("--management-key", default="emulator-management-key", show_default=True,
              metavar="KEY", envvar=ENV_EMULATOR_MANAGEMENT_KEY, show_envvar=True,
              help="The Management API key clients must send (Authorization: "
              "ManagementKey-v1 KEY); prefer the variable (a flag shows in `ps`).")
@click.option("--attribute", "attributes", multiple=True, metavar="NAME[:TYPE]",
              help="A customer-profile attribute that exists, with its Talon.One type "
              "(number, time, (list string)...) if given (repeatable). With none and no "
              "--attributes-file, every name and value is accepted.")
@click.option("--attributes-file", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help="The attributes that exist: names (NAME or NAME:TYPE one per line, or a JSON "
              "array), a saved GET /v1/attributes answer (what `schema pull` writes), or a "
              "JSON list of {\"name\", \"type\"}.")
@click.option("--db", metavar="PATH",
              help="Keep profiles and audiences in this SQLite file (else in memory).")
@click.option("--rate-limit", default=60.0, show_default=True, type=click.FloatRange(0),
              help="Integration API (/v2) requests per second before answering 429 "
              "(0 = no limit).")
@click.option("--management-rate-limit", default=3.0, show_default=True,
              type=click.FloatRange(0),
              help="Management API (/v1) requests per second before answering 429 "
              "(0 = no limit).")
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
def emulator(host: str, port: int, api_key: str, management_key: str,
             attributes: tuple[str, ...], attributes_file: str | None, db: str | None,
             rate_limit: float, management_rate_limit: float, latency_ms: float,
             fail_rate: float, fail_status: int, seed: int | None, threads: int,
             connection_limit: int | None, idle_timeout: float) -> None:
    """Run a local Talon.One emulator for trials and tests.

    It serves the Integration API (profiles, audiences) under the API key and
    the Management API (attributes, audiences) under the management key, and
    refuses what Talon.One would: attributes that do not exist, values of the
    wrong type.

    Exit status: 0 after Ctrl-C, 2 when it cannot start (bad options, the
    port is in use).
    """
    from talon_classic.emulator import EmulatorConfig, EmulatorServer

    api_key = secret(api_key, "apiKey", "api_key", ENV_EMULATOR_KEY)
    management_key = secret(management_key, "managementKey", "management_key",
                            ENV_EMULATOR_MANAGEMENT_KEY)
    try:
        schema = _schema(attributes, attributes_file)
        config = EmulatorConfig(
            api_key=api_key,
            management_key=management_key,
            attributes=frozenset(schema) if schema else None,
            attribute_types={name: type_ for name, type_ in schema.items() if type_},
            db=db,
            rate_limit=rate_limit,
            management_rate_limit=management_rate_limit,
            latency_ms=latency_ms,
            fail_rate=fail_rate,
            fail_status=fail_status,
            seed=seed,
        )
        server = EmulatorServer(config, host=host, port=port, threads=threads,
                                connection_limit=connection_limit, idle_timeout=idle_timeout)
    except (TalonClassicError, ValueError) as exc:
        raise UsageFailure(str(exc)) from None
    out(f"Talon.One emulator on {server.url} (API key {redact(api_key)}, management "
        f"key {redact(management_key)}; inspect {server.url}/_emulator/stats); Ctrl-C "
        "stops it")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
