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
import sqlite3
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from talon_classic.checkpoint import (
    BATCH_OPTIONS,
    MODE_OPTIONS,
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
    RequestOutput,
    SchemaArgs,
    SettingsArgs,
    UsageFailure,
    check_inputs,
    engage_option,
    given,
    ledger_options,
    load_schema,
    out,
    run_interruptible,
    schema_line,
    schema_options,
    settings_options,
    warn,
)
from talon_classic.cli.progress import StatusLine, input_eta
from talon_classic.deadletter_file import DeadLetters
from talon_classic.exceptions import (
    CheckpointError,
    CompactError,
    InputError,
    LedgerError,
    MissingDependency,
    SettingsError,
)
from talon_classic.jsonio import dumps
from talon_classic.reader import STDIN
from talon_classic.settings import Settings
from talon_classic.transform import Engine

if TYPE_CHECKING:
    from talon_classic.bulk import Batch, Pipeline
    from talon_classic.client import Client
    from talon_classic.emulator import Emulator, EmulatorServer
    from talon_classic.ledger import Ledger
    from talon_classic.memberships import MembershipDelivery
    from talon_classic.schema import Schema
    from talon_classic.schemacache import SchemaSource
    from talon_classic.summary import Summary

#: Options a checkpoint records, so that a bare --resume continues the run as it was.
RECORDED = (*BATCH_OPTIONS, *MODE_OPTIONS, "run_rule_engine", "concurrency", "workers", "rate_limit",
            "dead_letter", "dead_letter_skipped", "settings_path", "emulator", "emulator_db",
            "schema", "state", "no_state", "skip_unchanged", "read_timeout")


WORKERS_HELP = ("Processes that parse and transform events while this one reads, merges and "
                "sends; 1 does everything in this process, the default because more cost about "
                "25% more CPU per event and pay off only on idle cores (may change on --resume).")


@dataclass
class Run:
    """Everything one ``identify`` invocation decided before sending."""

    options: dict[str, Any]
    settings: Settings
    paths: list[str]
    dead_letter: str
    checkpoint: Checkpoint | None
    #: The attribute schema the run types with (None: nothing typed).
    schema: SchemaSource | None = None


class Progress(StatusLine["Pipeline"]):
    """The run's status line: events read and profiles sent, their rate, the input's ETA."""

    def text(self, pipeline: Pipeline) -> str:
        s = pipeline.summary
        rate = s.events_read / s.elapsed if s.elapsed > 0 else 0.0
        return (f"{s.events_read:,} events read  {s.profiles_upserted:,} profiles sent  "
                f"{rate:,.0f} events/s{input_eta(pipeline.current_input, s.elapsed, rate)}")


@contextlib.contextmanager
def emulator_for(settings: Settings, rate_limit: float, db: str | None,
                 strict: bool = True, schema: Schema | None = None
                 ) -> Iterator[EmulatorServer]:
    """A local emulator as strict as Talon.One would be for these settings.

    ``strict``: its attributes are the allowlist (patterns included), else any.
    With ``schema`` they are typed, and they are the schema's allowlisted
    attributes (``strict``) or all of its attributes, as in Talon.One.
    """
    from talon_classic.emulator import EmulatorConfig, EmulatorServer

    attributes = frozenset(settings.custom_attributes) if strict else None
    types: dict[str, str] = {}
    if schema is not None:
        types = {name: kind for name, kind in schema.items() if "*" not in name}
        allowed = Engine(settings.custom_attributes).allowed
        attributes = frozenset(n for n in types if allowed(n)) if strict else frozenset(types)
    config = EmulatorConfig(api_key=settings.api_key or "emulator-key", rate_limit=rate_limit,
                            db=db, attributes=attributes, attribute_types=types)
    with EmulatorServer(config) as server:
        yield server


def register_engage_names(engine: Engine, app: Emulator) -> Callable[[Batch], None]:
    """Before each batch, create the Engage attributes met so far in the emulator.

    In Talon.One they are created once by hand; the emulator learns them as
    they appear, so its attribute list stays the allowlist plus Engage's (with a
    schema, only those the schema has: the others never exist in Talon.One).
    """
    known: set[str] = set()
    base = app.config.attributes or frozenset()
    schema = engine.schema

    def before_send(_batch: Batch) -> None:
        names = engine.engage_names.copy()  # set.copy is atomic: the reader may be adding
        if schema is not None:
            names = {name for name in names if name in schema}
        if names - known:
            known.update(names)
            app.configure(attributes=base | known)

    return before_send


def register_profile_names(app: Emulator) -> Callable[[Batch], None]:
    """With ``--profiles`` (or ``--compact``): the emulator learns each batch's attribute names.

    Compacted profiles hold only what passed the allowlist, plus Engage's
    attributes, which a streaming run registers as the engine meets them;
    here the engine does not run, so the batch tells.
    """
    known: set[str] = set(app.config.attributes or ())

    def before_send(batch: Batch) -> None:
        names = {name for p in batch.profiles for name in p["attributes"]} - known
        if names:
            known.update(names)
            app.configure(attributes=frozenset(known))

    return before_send


def check_flags(opts: dict[str, Any]) -> None:
    """Refuse option combinations that cannot work, before anything is read or sent."""
    if opts.get("workers") is not None and opts["workers"] < 1:
        raise UsageFailure(f"--workers is {opts['workers']}; give 1 (everything in this "
                           "process) or more (processes that parse and transform)")
    if opts["emulator"] and opts["dry_run"]:
        raise UsageFailure("--emulator and --dry-run exclude each other")
    if opts["run_rule_engine"] and not opts["single"]:
        raise UsageFailure("--run-rule-engine needs --single (bulk updates never run the rule "
                           "engine)")
    if opts["output"] and not opts["dry_run"]:
        raise UsageFailure("--output is only used with --dry-run")
    if opts["emulator_db"] and not opts["emulator"]:
        raise UsageFailure("--emulator-db is only used with --emulator")
    if opts["compact"] and (opts["profiles"] or opts["replay_dead_letters"]):
        raise UsageFailure("--compact takes events; --profiles and --replay-dead-letters "
                           "inputs are sent without it")
    if opts["compact"] and opts["dead_letter_skipped"]:
        raise UsageFailure("--dead-letter-skipped lists skipped events, which --compact does "
                           "not keep (it counts them); run without --compact to list them")
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
        for name, flag in {**BATCH_OPTIONS, **MODE_OPTIONS}.items()
        if given(name) and opts[name] != recorded.get(name, False if name in MODE_OPTIONS else None)
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
    if opts["profiles"]:  # a damaged Parquet file is refused before anything is sent
        from talon_classic.compact.profiles import check_parquet_inputs

        try:
            check_parquet_inputs(paths)
        except (InputError, MissingDependency) as exc:
            raise UsageFailure(str(exc)) from None
    settings = settings_args.load(opts["settings_path"])
    opts["engage_audiences"] = settings.engage_audiences  # tracks become profiles or not
    try:
        if not opts["emulator"] and (not opts["dry_run"] or not settings.application_domain):
            settings.require_delivery(settings_args.label)
    except SettingsError as exc:
        raise UsageFailure(str(exc)) from None
    dead = opts["dead_letter"] or f"{first}.dead.jsonl"
    opts["dead_letter"] = dead
    problem = None if opts["dry_run"] else DeadLetters(dead).problem()
    if problem is not None:  # found now, not when the first event fails
        raise UsageFailure(problem)
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


def compacted(run: Run, stack: contextlib.ExitStack, quiet: bool, engine: Engine
              ) -> tuple[list[str], Summary]:
    """``--compact``: the inputs compacted (with ``engine``) into a temporary file, and the
    compaction's summary."""
    import tempfile

    from talon_classic.cli.compact import run_compaction

    tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="talon-identify-"))
    out = os.path.join(tmp, "profiles.jsonl")
    try:
        done = run_compaction(run.settings, run.paths, out,
                              {"max_line_bytes": run.options["max_line_bytes"]}, quiet,
                              transformer=engine)
    except CompactError as exc:
        raise UsageFailure(f"--compact: {exc}; nothing was sent") from None
    except KeyboardInterrupt:
        warn("interrupted (Ctrl-C) while compacting; nothing was sent")
        sys.exit(EXIT_INTERRUPTED)
    if not quiet:
        warn(f"compacted {done.events_read:,} events into {done.profiles_written:,} profiles "
             f"in {done.elapsed:.1f}s; sending")
    return [out], done


def open_client(run: Run, stack: contextlib.ExitStack, output: RequestOutput | None,
                quiet: bool) -> tuple[Client, EmulatorServer | None]:
    """The client this run delivers with: to Talon.One, to an in-process emulator, or a dry run."""
    from talon_classic.client import Client

    opts = run.options
    server = None
    if opts["emulator"]:
        server = stack.enter_context(emulator_for(
            run.settings, opts["rate_limit"], opts["emulator_db"],
            schema=run.schema.schema if run.schema else None))
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


def membership_state(run: Run) -> str | None:
    """The state database Engage memberships are checked against and recorded in, or None.

    ``--no-state``/``--state FILE`` when the command has them; an emulator
    without ``--emulator-db`` forgets everything, so none; otherwise the
    deployment's (:func:`~talon_classic.state.state_file`, per id prefix).
    """
    import os

    from talon_classic.state import state_file

    opts = run.options
    if opts.get("no_state"):
        return None
    if opts.get("state"):
        return str(opts["state"])
    if opts["emulator"]:
        db = opts["emulator_db"]
        return os.fspath(state_file(f"http://emulator/{os.path.abspath(db)}",
                                    opts["id_prefix"])) if db else None
    return os.fspath(state_file(run.settings.application_domain or "", opts["id_prefix"]))


def open_memberships(run: Run, client: Client, stack: contextlib.ExitStack,
                     quiet: bool) -> MembershipDelivery | None:
    """With ``engageAudiences`` memberships or both: what delivers them (None otherwise,
    and in a dry run, which cannot create audiences; ``transform`` shows them)."""
    from talon_classic.memberships import MembershipDelivery

    if run.settings.engage_audiences == "attributes":
        return None
    if run.options["dry_run"]:
        if not quiet:
            warn("dry run: Engage audience memberships are not shown (audiences cannot be "
                 "created without sending); `talon-classic transform --engage-audiences "
                 f"{run.settings.engage_audiences}` shows them")
        return None
    path = membership_state(run)
    try:
        delivery = MembershipDelivery.open(client, run.settings, path,
                                           warn=(lambda _m: None) if quiet else warn)
    except (OSError, sqlite3.Error) as exc:
        raise UsageFailure(f"{path}: cannot open the state database ({exc}); give another "
                           "--state FILE, or --no-state") from None
    stack.callback(delivery.close)
    return delivery


def exit_code(pipeline: Pipeline, summary: Summary, interrupted: bool) -> int:
    """130 interrupted, 3 authentication failure, 4 an unexpected error, 1 dead letters, else 0."""
    if interrupted:
        return EXIT_INTERRUPTED
    if pipeline.auth_error is not None:
        return EXIT_AUTH
    if (pipeline.internal_error is not None or pipeline.state_error is not None
            or pipeline.dead_letter_error is not None):
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
        data["schema"] = (None if run.schema is None else
                          {"origin": run.schema.origin, "attributes": len(run.schema.schema)})
        data["dry_run"] = opts["dry_run"]
        data["exit_code"] = code
        out(dumps(data), err=to_err, status=code)
        return
    if stats is not None:
        db = opts["emulator_db"]
        warn(f"emulator: {stats['profiles']:,} profiles stored, "
             f"{stats['profile_updates']:,} profile updates"
             + (f"; kept in {db}: inspect with `talon-classic emulator --db {db}` and "
                "GET /_emulator/profiles" if db else
                "; add --emulator-db FILE to keep them and inspect them afterwards"))
    text = summary.render()
    line = schema_line(run.schema)
    if line:
        text = f"{line}\n{text}"
    if internal:
        text += f"\nfirst unexpected error: {internal}"
    if state_error:
        text += f"\nstate file error: {state_error}"
    if opts["dry_run"]:
        text += "\ndry run: nothing was sent"
    out(text, err=to_err, status=code)


@click.command(short_help="Upsert Talon.One profiles from JSONL identify events.")
@settings_options
@schema_options(pull=True)
@engage_option
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
@click.option("--workers", type=int, default=1, show_default=True, metavar="N",
              help=WORKERS_HELP)
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
@click.option("--profiles", is_flag=True,
              help="INPUTs are compacted profiles (talon-classic compact's .jsonl, .jsonl.gz or "
              ".parquet): each is sent as it is, one write per profile, no transform.")
@click.option("--compact", is_flag=True,
              help="Compact the INPUTs first (every event of each user merged exactly, in a "
              "temporary directory), then send each profile once: the minimal backfill.")
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
@ledger_options(no_state_help="Keep no ledger: newest-wins holds within this run only.")
@click.option("--max-line-bytes", default=8 * 1024 * 1024, show_default=True,
              type=click.IntRange(1024), help="Longer lines are skipped as line_too_long.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.option("--quiet", "-q", is_flag=True, help="No progress line and no per-line warnings.")
def identify(settings_args: SettingsArgs, schema_args: SchemaArgs, inputs: tuple[str, ...],
             as_json: bool, quiet: bool, **options: Any) -> None:
    """Upsert Talon.One profiles from identify events in JSONL files (bulk, resumable).

    INPUT is a .jsonl/.ndjson file, a .gz of one, or '-' for stdin. With an
    attribute schema (--schema, or pulled with a management key) values are
    coerced to Talon.One's types, and attributes Talon.One does not have or
    values that do not fit are dropped, so they cannot fail a batch; the
    summary says where the schema came from.

    Exit status: 0 all delivered (or a dry run's reader closed the output),
    1 some events dead-lettered, 2 usage or settings error (nothing sent),
    3 stopped by an authentication failure, 4 an unexpected error (its
    events are dead-lettered), or the state file or the dead-letter file
    failed, 130 interrupted (Ctrl-C).
    """
    from talon_classic.bulk import Options, Pipeline

    options["schema"] = schema_args.path  # recorded, so --resume types as the run did
    run = plan_run(settings_args, inputs, options)
    opts = run.options
    run.schema = load_schema(SchemaArgs(opts["schema"], schema_args.refresh), run.settings,
                             pull=True)
    pipeline_options = Options(
        batch_size=opts["batch_size"],
        concurrency=1 if opts["dry_run"] else opts["concurrency"],  # a dry run prints in order
        id_prefix=opts["id_prefix"],
        single=opts["single"],
        run_rule_engine=opts["run_rule_engine"],
        dead_letter_skipped=opts["dead_letter_skipped"],
        max_line_bytes=opts["max_line_bytes"],
        replay_dead_letters=opts["replay_dead_letters"],
        profiles=opts["profiles"] or opts["compact"],
        skip_unchanged=opts["skip_unchanged"],  # off below when no state file exists yet
        workers=opts["workers"] or 1,  # None: a checkpoint written before --workers
    )
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    progress = Progress(enabled=not quiet and sys.stdout.isatty())
    stats = None
    summary: Summary | None = None
    try:
        with contextlib.ExitStack() as stack:
            engine = Engine(run.settings, run.schema.schema if run.schema else None)
            paths, compaction = (compacted(run, stack, quiet, engine) if opts["compact"]
                                 else (run.paths, None))
            output = None
            if opts["dry_run"]:
                output = RequestOutput.open(opts["output"], stack)
            client, server = open_client(run, stack, output, quiet)
            memberships = open_memberships(run, client, stack, quiet)
            ledger, state_path, state_note = open_state(run, stack)
            if ledger is None:  # a dry run before any state file: nothing to compare with
                pipeline_options.skip_unchanged = False
            pipeline = Pipeline(
                engine,
                client,
                pipeline_options,
                dead_letters=DeadLetters(run.dead_letter),
                checkpoint=run.checkpoint,
                on_progress=progress,
                warn=(lambda _m: None) if quiet else warn,
                before_send=(None if server is None
                             else register_profile_names(server.app) if pipeline_options.profiles
                             else register_engage_names(engine, server.app)),
                memberships=memberships,
                ledger=ledger,
            )
            pipeline.summary.state_file, pipeline.summary.state_note = state_path, state_note
            if output is not None:
                output.on_closed = lambda: pipeline.stop("the output was closed")
            try:
                summary, interrupted = run_interruptible(lambda: pipeline.run(paths),
                                                         lambda: pipeline.summary)
            finally:
                progress.close()
                if compaction is not None:  # the events behind the profiles sent
                    pipeline.summary.take_input_counts(compaction)
            if output is not None:
                output.exit_if_closed()
            if server is not None:
                stats = server.app.stats()
    except KeyboardInterrupt:
        # Ctrl-C while closing what the run opened (the state file commits what was
        # acknowledged; a batch it did not commit is not checkpointed: --resume sends it)
        if summary is None:  # the run had not started, or not ended: nothing to report
            raise
        pipeline.interrupted()
        interrupted = True
    assert summary is not None  # set by the run, else Ctrl-C went on above
    code = exit_code(pipeline, summary, interrupted)
    report(summary, code, run, as_json, pipeline.internal_error, stats, pipeline.state_error)
    sys.exit(code)
