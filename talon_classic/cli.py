"""The ``talon-classic`` command line: thin shells over the library.

Every command parses options, builds library objects and prints; the rules
live in :mod:`talon_classic.transform`, delivery in
:mod:`talon_classic.client` and :mod:`talon_classic.bulk`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import click

from talon_classic import __version__
from talon_classic.exceptions import (
    InputError,
    RetriesExhausted,
    SettingsError,
    TalonClassicError,
)
from talon_classic.reader import STDIN, dumps, loads, read_records
from talon_classic.settings import Settings, load_settings, redact
from talon_classic.transform import Engine

EXIT_OK = 0
EXIT_DEAD_LETTERED = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_INTERRUPTED = 130


def settings_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The settings flags every command shares (file < env < flags)."""
    func = click.option(
        "--custom-attribute",
        "custom_attributes",
        multiple=True,
        metavar="NAME",
        help="Allowlisted attribute (repeatable; replaces the file's list). '*' patterns allowed.",
    )(func)
    func = click.option(
        "--application-domain",
        metavar="URL",
        help="Talon.One deployment URL, e.g. https://mycompany.talon.one "
        "[env TALON_APPLICATION_DOMAIN].",
    )(func)
    func = click.option(
        "--api-key",
        metavar="KEY",
        help="Talon.One Integration API key [env TALON_API_KEY]. Never printed.",
    )(func)
    func = click.option(
        "--settings",
        "settings_path",
        type=click.Path(dir_okay=False),
        metavar="FILE",
        help="Classic destination settings JSON (apiKey, applicationDomain, customAttributes).",
    )(func)
    return func


def build_settings(
    settings_path: str | None,
    api_key: str | None,
    application_domain: str | None,
    custom_attributes: tuple[str, ...],
) -> Settings:
    """Load settings or exit 2 with the one-line SettingsError message."""
    try:
        return load_settings(
            settings_path,
            api_key=api_key,
            application_domain=application_domain,
            custom_attributes=custom_attributes or None,
        )
    except SettingsError as exc:
        fail(str(exc))


def fail(message: str, code: int = EXIT_USAGE) -> None:
    """Print ``Error: message`` on stderr and exit (2: usage or settings)."""
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def check_inputs(inputs: tuple[str, ...]) -> list[str]:
    """Default to stdin, and refuse missing files before anything starts."""
    paths = list(inputs) or [STDIN]
    if paths.count(STDIN) > 1:
        fail("'-' (stdin) can be given only once")
    for path in paths:
        if path != STDIN and not os.path.isfile(path):
            fail(f"{path}: no such file")
    return paths


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="talon-classic")
def main() -> None:
    """Segment identify events -> Talon.One customer profiles.

    Does the job of Segment's classic Talon.One destination: flattens
    traits, maps Engage audiences and computed traits, keeps the
    customAttributes allowlist, and upserts profiles in bulk.
    """


@main.command(short_help="Show what the engine makes of each event; sends nothing.")
@settings_options
@click.argument("inputs", nargs=-1, metavar="[INPUT]...")
def transform(
    settings_path: str | None,
    api_key: str | None,
    application_domain: str | None,
    custom_attributes: tuple[str, ...],
    inputs: tuple[str, ...],
) -> None:
    """Show what the engine makes of each event (JSONL in, JSONL out; sends nothing).

    INPUT is a .jsonl file, a .gz of one, or '-' for stdin (the default).
    One output line per non-blank input line, with its 1-based "line"
    number: the upsert ("integrationId", "attributes", "dropped") or
    "skipped" with a reason code and an "error" in words.
    """
    settings = build_settings(settings_path, api_key, application_domain, custom_attributes)
    engine = Engine(settings.custom_attributes)
    paths = check_inputs(inputs)
    out = sys.stdout
    write = out.write
    try:
        for record in read_records(paths):
            head = {"line": record.line, "input": record.input}
            if record.skipped is not None:
                head["skipped"] = record.skipped
                head["error"] = record.error
            else:
                head.update(engine.transform(record.event).as_dict())
            write(dumps(head) + "\n")
    except InputError as exc:
        fail(str(exc))
    except BrokenPipeError:  # e.g. piped into `head`
        sys.stderr.close()
    out.flush()


def _stderr_warn(message: str) -> None:
    click.echo(message, err=True)


class Progress:
    """A one-line status on stderr, redrawn at most twice a second (TTY only)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._last = 0.0
        self._drawn = False

    def __call__(self, pipeline: Any) -> None:
        now = time.monotonic()
        if not self.enabled or now - self._last < 0.5:
            return
        self._last = now
        s = pipeline.summary
        rate = s.events_read / s.elapsed if s.elapsed > 0 else 0.0
        eta = ""
        source = pipeline.current_input
        if source is not None and source.size and rate > 0:
            done = source.consumed / source.size
            if 0 < done < 1:
                eta = f"  {source.name} {done:.0%}, ETA {s.elapsed * (1 - done) / done:,.0f}s"
        click.echo(
            f"\\r{s.events_read:,} events read  {s.profiles_upserted:,} profiles sent  "
            f"{rate:,.0f} events/s{eta}   ",
            err=True,
            nl=False,
        )
        self._drawn = True

    def close(self) -> None:
        """End the status line so the summary starts on a fresh one."""
        if self._drawn:
            click.echo("", err=True)


@contextlib.contextmanager
def _emulator_for(settings: Settings, rate_limit: float, db: str | None,
                  strict: bool = True) -> Iterator[Any]:
    """A local emulator; ``strict``: its attributes are the allowlist (patterns included)."""
    from talon_classic.emulator import EmulatorConfig, EmulatorServer

    config = EmulatorConfig(api_key=settings.api_key or "emulator-key", rate_limit=rate_limit,
                            db=db, attributes=frozenset(settings.custom_attributes) if strict
                            else None)
    with EmulatorServer(config) as server:
        yield server


def _register_engage_names(engine: Engine, app: Any) -> Callable[[Any], None]:
    """Before each batch, create the Engage attributes met so far in the emulator.

    In Talon.One they are created once by hand; the emulator learns them as
    they appear, so its attribute list stays the allowlist plus Engage's.
    """
    known: set[str] = set()
    base = app.config.attributes or frozenset()

    def before_send(_batch: Any) -> None:
        names = engine.engage_names.copy()  # set.copy is atomic: the reader may be adding
        if names - known:
            known.update(names)
            app.configure(attributes=base | known)

    return before_send


@main.command(short_help="Upsert Talon.One profiles from JSONL identify events.")
@settings_options
@click.argument("inputs", nargs=-1, metavar="INPUT...")
@click.option("--emulator", is_flag=True,
              help="Deliver to a local Talon.One emulator started in-process (no account needed).")
@click.option("--emulator-db", metavar="PATH",
              help="With --emulator: keep its state in this SQLite file to inspect later.")
@click.option("--dry-run", is_flag=True,
              help="Send nothing; write the exact HTTP requests as JSONL (key redacted).")
@click.option("--output", "-o", type=click.Path(dir_okay=False), metavar="FILE",
              help="With --dry-run: write the requests here instead of stdout.")
@click.option("--single", is_flag=True,
              help="One PUT /v2/customer_profiles/{id} per profile (the classic destination's way).")
@click.option("--run-rule-engine", is_flag=True, help="With --single: let Talon.One run its rules.")
@click.option("--concurrency", default=8, show_default=True, type=click.IntRange(1, 64),
              help="Requests in flight at once.")
@click.option("--rate-limit", default=60.0, show_default=True, type=click.FloatRange(0),
              help="Requests per second at most (Talon.One allows about 60); 0 = no limit.")
@click.option("--batch-size", default=1000, show_default=True, type=click.IntRange(1, 1000),
              help="Profiles per bulk request.")
@click.option("--id-prefix", default="", metavar="TEXT", help="Prefix every integrationId.")
@click.option("--dead-letter", type=click.Path(dir_okay=False), metavar="FILE",
              help="Where undeliverable events go [default: <first input>.dead.jsonl].")
@click.option("--dead-letter-skipped", is_flag=True,
              help="Also list skipped events (not identify, no userId, bad JSON) there.")
@click.option("--replay-dead-letters", is_flag=True,
              help="INPUTs are dead-letter files: re-send the original events in them.")
@click.option("--checkpoint", type=click.Path(dir_okay=False), metavar="FILE",
              help="Record acknowledged batches here, for --resume after a crash or Ctrl-C.")
@click.option("--resume", is_flag=True,
              help="Continue the run recorded in --checkpoint without re-sending what was delivered.")
@click.option("--max-line-bytes", default=8 * 1024 * 1024, show_default=True,
              type=click.IntRange(1024), help="Longer lines are skipped as line_too_long.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.option("--quiet", "-q", is_flag=True, help="No progress line and no per-line warnings.")
def identify(
    settings_path: str | None,
    api_key: str | None,
    application_domain: str | None,
    custom_attributes: tuple[str, ...],
    inputs: tuple[str, ...],
    emulator: bool,
    emulator_db: str | None,
    dry_run: bool,
    output: str | None,
    single: bool,
    run_rule_engine: bool,
    concurrency: int,
    rate_limit: float,
    batch_size: int,
    id_prefix: str,
    dead_letter: str | None,
    dead_letter_skipped: bool,
    replay_dead_letters: bool,
    checkpoint: str | None,
    resume: bool,
    max_line_bytes: int,
    as_json: bool,
    quiet: bool,
) -> None:
    """Upsert Talon.One profiles from identify events in JSONL files (bulk, resumable).

    INPUT is a .jsonl/.ndjson file, a .gz of one, or '-' for stdin.
    Exit status: 0 all delivered, 1 some events dead-lettered, 2 usage or
    settings error (nothing sent), 3 stopped by an authentication failure.
    """
    from talon_classic.bulk import Options, Pipeline
    from talon_classic.checkpoint import Checkpoint
    from talon_classic.client import Client
    from talon_classic.deadletter import DeadLetters

    if not inputs:
        fail("give at least one INPUT (a file, or '-' for stdin)")
    if emulator and dry_run:
        fail("--emulator and --dry-run exclude each other")
    if run_rule_engine and not single:
        fail("--run-rule-engine needs --single (bulk updates never run the rule engine)")
    if output and not dry_run:
        fail("--output is only used with --dry-run")
    settings = build_settings(settings_path, api_key, application_domain, custom_attributes)
    paths = check_inputs(inputs)
    source = settings_path or "settings"
    try:
        if dry_run:
            if not settings.application_domain:
                settings.require_delivery(source)
        elif not emulator:
            settings.require_delivery(source)
    except SettingsError as exc:
        fail(str(exc))

    senders = 1 if dry_run else concurrency  # a dry run prints in input order
    first = "stdin" if paths[0] == STDIN else paths[0]
    dead_path = dead_letter or f"{first}.dead.jsonl"
    ckpt = None
    if checkpoint or resume:
        ckpt_path = checkpoint or f"{first}.checkpoint.json"
        fingerprint = {
            "inputs": [
                [p, None if p == STDIN else os.path.getsize(p)] for p in paths
            ],
            "batch_size": batch_size,
            "id_prefix": id_prefix,
            "single": single,
            "concurrency": senders,
        }
        ckpt = Checkpoint(ckpt_path, fingerprint)
        if resume:
            try:
                ckpt.load()
            except SettingsError as exc:
                fail(str(exc))
    try:
        options = Options(
            batch_size=batch_size,
            concurrency=senders,
            id_prefix=id_prefix,
            single=single,
            run_rule_engine=run_rule_engine,
            dead_letter_skipped=dead_letter_skipped,
            max_line_bytes=max_line_bytes,
            replay_dead_letters=replay_dead_letters,
        )
    except ValueError as exc:
        fail(str(exc))

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    progress = Progress(enabled=not quiet and sys.stdout.isatty())
    dead = DeadLetters(dead_path)
    summary = None
    code = EXIT_OK
    with contextlib.ExitStack() as stack:
        if emulator:
            server = stack.enter_context(_emulator_for(settings, rate_limit, emulator_db))
            base_url, key = server.url, server.app.config.api_key
            if not quiet:
                click.echo(f"emulator: delivering to the local Talon.One emulator at {server.url}",
                           err=True)
        else:
            base_url, key = settings.application_domain, settings.api_key or ""
        if dry_run:
            out_stream = (
                stack.enter_context(open(output, "w", encoding="utf-8"))
                if output else sys.stdout
            )
            client = Client.dry_run(base_url, key, out_stream, concurrency=concurrency)
        else:
            client = Client(base_url, key, concurrency=concurrency, rate_limit=rate_limit)
        stack.callback(client.close)
        engine = Engine(settings.custom_attributes)
        pipeline = Pipeline(
            engine,
            client,
            options,
            dead_letters=dead,
            checkpoint=ckpt,
            on_progress=progress,
            warn=(lambda _m: None) if quiet else _stderr_warn,
            before_send=_register_engage_names(engine, server.app) if emulator else None,
        )
        try:
            summary = pipeline.run(paths)
        except KeyboardInterrupt:
            summary = pipeline.summary
            code = EXIT_INTERRUPTED
        except InputError as exc:
            fail(str(exc))
        finally:
            progress.close()
        if emulator and summary is not None and not as_json:
            stats = server.app.stats()
            click.echo(
                f"emulator: {stats['profiles']:,} profiles stored, "
                f"{stats['profile_updates']:,} profile updates"
                + (f"; kept in {emulator_db}: inspect with `talon-classic emulator --db "
                   f"{emulator_db}` and GET /_emulator/profiles" if emulator_db else
                   "; add --emulator-db FILE to keep them and inspect them afterwards"),
                err=True,
            )

    assert summary is not None
    if code == EXIT_OK:
        if pipeline.auth_error is not None:
            code = EXIT_AUTH
        elif summary.dead_lettered:
            code = EXIT_DEAD_LETTERED
    report = summary.as_dict()
    report["dead_letter_file"] = dead_path if dead.count else None
    report["dry_run"] = dry_run
    report["exit_code"] = code
    # with --dry-run and no --output the requests own stdout: the summary goes to stderr
    to_err = dry_run and not output
    if as_json:
        click.echo(dumps(report), err=to_err)
    else:
        text = summary.render()
        if dead.count:
            text += f"\ndead letters in     {dead_path}"
        if dry_run:
            text += "\ndry run: nothing was sent"
        click.echo(text, err=to_err)
    sys.exit(code)


@main.command("check-config", short_help="Validate the settings and test the API key.")
@settings_options
@click.option("--timeout", default=10.0, show_default=True, type=click.FloatRange(0.1),
              help="Seconds to wait for Talon.One.")
def check_config(
    settings_path: str | None,
    api_key: str | None,
    application_domain: str | None,
    custom_attributes: tuple[str, ...],
    timeout: float,
) -> None:
    """Validate the settings and test the API key against the deployment (GET /v2/authping)."""
    from talon_classic.client import Client

    label = settings_path or "settings"
    try:
        settings = load_settings(
            settings_path,
            api_key=api_key,
            application_domain=application_domain,
            custom_attributes=custom_attributes or None,
        )
    except SettingsError as exc:
        click.echo(f"FAIL {exc}")
        sys.exit(1)
    click.echo(f"ok   {label}: settings are valid")
    ok = True
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
    click.echo(f"ok   applicationDomain: {settings.application_domain} is a well-formed deployment URL")
    client = Client(settings.application_domain, settings.api_key, rate_limit=0,
                    connect_timeout=timeout, read_timeout=timeout, max_attempts=1)
    try:
        client.check_auth()
        click.echo(f"ok   apiKey {redact(settings.api_key)}: accepted by "
                   f"{settings.application_domain}/v2/authping")
    except RetriesExhausted as exc:
        ok = False
        problem = (f"answered {exc.status}" if exc.status
                   else f"cannot reach {settings.application_domain}")
        click.echo(f"FAIL applicationDomain: {problem} ({exc})")
    except TalonClassicError as exc:
        ok = False
        click.echo(f"FAIL apiKey {redact(settings.api_key)}: {exc}")
    finally:
        client.close()
    sys.exit(0 if ok else 1)


@main.command(short_help="Run a local Talon.One Integration API emulator.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8321, show_default=True, type=click.IntRange(0, 65535),
              help="Port (0 picks a free one).")
@click.option("--api-key", default="emulator-key", show_default=True, metavar="KEY",
              help="The key clients must send (Authorization: ApiKey-v1 KEY).")
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
def emulator(
    host: str,
    port: int,
    api_key: str,
    attributes: tuple[str, ...],
    attributes_file: str | None,
    db: str | None,
    rate_limit: float,
    latency_ms: float,
    fail_rate: float,
    fail_status: int,
    seed: int | None,
    threads: int,
) -> None:
    """Run a local Talon.One Integration API emulator for trials and tests."""
    from talon_classic.emulator import EmulatorConfig, EmulatorServer, parse_attributes_file

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
    server = EmulatorServer(config, host=host, port=port, threads=threads)
    click.echo(f"Talon.One emulator on {server.url} (API key {redact(api_key)}; "
               f"inspect {server.url}/_emulator/stats); Ctrl-C stops it")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


@main.command(short_help="Stand in for the classic destination over HTTP.")
@settings_options
@click.option("--spool", "spool_path", required=True, metavar="PATH",
              help="SQLite file where accepted events wait for delivery.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535),
              help="Port (0 picks a free one).")
@click.option("--write-key", "write_keys", multiple=True, metavar="KEY",
              help="Accepted Segment write key (repeatable) [env TALON_WRITE_KEYS, comma-separated].")
@click.option("--webhook-secret", metavar="SECRET",
              help="Shared secret of Segment's Webhooks destination (X-Signature) "
              "[env TALON_WEBHOOK_SECRET].")
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
def serve(
    settings_path: str | None,
    api_key: str | None,
    application_domain: str | None,
    custom_attributes: tuple[str, ...],
    spool_path: str,
    host: str,
    port: int,
    write_keys: tuple[str, ...],
    webhook_secret: str | None,
    threads: int,
    max_spool: int,
    linger: float,
    dedupe_hours: float,
    rate_limit: float,
    emulator: bool,
) -> None:
    """Accept Segment events over HTTP (tracking API, webhooks), spool them, deliver them.

    Segment's server libraries work unchanged when pointed at this host
    (e.g. analytics-python's host=http://HOST:PORT). SIGTERM or Ctrl-C:
    stop accepting, finish requests in progress, exit; undelivered events
    stay in the spool for the next start.
    """
    import signal

    from talon_classic.client import Client
    from talon_classic.server import Service

    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        fail("serve needs the 'serve' extra: pip install 'talon-classic[serve]'")

    settings = build_settings(settings_path, api_key, application_domain, custom_attributes)
    keys = list(write_keys) or [
        k.strip() for k in os.environ.get("TALON_WRITE_KEYS", "").split(",") if k.strip()]
    if not keys:
        fail("give at least one --write-key (or TALON_WRITE_KEYS)")
    secret = webhook_secret or os.environ.get("TALON_WEBHOOK_SECRET") or None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    with contextlib.ExitStack() as stack:
        if emulator:
            # the server's worker does not report Engage names: accept every attribute
            server = stack.enter_context(_emulator_for(settings, rate_limit, None, strict=False))
            client = Client(server.url, server.app.config.api_key, rate_limit=rate_limit)
            click.echo(f"emulator: delivering to the local Talon.One emulator at {server.url}")
        else:
            try:
                settings.require_delivery(settings_path or "settings")
            except SettingsError as exc:
                fail(str(exc))
            client = Client.from_settings(settings, rate_limit=rate_limit, concurrency=1)
        stack.callback(client.close)
        service = Service(spool_path, Engine(settings.custom_attributes), client, keys,
                          webhook_secret=secret, host=host, port=port, threads=threads,
                          max_depth=max_spool, linger=linger, dedupe_window=dedupe_hours * 3600)

        signal.signal(signal.SIGTERM, lambda signum, frame: service.request_stop())
        click.echo(f"talon-classic serving on {service.url} (spool {spool_path}, "
                   f"{service.spool.depth:,} events waiting)", err=False)
        sys.stdout.flush()
        try:
            service.serve_forever()  # until SIGTERM or Ctrl-C; then a graceful stop
        finally:
            service.stop()
            click.echo("stopped; events not yet delivered stay in the spool")


@main.group()
def deadletter() -> None:
    """List or re-send events the server's Talon.One rejected."""


@deadletter.command("list")
@click.option("--spool", "spool_path", required=True, metavar="PATH", help="The server's spool.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per dead letter.")
def deadletter_list(spool_path: str, limit: int, as_json: bool) -> None:
    """Show dead letters: the event, why Talon.One refused it, when."""
    from talon_classic.spool import Spool

    if not os.path.exists(spool_path):
        fail(f"{spool_path}: no such spool")
    spool = Spool(spool_path)
    try:
        letters = spool.dead_letters(limit)
        for d in letters:
            event = loads(d.body)
            if as_json:
                click.echo(dumps({"seq": d.seq, "event": event, "reason": d.reason,
                                  "error": d.error, "failed": d.failed}))
            else:
                user = event.get("userId") if isinstance(event, dict) else None
                click.echo(f"{d.seq}\t{user}\t{d.reason}\t{d.error}")
        if not as_json:
            click.echo(f"{spool.dead_count():,} dead letters in {spool_path}", err=True)
    finally:
        spool.close()


@deadletter.command("retry")
@click.option("--spool", "spool_path", required=True, metavar="PATH", help="The server's spool.")
def deadletter_retry(spool_path: str) -> None:
    """Put every dead letter back in the queue, after fixing the cause in Talon.One."""
    from talon_classic.spool import Spool

    if not os.path.exists(spool_path):
        fail(f"{spool_path}: no such spool")
    spool = Spool(spool_path)
    try:
        moved = spool.retry_dead()
    finally:
        spool.close()
    click.echo(f"{moved:,} dead letters queued again; a running server delivers them shortly")


if __name__ == "__main__":  # pragma: no cover
    main()
