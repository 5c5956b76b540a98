"""``talon-classic audience``: create, rename, delete, clear and list audiences; sync members.

Shells over :class:`~talon_classic.client.Client` (the audience endpoints),
:class:`~talon_classic.management.ManagementClient` (``list``, ``--from-talon``)
and :class:`~talon_classic.audience_sync.AudienceSync` (``sync``).

Exit status, every subcommand: 0 done (or the reader of stdout went away, as
with ``| head``); 1 Talon.One refused (the audience exists, a bad name), stdout
could not be written (a full disk) or, for ``sync``, some actions were
dead-lettered;
2 usage or settings error, or no audience with that id (nothing sent);
3 the key was refused; 4 an unexpected error; 130 interrupted; 143 (``sync``)
stopped by SIGTERM.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sqlite3
import sys
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import click

from talon_classic.cli.options import (
    EXIT_AUTH,
    EXIT_DEAD_LETTERED,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    RequestOutput,
    SettingsArgs,
    UsageFailure,
    check_inputs,
    out,
    run_interruptible,
    settings_options,
    warn,
)
from talon_classic.cli.progress import StatusLine
from talon_classic.exceptions import (
    AudienceExists,
    AudienceNotFound,
    AuthError,
    DeliveryError,
    OutcomeUnknown,
    SettingsError,
)
from talon_classic.jsonio import dumps
from talon_classic.reader import STDIN
from talon_classic.settings import ENV_MANAGEMENT_KEY, MAX_AUDIENCE_ID, Settings

#: ``audience sync`` stopped by SIGTERM (128 + 15), as Ctrl-C is 130.
EXIT_TERMINATED = 128 + signal.SIGTERM

if TYPE_CHECKING:
    from talon_classic.audience_state import AudienceState
    from talon_classic.audience_sync import AudienceSync
    from talon_classic.audiences import Audience
    from talon_classic.client import Client
    from talon_classic.management import ManagementClient

#: A Talon.One audience id: 1 to 2**63 - 1 (a signed 64-bit integer, as the state database
#: and Talon.One keep it).
AUDIENCE_ID = click.IntRange(1, MAX_AUDIENCE_ID)

MANAGEMENT_KEY_NEEDED = (
    "needs the management key: set managementKey in the settings file or "
    f"{ENV_MANAGEMENT_KEY} (create one in Campaign Manager > Account > Tools > Management API "
    "keys, with access to audiences)")


class Refused(click.ClickException):
    """Talon.One refused what was asked (or could not be reached): exit 1."""

    exit_code = 1


class AuthFailure(click.ClickException):
    """The key was refused: exit 3."""

    exit_code = EXIT_AUTH


@contextlib.contextmanager
def talon_errors() -> Iterator[None]:
    """Turn the client's errors into one line and the right exit status."""
    try:
        yield
    except AudienceNotFound as exc:
        raise UsageFailure(f"{exc}: check the id (talon-classic audience list shows them)"
                           ) from None
    except AuthError as exc:
        raise AuthFailure(str(exc)) from None
    except DeliveryError as exc:
        raise Refused(str(exc)) from None
    except SettingsError as exc:
        raise UsageFailure(str(exc)) from None


def load(settings_args: SettingsArgs, need_key: bool = True) -> Settings:
    """The settings, with the application domain (and, unless ``need_key`` is False, the key)."""
    settings = settings_args.load()
    try:
        if need_key or not settings.application_domain:
            settings.require_delivery(settings_args.label)
    except SettingsError as exc:
        raise UsageFailure(str(exc)) from None
    return settings


def open_client(settings: Settings, **kw: Any) -> Client:
    """A client for the settings' deployment."""
    from talon_classic.client import Client

    return Client(settings.application_domain or "", settings.api_key or "", **kw)


def open_management(settings: Settings, what: str) -> ManagementClient:
    """A Management API client, or one line (exit 2) saying the key is needed for ``what``."""
    from talon_classic.management import ManagementClient

    if not settings.management_key:
        raise UsageFailure(f"{what} {MANAGEMENT_KEY_NEEDED}")
    return ManagementClient.from_settings(settings)


def state_path(settings: Settings, id_prefix: str, state: str | None, no_state: bool) -> str | None:
    """Where the state database is: ``--state``, else the deployment's; None with ``--no-state``."""
    from talon_classic.state import state_file

    if state and no_state:
        raise UsageFailure("--state and --no-state exclude each other")
    if no_state:
        return None
    if state:
        if os.path.isdir(state):
            raise UsageFailure(f"{state}: is a directory; --state names the state database file")
        return state
    return os.fspath(state_file(settings.application_domain or "", id_prefix))


def open_state(path: str | None) -> AudienceState:
    """The state database at ``path`` (a temporary one for None); one line, exit 2, if unusable."""
    from talon_classic.audience_state import AudienceState

    try:
        return AudienceState(path)
    except (sqlite3.Error, OSError) as exc:
        raise UsageFailure(f"{path}: cannot open the state database ({exc}); give another "
                           "--state FILE, or --no-state") from None


def state_options(func: Any) -> Any:
    """``--id-prefix``, ``--state FILE`` and ``--no-state``: which state database, if any."""
    func = click.option("--no-state", is_flag=True,
                        help="Neither read nor record memberships in the state database.")(func)
    func = click.option("--state", "state", type=click.Path(dir_okay=False), metavar="FILE",
                        help="The state database file [default: the deployment's, in "
                        "$XDG_STATE_HOME/talon-classic].")(func)
    func = click.option("--id-prefix", default="", metavar="TEXT",
                        help="Prefix every integrationId (as in identify); each prefix has its "
                        "own state database.")(func)
    return func


def show(audience_id: int | None, text: str) -> None:
    """One line of confirmation on stdout."""
    out(text if audience_id is None else f"{text} {audience_id}")


@click.group(short_help="Create, change and fill Talon.One audiences.")
def audience() -> None:
    """Talon.One audiences: create, rename, delete, clear, list, and sync their members.

    Campaigns target audiences directly. `sync` adds, removes or mirrors the
    members of a list (CSV, JSONL or plain text); the state database
    remembers what Talon.One acknowledged, so a sync sends only changes.

    Exit status: 0 done; 1 Talon.One refused (or, for sync, actions were
    dead-lettered); 2 usage or settings error, or no audience with that id;
    3 the key was refused; 4 an unexpected error; 130 interrupted; 143 a
    sync stopped by SIGTERM.
    """


@audience.command(short_help="Create an audience; print it as JSON.")
@settings_options
@click.argument("name")
@click.option("--integration-id", metavar="ID",
              help="The audience's id on the platform it comes from (1-1000 characters); "
              "Talon.One refuses a second audience with the same one (409), so a create "
              "whose answer was lost can safely be sent again.")
@click.option("--integration", metavar="PLATFORM",
              help="The platform it comes from, e.g. segment.")
@click.option("--description", metavar="TEXT", help="A description shown in Talon.One.")
def create(settings_args: SettingsArgs, name: str, integration_id: str | None,
           integration: str | None, description: str | None) -> None:
    """Create an audience called NAME and print it as one JSON object, its "id" first."""
    if not name.strip():
        raise UsageFailure("NAME must not be empty")
    if integration_id is not None and not 1 <= len(integration_id) <= 1000:
        raise UsageFailure("--integration-id must be 1 to 1000 characters long")
    settings = load(settings_args)
    with open_client(settings) as client, talon_errors():
        try:
            created = client.create_audience(name, integration=integration,
                                             integration_id=integration_id,
                                             description=description)
        except AudienceExists as exc:
            if not exc.ours:
                raise Refused(f"{exc}{existing_id(settings, exc)}") from None
            created = created_earlier(settings, exc)
        except OutcomeUnknown as exc:
            raise Refused(f"{exc}; talon-classic audience list shows whether it exists"
                          ) from None
    out(dumps(created.as_dict()))


def created_earlier(settings: Settings, exc: AudienceExists) -> Audience:
    """The audience an attempt of this run created, though its answer was lost (the 409 on
    the resend said so), as the Management API lists it; Refused when it cannot be had."""
    from talon_classic.audience_ids import find_audience_object
    from talon_classic.audiences import Audience

    if not settings.management_key or exc.audience_integration_id is None:
        raise Refused(f"{exc}; its id is known only to the Management API: set managementKey "
                      f"(or {ENV_MANAGEMENT_KEY}) and run talon-classic audience list")
    try:
        with open_management(settings, "") as management:
            found = find_audience_object(management, exc.integration,
                                         exc.audience_integration_id)
    except DeliveryError as err:
        raise Refused(f"{exc}; its id could not be looked up: {err}") from None
    if found is None:
        raise Refused(f"{exc}; the Management API does not list it (yet): talon-classic "
                      "audience list shows the audiences and their ids")
    return Audience.from_api(found, "GET /v1/audiences")


def existing_id(settings: Settings, exc: AudienceExists) -> str:
    """``; it is audience 7`` when the management key can find it, else how to find it."""
    from talon_classic.audience_ids import find_audience

    if not settings.management_key or exc.audience_integration_id is None:
        return ": talon-classic audience list shows the audiences and their ids"
    try:
        with open_management(settings, "") as management:
            found = find_audience(management, exc.integration, exc.audience_integration_id)
    except DeliveryError as err:
        return f" (its id could not be looked up: {err})"
    return f"; it is audience {found}" if found is not None else ""


@audience.command(short_help="Rename an audience.")
@settings_options
@click.argument("audience_id", metavar="ID", type=AUDIENCE_ID)
@click.argument("name")
def rename(settings_args: SettingsArgs, audience_id: int, name: str) -> None:
    """Rename audience ID to NAME; print it as one JSON object."""
    if not name.strip():
        raise UsageFailure("NAME must not be empty")
    settings = load(settings_args)
    with open_client(settings) as client, talon_errors():
        renamed = client.rename_audience(audience_id, name)
    out(dumps(renamed.as_dict()))


@audience.command(short_help="Delete an audience and its memberships.")
@settings_options
@state_options
@click.argument("audience_id", metavar="ID", type=AUDIENCE_ID)
def delete(settings_args: SettingsArgs, audience_id: int, id_prefix: str, state: str | None,
           no_state: bool) -> None:
    """Delete audience ID (its memberships go with it) and forget what the state database
    recorded of it."""
    settings = load(settings_args)
    path = state_path(settings, id_prefix, state, no_state)
    with contextlib.ExitStack() as stack:
        recorded = unknown_first(path if path is not None and os.path.exists(path) else None,
                                 audience_id, stack)
        with open_client(settings) as client, talon_errors():
            try:
                client.delete_audience(audience_id)
            except OutcomeUnknown as exc:
                raise Refused(f"{exc}; talon-classic audience list shows whether it still "
                              "exists") from None
        if recorded is not None:
            try:
                recorded.forget(audience_id)
            except sqlite3.Error as exc:
                warn(f"{path}: the delete is not recorded ({exc}); the state database "
                     "records no member of the audience now")
    show(audience_id, "deleted audience")


def unknown_first(path: str | None, audience_id: int,
                  stack: contextlib.ExitStack) -> AudienceState | None:
    """The state database at ``path`` (None: none), with nothing recorded of the audience's
    members any more: what ``clear`` and ``delete`` do before they ask Talon.One, so one
    that fails halfway (or whose record afterwards fails) never leaves members recorded
    that Talon.One dropped. Nothing is sent when the state cannot be written."""
    if path is None:
        return None
    recorded = stack.enter_context(open_state(path))
    try:
        recorded.unknown(audience_id)
    except sqlite3.Error as exc:
        raise UsageFailure(f"{path}: cannot write the state database ({exc}); nothing was "
                           "sent; give another --state FILE, or --no-state") from None
    return recorded


@audience.command(short_help="Remove every member of an audience.")
@settings_options
@state_options
@click.argument("audience_id", metavar="ID", type=AUDIENCE_ID)
def clear(settings_args: SettingsArgs, audience_id: int, id_prefix: str, state: str | None,
          no_state: bool) -> None:
    """Remove every member of audience ID, and record it as empty in the state database
    (so the next sync adds the whole list again)."""
    settings = load(settings_args)
    path = state_path(settings, id_prefix, state, no_state)
    with contextlib.ExitStack() as stack:
        recorded = unknown_first(path, audience_id, stack)
        with open_client(settings) as client, talon_errors():
            client.clear_audience(audience_id)
        if recorded is not None:
            try:
                recorded.reset(audience_id)
            except sqlite3.Error as exc:
                warn(f"{path}: the clear is not recorded ({exc}); the state database "
                     "records nothing of the audience now, so the next sync sends every "
                     "listed member")
    show(audience_id, "cleared audience")


@audience.command("list", short_help="List the audiences (needs the management key).")
@settings_options
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per audience (Talon.One's, \"id\" first).")
def list_audiences(settings_args: SettingsArgs, as_json: bool) -> None:
    """List every audience of the deployment (Management API GET /v1/audiences).

    Needs the management key (managementKey in the settings, or
    TALON_MANAGEMENT_KEY).
    """
    from talon_classic.audiences import Audience

    settings = load(settings_args, need_key=False)
    with open_management(settings, "audience list") as management, talon_errors():
        rows = [Audience.from_api(a, "GET /v1/audiences") for a in management.audiences()]
    if as_json:
        for row in rows:
            out(dumps(row.as_dict()))
        return
    out(f"{'id':>6}  {'name':<30}  {'integration':<12}  integrationId")
    for row in rows:
        out(f"{row.id:>6}  {row.name:<30}  {row.integration or '-':<12}  "
            f"{row.integration_id or '-'}")


class Progress(StatusLine["AudienceSync"]):
    """The sync's status line: members read (and how far into the list), then actions sent."""

    def text(self, sync: AudienceSync) -> str:
        s = sync.summary
        if sync.phase == "delivering":
            seconds = s.delivery_seconds
            rate = (s.added + s.removed) / seconds if seconds > 0 else 0.0
            return f"added {s.added:,}  removed {s.removed:,}  {rate:,.0f} actions/s"
        text = f"{s.members_read:,} members read"
        source = sync.current_input
        if source is not None and source.size:
            text += f"  {source.name} {min(1.0, source.consumed / source.size):.0%}"
        return text


def check_members(members: tuple[str, ...]) -> list[str]:
    """Refuse no list, missing files and directories before anything is read or sent."""
    return check_inputs(members, expected="a member list (CSV, JSONL or text, .gz too) or '-'",
                        required="give at least one MEMBERS list (a file, or '-' for stdin)")


class SigtermStop:
    """While :attr:`running`, SIGTERM stops ``runner`` as Ctrl-C does: the reason is said
    first, then a KeyboardInterrupt is raised in the main thread.

    As ``serve`` does, so a service manager's stop ends a sync with its summary and what
    was acknowledged recorded, not killed mid-request. Once :attr:`running` is False (the
    run is over, the summary is being printed), a SIGTERM is only noted. A context manager:
    the previous handler is back on leaving it. Outside the main thread nothing changes.
    """

    def __init__(self, runner: AudienceSync) -> None:
        self.runner = runner
        self.running = True
        #: A SIGTERM came while running.
        self.received = False
        self._previous: Any = None
        self._installed = False

    def _handle(self, signum: int, frame: object) -> None:
        if self.running:
            self.received = True
            self.runner.interrupt("SIGTERM")
            raise KeyboardInterrupt

    def __enter__(self) -> SigtermStop:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.running = False
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous)


def sync_exit_code(sync: AudienceSync, interrupted: bool) -> int:
    """130 interrupted, 3 authentication failure, 4 an unexpected error, 1 dead letters, else 0."""
    if interrupted:
        return EXIT_INTERRUPTED
    if sync.auth_error is not None:
        return EXIT_AUTH
    if sync.internal_error is not None or sync.dead_letter_error is not None:
        return EXIT_INTERNAL
    if sync.summary.dead_lettered:
        return EXIT_DEAD_LETTERED
    return EXIT_OK


@audience.command(short_help="Add, remove or mirror the members of a list.")
@settings_options
@click.argument("members", nargs=-1, metavar="MEMBERS...")
@click.option("--audience-id", required=True, type=AUDIENCE_ID, metavar="ID",
              help="The Talon.One audience to change.")
@click.option("--mode", required=True, type=click.Choice(["add", "remove", "mirror"]),
              help="add: the listed ids join; remove: they leave; mirror: the audience becomes "
              "exactly the list (those not in it leave).")
@click.option("--id-column", metavar="NAME",
              help="The CSV column or JSONL key holding the id [default: integration_id, "
              "integrationId or userId, the first there is].")
@state_options
@click.option("--from-talon", is_flag=True,
              help="Compare with the membership Talon.One has now (Management API, needs the "
              "management key) instead of the state database: for a first mirror, or after "
              "changes made elsewhere. With --id-prefix, only members with that prefix count.")
@click.option("--dry-run", is_flag=True,
              help="Send nothing, record nothing; write the exact HTTP requests as JSONL "
              "(key redacted).")
@click.option("--output", "-o", type=click.Path(dir_okay=False), metavar="FILE",
              help="With --dry-run: write the requests here (created 0600) instead of stdout.")
@click.option("--concurrency", default=16, show_default=True, type=click.IntRange(1, 64),
              help="Requests in flight at once: enough to keep 60 requests/s going while "
              "each takes up to 250 ms.")
@click.option("--rate-limit", default=60.0, show_default=True, type=click.FloatRange(0),
              help="Requests per second at most (Talon.One allows about 60); 0 = no limit.")
@click.option("--dead-letter", type=click.Path(dir_okay=False), metavar="FILE",
              help="Where rejected actions go, appended to, created 0600 "
              "[default: <first list>.dead.jsonl].")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.option("--quiet", "-q", is_flag=True, help="No progress line and no per-line warnings.")
def sync(settings_args: SettingsArgs, members: tuple[str, ...], audience_id: int, mode: str,
         id_column: str | None, id_prefix: str, state: str | None, no_state: bool,
         from_talon: bool, dry_run: bool, output: str | None, concurrency: int,
         rate_limit: float, dead_letter: str | None, as_json: bool, quiet: bool) -> None:
    """Add, remove or mirror the members of MEMBERS in audience ID (--audience-id).

    MEMBERS: CSV with a header (the id in column integration_id,
    integrationId or userId, or --id-column), JSONL objects with one of
    those keys, or plain text with one id per line; .gz too; '-' for stdin.
    Ids are trimmed, blanks skipped, duplicates counted once; an id longer
    than 1000 characters (with --id-prefix) is reported and skipped.

    Every mode sends only what the state database says is still needed (an
    interrupted sync, run again, goes on where it stopped). A mirror
    removes the members who left the list since the last mirror; a first
    mirror without --from-talon can only add, and says so.

    SIGTERM stops it as Ctrl-C does: no new request, those in flight are
    answered and recorded, the summary is printed; exit 143.

    Exit status: 0 all delivered, 1 some actions dead-lettered, 2 usage or
    settings error or no audience with that id, 3 the key was refused,
    4 an unexpected error or the dead-letter file could not be written,
    130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
    """
    from talon_classic.audience_sync import AudienceSync, SyncOptions
    from talon_classic.client import Client
    from talon_classic.deadletter_file import DeadLetters

    paths = check_members(members)
    if output and not dry_run:
        raise UsageFailure("--output is only used with --dry-run")
    if id_column is not None and not id_column.strip():
        raise UsageFailure("--id-column must not be empty")
    settings = load(settings_args, need_key=not dry_run)
    path = state_path(settings, id_prefix, state, no_state)
    if dry_run and path is not None and not os.path.exists(path):
        path = None  # nothing recorded yet, and a dry run creates nothing
    management = open_management(settings, "--from-talon") if from_talon else None
    first = "stdin" if paths[0] == STDIN else paths[0]
    dead = dead_letter or f"{first}.dead.jsonl"
    problem = None if dry_run else DeadLetters(dead).problem()
    if problem is not None:  # found now, not when the first action fails
        raise UsageFailure(problem)
    try:
        options = SyncOptions(audience_id, mode, id_column=id_column, id_prefix=id_prefix,
                              from_talon=from_talon, concurrency=1 if dry_run else concurrency,
                              dry_run=dry_run)
    except ValueError as exc:
        raise UsageFailure(str(exc)) from None
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    progress = Progress(enabled=not quiet and sys.stdout.isatty())
    pipe: RequestOutput | None = None
    with contextlib.ExitStack() as stack:
        if management is not None:
            stack.callback(management.close)
        recorded = stack.enter_context(open_state(path))
        if dry_run:
            pipe = RequestOutput.open(output, stack)
            client = Client.dry_run(settings.application_domain or "", settings.api_key or "",
                                    pipe, concurrency=1)
        else:
            client = Client(settings.application_domain or "", settings.api_key or "",
                            concurrency=concurrency, rate_limit=rate_limit)
        stack.callback(client.close)
        runner = AudienceSync(client, recorded, options, management=management,
                              dead_letters=DeadLetters(dead),
                              warn=(lambda _m: None) if quiet else warn, on_progress=progress)
        if pipe is not None:
            pipe.on_closed = lambda: runner.stop("the output was closed")
        sigterm = stack.enter_context(SigtermStop(runner))
        try:
            summary, interrupted = run_interruptible(lambda: runner.run(paths),
                                                     lambda: runner.summary)
        except AudienceNotFound as exc:
            progress.close()
            raise UsageFailure(f"{exc}: check the id (talon-classic audience list shows "
                               "them)") from None
        except AuthError as exc:  # reading Talon.One's membership (--from-talon)
            raise AuthFailure(str(exc)) from None
        except DeliveryError as exc:
            raise Refused(str(exc)) from None
        except sqlite3.Error as exc:
            raise click.ClickException(f"{path or 'the temporary database'}: the state "
                                       f"database failed ({exc}); what was acknowledged "
                                       "before is recorded") from None
        finally:
            sigterm.running = False
            progress.close()
        if pipe is not None:
            pipe.exit_if_closed()
    code = (EXIT_TERMINATED if interrupted and sigterm.received
            else sync_exit_code(runner, interrupted))
    to_err = dry_run and not output
    if as_json:
        data = summary.as_dict()
        data["dry_run"] = dry_run
        data["exit_code"] = code
        data["state"] = path
        out(dumps(data), err=to_err, status=code)
    else:
        text = summary.render()
        if runner.internal_error:
            text += f"\nfirst unexpected error: {runner.internal_error}"
        if dry_run:
            text += "\ndry run: nothing was sent, nothing recorded"
        elif path is None:
            text += "\nno state: nothing was recorded (--no-state)"
        out(text, err=to_err, status=code)
    sys.exit(code)
