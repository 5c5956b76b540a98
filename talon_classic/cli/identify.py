"""``talon-classic identify``: bulk upserts from JSONL files, resumable.

The command is a shell over :class:`talon_classic.bulk.Pipeline`: this
module turns options into a run (:func:`plan_run`, which also continues a
checkpointed run), builds the client (:func:`open_client`), picks the exit
status (:func:`exit_code`) and prints the summary (:func:`report`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

import click

from talon_classic.checkpoint import (
    BATCH_OPTIONS,
    Checkpoint,
    differences,
    fingerprint,
    input_identity,
)
from talon_classic.cli.options import (
    EXIT_AUTH,
    EXIT_DEAD_LETTERED,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    SettingsArgs,
    UsageFailure,
    check_inputs,
    given,
    settings_options,
    warn,
)
from talon_classic.cli.transform import silence_stdout
from talon_classic.exceptions import CheckpointError, InputError, LedgerError, SettingsError
from talon_classic.files import open_private
from talon_classic.jsonio import dumps
from talon_classic.reader import STDIN
from talon_classic.settings import Settings
from talon_classic.transform import Engine

if TYPE_CHECKING:
    from talon_classic.bulk import Batch, Pipeline
    from talon_classic.client import Client
    from talon_classic.emulator import Emulator, EmulatorServer
    from talon_classic.ledger import Ledger
    from talon_classic.summary import Summary

#: Options a checkpoint records, so that a bare --resume continues the run as it was.
RECORDED = (*BATCH_OPTIONS, "run_rule_engine", "concurrency", "rate_limit", "dead_letter",
            "dead_letter_skipped", "settings_path", "emulator", "emulator_db",
            "state", "no_state", "skip_unchanged", "read_timeout")


@dataclass
class Run:
    """Everything one ``identify`` invocation decided before sending."""

    options: dict[str, Any]
    settings: Settings
    paths: list[str]
    dead_letter: str
    checkpoint: Checkpoint | None


class Progress:
    """A one-line status on stderr, redrawn at most twice a second (TTY only)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._last = 0.0
        self._drawn = False

    def __call__(self, pipeline: Pipeline) -> None:
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
            f"\r{s.events_read:,} events read  {s.profiles_upserted:,} profiles sent  "
            f"{rate:,.0f} events/s{eta}   ",
            err=True,
            nl=False,
        )
        self._drawn = True

    def close(self) -> None:
        """End the status line so the summary starts on a fresh one."""
        if self._drawn:
            click.echo("", err=True)


class RequestOutput:
    """Where a dry run writes its requests; a closed pipe (``| head``) stops the run quietly."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.closed_pipe = False
        self.on_closed: Callable[[], None] = lambda: None

    def write(self, text: str) -> int:
        """Write, or stop the run if the reader went away."""
        try:
            return self.stream.write(text)
        except BrokenPipeError:
            self._closed()
            raise

    def flush(self) -> None:
        """Flush, or stop the run if the reader went away."""
        try:
            self.stream.flush()
        except BrokenPipeError:
            self._closed()
            raise

    def _closed(self) -> None:
        if not self.closed_pipe:
            self.closed_pipe = True
            self.on_closed()


@contextlib.contextmanager
def emulator_for(settings: Settings, rate_limit: float, db: str | None,
                 strict: bool = True) -> Iterator[EmulatorServer]:
    """A local emulator; ``strict``: its attributes are the allowlist (patterns included)."""
    from talon_classic.emulator import EmulatorConfig, EmulatorServer

    config = EmulatorConfig(api_key=settings.api_key or "emulator-key", rate_limit=rate_limit,
                            db=db, attributes=frozenset(settings.custom_attributes) if strict
                            else None)
    with EmulatorServer(config) as server:
        yield server


def register_engage_names(engine: Engine, app: Emulator) -> Callable[[Batch], None]:
    """Before each batch, create the Engage attributes met so far in the emulator.

    In Talon.One they are created once by hand; the emulator learns them as
    they appear, so its attribute list stays the allowlist plus Engage's.
    """
    known: set[str] = set()
    base = app.config.attributes or frozenset()

    def before_send(_batch: Batch) -> None:
        names = engine.engage_names.copy()  # set.copy is atomic: the reader may be adding
        if names - known:
            known.update(names)
            app.configure(attributes=base | known)

    return before_send


def check_flags(opts: dict[str, Any]) -> None:
    """Refuse option combinations that cannot work, before anything is read or sent."""
    if opts["emulator"] and opts["dry_run"]:
        raise UsageFailure("--emulator and --dry-run exclude each other")
    if opts["run_rule_engine"] and not opts["single"]:
        raise UsageFailure("--run-rule-engine needs --single (bulk updates never run the rule "
                           "engine)")
    if opts["output"] and not opts["dry_run"]:
        raise UsageFailure("--output is only used with --dry-run")
    if opts["emulator_db"] and not opts["emulator"]:
        raise UsageFailure("--emulator-db is only used with --emulator")
    if opts["state"] and opts["no_state"]:
        raise UsageFailure("--state and --no-state exclude each other")
    if opts["emulator"] and opts["state"] and not opts["emulator_db"]:
        raise UsageFailure("--state needs --emulator-db with --emulator: the emulator forgets "
                           "everything when it stops, its state file must too")
    if opts["skip_unchanged"] and (opts["no_state"] or opts["emulator"] and not opts["emulator_db"]):
        raise UsageFailure("--skip-unchanged compares with the state file, and this run keeps "
                           "none (--no-state, or --emulator without --emulator-db)")


def open_state(run: Run, stack: contextlib.ExitStack) -> tuple[Ledger | None, str | None, str]:
    """The ordering ledger of this run's deployment and id prefix, its path, and a note.

    ``--state FILE``, else one file per deployment and id prefix in the state
    directory. None with ``--no-state``, for ``--emulator`` without
    ``--emulator-db`` (the emulator forgets too), and for a dry run when the
    file does not exist (a dry run reads it, never writes it).
    """
    from talon_classic.ledger import Ledger
    from talon_classic.state import ensure_dir, state_dir, state_file

    opts = run.options
    if opts["no_state"]:
        return None, None, "--no-state"
    if opts["emulator"]:
        if not opts["emulator_db"]:
            return None, None, "--emulator without --emulator-db forgets everything"
        deployment = "emulator:" + os.path.abspath(opts["emulator_db"])
    else:
        deployment = (run.settings.application_domain or "").rstrip("/")
    if not deployment:
        return None, None, "no application domain"
    path = opts["state"] or os.fspath(state_file(deployment, opts["id_prefix"]))
    if opts["dry_run"] and not os.path.exists(path):
        return None, path, "dry run: it does not exist yet"
    try:
        if not opts["state"] and not opts["dry_run"]:
            ensure_dir(state_dir())
        ledger = Ledger(path, deployment, opts["id_prefix"], readonly=opts["dry_run"],
                        exclusive=not opts["dry_run"], background=True)
    except (LedgerError, OSError) as exc:
        raise UsageFailure(str(exc) if isinstance(exc, LedgerError) else
                           f"{path}: cannot create the state directory: {exc}") from None
    stack.callback(ledger.close)
    return ledger, path, "dry run: read, not written" if opts["dry_run"] else ""


def _resumed_options(ckpt: Checkpoint, opts: dict[str, Any]) -> dict[str, Any]:
    """The recorded run's options, with what may change (concurrency, rate limit...) as given.

    An option that shapes batches and was given with another value is refused.
    """
    recorded = ckpt.options
    changed = [
        f"{flag} {opts[name]!r} (the run used {recorded.get(name)!r})"
        for name, flag in BATCH_OPTIONS.items()
        if given(name) and opts[name] != recorded.get(name)
    ]
    if changed:
        raise UsageFailure(f"{ckpt.path}: cannot resume with {', '.join(changed)}: these decide "
                           "the batches; leave them out to continue the recorded run, or delete "
                           f"{ckpt.path} to start over")
    merged = dict(opts)
    for name in RECORDED:
        if name in recorded and not given(name):
            merged[name] = recorded[name]
    return merged


def plan_run(settings_args: SettingsArgs, inputs: tuple[str, ...],
             opts: dict[str, Any]) -> Run:
    """Check the options, continue a recorded run on --resume, load settings, fingerprint inputs."""
    if not inputs:
        raise UsageFailure("give at least one INPUT (a file, or '-' for stdin)")
    paths = check_inputs(inputs)
    first = "stdin" if paths[0] == STDIN else paths[0]
    ckpt_path = opts["checkpoint"] or (f"{first}.checkpoint.json" if opts["resume"] else None)
    if ckpt_path and STDIN in paths:
        raise UsageFailure("--checkpoint and --resume need input files: stdin cannot be read "
                           "again, so a resumed run could not rebuild its batches")
    recorded = None
    opts["settings_path"] = settings_args.path
    if opts["resume"]:
        try:
            recorded = Checkpoint.read(ckpt_path or "")
        except CheckpointError as exc:
            raise UsageFailure(str(exc)) from None
        opts = _resumed_options(recorded, opts)
    check_flags(opts)
    settings = settings_args.load(opts["settings_path"])
    try:
        if not opts["emulator"] and (not opts["dry_run"] or not settings.application_domain):
            settings.require_delivery(settings_args.label)
    except SettingsError as exc:
        raise UsageFailure(str(exc)) from None
    dead = opts["dead_letter"] or f"{first}.dead.jsonl"
    opts["dead_letter"] = dead
    ckpt = None
    if ckpt_path:
        target = ("emulator:" + (opts["emulator_db"] or "memory") if opts["emulator"]
                  else settings.application_domain or "")
        try:
            current = fingerprint(input_identity(paths), opts, target)
        except OSError as exc:
            raise UsageFailure(f"cannot read an input to fingerprint it: {exc}") from None
        if recorded is not None:
            changes = differences(recorded.fingerprint, current)
            if changes:
                raise UsageFailure(f"{ckpt_path}: cannot resume: {'; '.join(changes)} differ from "
                                   f"the recorded run; delete {ckpt_path} to start over")
            ckpt = recorded
            ckpt.options = {name: opts[name] for name in RECORDED}
        else:
            ckpt = Checkpoint(ckpt_path, current, {name: opts[name] for name in RECORDED})
        try:
            ckpt.save()
        except OSError as exc:
            raise UsageFailure(f"{ckpt_path}: cannot write the checkpoint: "
                               f"{exc.strerror or exc}") from None
    return Run(opts, settings, paths, dead, ckpt)


def open_client(run: Run, stack: contextlib.ExitStack, output: RequestOutput | None,
                quiet: bool) -> tuple[Client, EmulatorServer | None]:
    """The client this run delivers with: to Talon.One, to an in-process emulator, or a dry run."""
    from talon_classic.client import Client

    opts = run.options
    server = None
    if opts["emulator"]:
        server = stack.enter_context(emulator_for(run.settings, opts["rate_limit"],
                                                  opts["emulator_db"]))
        base_url, key = server.url, server.app.config.api_key
        if not quiet:
            warn(f"emulator: delivering to the local Talon.One emulator at {server.url}")
    else:
        base_url, key = run.settings.application_domain or "", run.settings.api_key or ""
    if output is not None:
        client = Client.dry_run(base_url, key, output, concurrency=1)
    else:
        client = Client(base_url, key, concurrency=opts["concurrency"],
                        rate_limit=opts["rate_limit"], read_timeout=opts["read_timeout"])
    stack.callback(client.close)
    return client, server


def exit_code(pipeline: Pipeline, summary: Summary, interrupted: bool) -> int:
    """130 interrupted, 3 authentication failure, 4 an unexpected error, 1 dead letters, else 0."""
    if interrupted:
        return EXIT_INTERRUPTED
    if pipeline.auth_error is not None:
        return EXIT_AUTH
    if pipeline.internal_error is not None or pipeline.state_error is not None:
        return EXIT_INTERNAL
    if summary.dead_lettered:
        return EXIT_DEAD_LETTERED
    return EXIT_OK


def report(summary: Summary, code: int, run: Run, as_json: bool, internal: str | None,
           stats: dict[str, Any] | None, state_error: str | None = None) -> None:
    """Print the summary; with ``--dry-run`` and no ``--output`` it goes to stderr."""
    opts = run.options
    to_err = opts["dry_run"] and not opts["output"]
    summary.dead_letter_file = run.dead_letter
    if as_json:
        data = summary.as_dict()
        data["dry_run"] = opts["dry_run"]
        data["exit_code"] = code
        click.echo(dumps(data), err=to_err)
        return
    if stats is not None:
        db = opts["emulator_db"]
        warn(f"emulator: {stats['profiles']:,} profiles stored, "
             f"{stats['profile_updates']:,} profile updates"
             + (f"; kept in {db}: inspect with `talon-classic emulator --db {db}` and "
                "GET /_emulator/profiles" if db else
                "; add --emulator-db FILE to keep them and inspect them afterwards"))
    text = summary.render()
    if internal:
        text += f"\nfirst unexpected error: {internal}"
    if state_error:
        text += f"\nstate file error: {state_error}"
    if opts["dry_run"]:
        text += "\ndry run: nothing was sent"
    click.echo(text, err=to_err)


@click.command(short_help="Upsert Talon.One profiles from JSONL identify events.")
@settings_options
@click.argument("inputs", nargs=-1, metavar="INPUT...")
@click.option("--emulator", is_flag=True,
              help="Deliver to a local Talon.One emulator started in-process (no account needed).")
@click.option("--emulator-db", metavar="PATH",
              help="With --emulator: keep its state in this SQLite file to inspect later.")
@click.option("--dry-run", is_flag=True,
              help="Send nothing; write the exact HTTP requests as JSONL (key redacted).")
@click.option("--output", "-o", type=click.Path(dir_okay=False), metavar="FILE",
              help="With --dry-run: write the requests here (created 0600) instead of stdout.")
@click.option("--single", is_flag=True,
              help="One PUT /v2/customer_profiles/{id} per profile (the classic destination's way).")
@click.option("--run-rule-engine", is_flag=True, help="With --single: let Talon.One run its rules.")
@click.option("--concurrency", default=8, show_default=True, type=click.IntRange(1, 64),
              help="Requests in flight at once (may change on --resume).")
@click.option("--rate-limit", default=60.0, show_default=True, type=click.FloatRange(0),
              help="Requests per second at most (Talon.One allows about 60); 0 = no limit "
              "(may change on --resume).")
@click.option("--batch-size", default=1000, show_default=True, type=click.IntRange(1, 1000),
              help="Profiles per bulk request.")
@click.option("--id-prefix", default="", metavar="TEXT", help="Prefix every integrationId.")
@click.option("--dead-letter", type=click.Path(dir_okay=False), metavar="FILE",
              help="Where undeliverable events go, appended to, created 0600 "
              "[default: <first input>.dead.jsonl].")
@click.option("--dead-letter-skipped", is_flag=True,
              help="Also list skipped events (not identify, no userId, bad JSON) there.")
@click.option("--replay-dead-letters", is_flag=True,
              help="INPUTs are dead-letter files: re-send the original events in them.")
@click.option("--checkpoint", type=click.Path(dir_okay=False), metavar="FILE",
              help="Record the run and its acknowledged batches here, for --resume after a "
              "crash or Ctrl-C.")
@click.option("--resume", is_flag=True,
              help="Continue the run recorded in --checkpoint [default: <first input>"
              ".checkpoint.json], with its options, without re-sending what was delivered.")
@click.option("--state", type=click.Path(dir_okay=False, readable=False), metavar="FILE",
              help="The ordering ledger: what Talon.One acknowledged, so no run, replay or "
              "resume sends an older value over a newer one [default: one file per "
              "deployment and id prefix in $XDG_STATE_HOME/talon-classic/].")
@click.option("--no-state", is_flag=True,
              help="Keep no ledger: newest-wins holds within this run only.")
@click.option("--skip-unchanged", is_flag=True,
              help="Do not send values equal to what Talon.One acknowledged last (off by "
              "default: the profile may have been edited in Talon.One since). Compares "
              "with values sent with this option (they keep a digest).")
@click.option("--read-timeout", default=30.0, show_default=True, metavar="SECONDS",
              type=click.FloatRange(0.1), help="Wait this long for Talon.One's answer; a "
              "request that timed out is repaired twice this long after it.")
@click.option("--max-line-bytes", default=8 * 1024 * 1024, show_default=True,
              type=click.IntRange(1024), help="Longer lines are skipped as line_too_long.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.option("--quiet", "-q", is_flag=True, help="No progress line and no per-line warnings.")
def identify(settings_args: SettingsArgs, inputs: tuple[str, ...], as_json: bool, quiet: bool,
             **options: Any) -> None:
    """Upsert Talon.One profiles from identify events in JSONL files (bulk, resumable).

    INPUT is a .jsonl/.ndjson file, a .gz of one, or '-' for stdin.

    Exit status: 0 all delivered (or a dry run's reader closed the output),
    1 some events dead-lettered, 2 usage or settings error (nothing sent),
    3 stopped by an authentication failure, 4 an unexpected error (its
    events are dead-lettered) or the state file failed, 130 interrupted (Ctrl-C).
    """
    from talon_classic.bulk import Options, Pipeline
    from talon_classic.deadletter_file import DeadLetters

    run = plan_run(settings_args, inputs, options)
    opts = run.options
    pipeline_options = Options(
        batch_size=opts["batch_size"],
        concurrency=1 if opts["dry_run"] else opts["concurrency"],  # a dry run prints in order
        id_prefix=opts["id_prefix"],
        single=opts["single"],
        run_rule_engine=opts["run_rule_engine"],
        dead_letter_skipped=opts["dead_letter_skipped"],
        max_line_bytes=opts["max_line_bytes"],
        replay_dead_letters=opts["replay_dead_letters"],
        skip_unchanged=opts["skip_unchanged"],  # off below when no state file exists yet
    )
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    progress = Progress(enabled=not quiet and sys.stdout.isatty())
    interrupted = False
    stats = None
    with contextlib.ExitStack() as stack:
        output = None
        if opts["dry_run"]:
            try:
                stream = (stack.enter_context(open_private(opts["output"]))
                          if opts["output"] else sys.stdout)
            except OSError as exc:
                raise UsageFailure(f"{opts['output']}: cannot write: {exc.strerror}") from None
            output = RequestOutput(stream)
        client, server = open_client(run, stack, output, quiet)
        ledger, state_path, state_note = open_state(run, stack)
        if ledger is None:  # a dry run before any state file: nothing to compare with
            pipeline_options.skip_unchanged = False
        engine = Engine(run.settings.custom_attributes)
        pipeline = Pipeline(
            engine,
            client,
            pipeline_options,
            dead_letters=DeadLetters(run.dead_letter),
            checkpoint=run.checkpoint,
            on_progress=progress,
            warn=(lambda _m: None) if quiet else warn,
            before_send=register_engage_names(engine, server.app) if server else None,
            ledger=ledger,
        )
        pipeline.summary.state_file, pipeline.summary.state_note = state_path, state_note
        if output is not None:
            output.on_closed = lambda: pipeline.stop("the output was closed")
        try:
            summary = pipeline.run(run.paths)
        except KeyboardInterrupt:
            summary = pipeline.summary
            interrupted = True
        except InputError as exc:
            raise UsageFailure(str(exc)) from None
        finally:
            progress.close()
        if output is not None and output.closed_pipe:
            silence_stdout()  # like `head` closing a pipe: no summary, no traceback
            sys.exit(EXIT_OK)
        if server is not None:
            stats = server.app.stats()
    code = exit_code(pipeline, summary, interrupted)
    report(summary, code, run, as_json, pipeline.internal_error, stats, pipeline.state_error)
    sys.exit(code)
