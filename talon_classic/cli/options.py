"""What every command shares: exit codes, the usage error, the settings and schema options.

Commands are thin: they turn options into library objects and print. The
pieces here keep them thin: :class:`UsageFailure` (exit 2 with one line),
:func:`settings_options` (the settings flags, handed to the command as
one :class:`SettingsArgs` value), :func:`schema_options` and
:func:`load_schema` (the attribute schema a run types with) and
:func:`check_inputs`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import IO, TYPE_CHECKING, Any, NoReturn, TypeVar, cast

import click
from click.core import ParameterSource

from talon_classic import console
from talon_classic.exceptions import (
    AuthError,
    DeliveryError,
    InputError,
    RetriesExhausted,
    SettingsError,
    TalonClassicError,
)
from talon_classic.reader import STDIN
from talon_classic.settings import (
    ENGAGE_MODES,
    ENV_API_KEY,
    ENV_ATTRIBUTES,
    ENV_DOMAIN,
    ENV_ENGAGE_AUDIENCES,
    ENV_MANAGEMENT_KEY,
    Settings,
    check_secret,
    load_settings,
)

if TYPE_CHECKING:
    from talon_classic.schema import Schema
    from talon_classic.schemacache import SchemaSource

EXIT_OK = 0
EXIT_DEAD_LETTERED = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_INTERNAL = 4
EXIT_INTERRUPTED = console.EXIT_INTERRUPTED  # 130, also where the program starts

F = TypeVar("F", bound=Callable[..., Any])


class UsageFailure(click.ClickException):
    """A usage, settings or input problem found before anything was sent: ``Error: ...``, exit 2."""

    exit_code = EXIT_USAGE


class AuthFailure(click.ClickException):
    """A key Talon.One refused before anything was sent: ``Error: ...``, exit 3."""

    exit_code = EXIT_AUTH


def given(name: str) -> bool:
    """Was option ``name`` given on the command line (not a default, not the environment)?"""
    ctx = click.get_current_context()
    return ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE


@dataclass(frozen=True)
class SettingsArgs:
    """The settings flags of one command line, not yet loaded.

    Values that came from the environment are left out on purpose:
    :func:`~talon_classic.settings.load_settings` reads the environment
    itself, so its messages name the variable, not the flag.
    """

    path: str | None
    api_key: str | None
    application_domain: str | None
    custom_attributes: tuple[str, ...]
    management_key: str | None = None
    #: ``--engage-audiences`` (commands with :func:`engage_option`), None when not given.
    engage_audiences: str | None = None

    @property
    def label(self) -> str:
        """How messages name the settings' source."""
        return self.path or "settings"

    def load(self, path: str | None = None) -> Settings:
        """Merge file < environment < flags (``path`` overrides the flag's file); exit 2 on error."""
        try:
            return load_settings(
                path or self.path,
                api_key=self.api_key,
                application_domain=self.application_domain,
                custom_attributes=self.custom_attributes or None,
                management_key=self.management_key,
                engage_audiences=self.engage_audiences,
            )
        except SettingsError as exc:
            raise UsageFailure(str(exc)) from None


def settings_options(func: F) -> F:
    """Add ``--settings``, ``--api-key``, ``--application-domain``, ``--custom-attribute``,
    ``--management-key``.

    The command receives them as one ``settings_args: SettingsArgs``.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, settings_path: str | None, api_key: str | None,
                application_domain: str | None, custom_attributes: tuple[str, ...],
                management_key: str | None, **kwargs: Any) -> Any:
        kwargs["settings_args"] = SettingsArgs(
            settings_path,
            api_key if given("api_key") else None,
            application_domain if given("application_domain") else None,
            custom_attributes if given("custom_attributes") else (),
            management_key if given("management_key") else None,
        )
        return func(*args, **kwargs)

    decorated: Any = wrapper
    decorated = click.option(
        "--management-key", metavar="KEY", envvar=ENV_MANAGEMENT_KEY, show_envvar=True,
        help="Talon.One Management API key, to read the attribute schema. Never printed; "
        "prefer the variable (a flag shows in `ps`).",
    )(decorated)
    decorated = click.option(
        "--custom-attribute", "custom_attributes", multiple=True, metavar="NAME",
        envvar=ENV_ATTRIBUTES, show_envvar=True,
        help="Allowlisted attribute (repeatable; replaces the file's list). '*' patterns "
        "allowed. The variable is comma-separated.",
    )(decorated)
    decorated = click.option(
        "--application-domain", metavar="URL", envvar=ENV_DOMAIN, show_envvar=True,
        help="Talon.One deployment URL, e.g. https://mycompany.talon.one.",
    )(decorated)
    decorated = click.option(
        "--api-key", metavar="KEY", envvar=ENV_API_KEY, show_envvar=True,
        help="Talon.One Integration API key. Never printed; prefer the variable "
        "(a flag shows in `ps`).",
    )(decorated)
    decorated = click.option(
        "--settings", "settings_path", type=click.Path(dir_okay=False), metavar="FILE",
        help="Classic destination settings JSON (apiKey, applicationDomain, customAttributes, "
        "managementKey).",
    )(decorated)
    return cast(F, decorated)


@dataclass(frozen=True)
class SchemaArgs:
    """The schema flags of one command line: ``--schema FILE`` and ``--refresh-schema``."""

    path: str | None
    refresh: bool = False


def schema_options(pull: bool) -> Callable[[F], F]:
    """Add ``--schema FILE`` (and with ``pull``, ``--refresh-schema``) as one ``schema_args``.

    ``pull``: the command pulls the schema with a management key when no file
    is given (identify, serve); see :func:`load_schema`.
    """
    more = (" With a management key and no --schema, the schema is read from Talon.One's "
            "Management API and cached for an hour." if pull else "")

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, schema: str | None, refresh_schema: bool = False,
                    **kwargs: Any) -> Any:
            kwargs["schema_args"] = SchemaArgs(schema, refresh_schema)
            return func(*args, **kwargs)

        decorated: Any = wrapper
        if pull:
            decorated = click.option(
                "--refresh-schema", is_flag=True,
                help="Pull the schema from the Management API even if a cached one is "
                "younger than an hour.")(decorated)
        decorated = click.option(
            "--schema", type=click.Path(dir_okay=False), metavar="FILE",
            help="Talon.One's customer-profile attributes and their types (what `schema "
            "pull` writes): values are coerced to their types, unknown attributes dropped."
            + more)(decorated)
        return cast(F, decorated)

    return decorate


def pull_schema(settings: Settings, **client_options: Any) -> Schema:
    """Every customer-profile attribute of the settings' deployment, via the Management API."""
    from talon_classic.management import ManagementClient

    with ManagementClient.from_settings(settings, **client_options) as client:
        return client.attributes()


def schema_failure(exc: TalonClassicError, domain: str | None, *, hint: bool = True
                   ) -> click.ClickException:
    """One line for a schema that cannot be had: exit 3 for a refused key, else exit 2.

    ``hint``: say that a ``--schema`` file is the way around an unreachable API.
    """
    if isinstance(exc, AuthError):
        return AuthFailure(str(exc))
    if isinstance(exc, RetriesExhausted):
        way_out = (" try again, or give --schema FILE (written by `talon-classic schema pull`)"
                   if hint else " try again")
        return UsageFailure(f"cannot read the attribute schema from {domain}: {exc};{way_out}")
    if isinstance(exc, DeliveryError):
        return UsageFailure(f"cannot read the attribute schema from {domain}: {exc}")
    return UsageFailure(str(exc))


def load_schema(schema_args: SchemaArgs, settings: Settings, *, pull: bool
                ) -> SchemaSource | None:
    """The schema a run types with: ``--schema FILE``; else, when ``pull`` and the settings
    have a management key, the cached (an hour) or pulled one; else None (nothing typed).

    Problems are one line: exit 3 for a refused management key, 2 for anything else.
    """
    from talon_classic.schemacache import resolve_schema

    if schema_args.refresh and schema_args.path:
        raise UsageFailure("--refresh-schema pulls the schema; leave it out with --schema FILE")
    can_pull = pull and bool(settings.management_key)
    if schema_args.refresh and not can_pull:
        raise UsageFailure(f"--refresh-schema needs a management key ({ENV_MANAGEMENT_KEY} "
                           "or --management-key) to pull the schema with")
    if can_pull and not schema_args.path and not settings.application_domain:
        raise UsageFailure("applicationDomain: missing, so the schema cannot be pulled with the "
                           "management key (the Management API is on the deployment's host): "
                           "set it, or give --schema FILE")
    try:
        return resolve_schema(
            schema_args.path,
            deployment=settings.application_domain if can_pull else None,
            pull=(lambda: pull_schema(settings)) if can_pull else None,
            refresh=schema_args.refresh,
            warn=warn,
        )
    except TalonClassicError as exc:
        raise schema_failure(exc, settings.application_domain) from None


def schema_line(source: SchemaSource | None) -> str | None:
    """``schema: pulled from URL (N attributes)`` and the like; None without a schema."""
    if source is None:
        return None
    count = len(source.schema)
    return f"schema: {source.origin} ({count:,} attribute{'' if count == 1 else 's'})"
def engage_option(func: F) -> F:
    """``--engage-audiences``: what an Engage audience becomes. Put it below :func:`settings_options`.

    The environment variable is read by :func:`~talon_classic.settings.load_settings`
    (so its messages name it); the flag overrides it and the file.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, engage_audiences: str | None, **kwargs: Any) -> Any:
        if engage_audiences is not None:
            kwargs["settings_args"] = replace(kwargs["settings_args"],
                                              engage_audiences=engage_audiences)
        return func(*args, **kwargs)

    decorated: Any = click.option(
        "--engage-audiences", type=click.Choice(ENGAGE_MODES), default=None,
        help="What an Engage audience becomes: 'attributes' (a boolean attribute, as the classic "
        "destination; the default), 'memberships' (a member of a Talon.One audience instead; "
        "Audience Entered/Exited tracks too) or 'both' [env var: "
        f"{ENV_ENGAGE_AUDIENCES}; setting engageAudiences].")(wrapper)
    return cast(F, decorated)


def secret(value: str, name: str, param: str, envvar: str) -> str:
    """A key or secret from option ``param`` or its variable, refused (exit 2) if it cannot be one.

    The message names where it came from (the flag or the variable) and never shows it.
    """
    ctx = click.get_current_context()
    option = next(p for p in ctx.command.params if p.name == param)
    source = option.opts[0] if given(param) else envvar
    try:
        return check_secret(value, name, source)
    except SettingsError as exc:
        raise UsageFailure(str(exc)) from None


def server_options(func: F) -> F:
    """``--connection-limit`` and ``--idle-timeout``, for every command that serves HTTP."""
    func = click.option(
        "--idle-timeout", default=5.0, show_default=True, metavar="SECONDS",
        type=click.FloatRange(0, min_open=True),
        help="Close a connection idle this long (no request in progress).")(func)
    func = click.option(
        "--connection-limit", type=click.IntRange(1), metavar="N",
        help="Most connections served at once; more wait until others close [default: "
        "10,000, less if the open-file limit (ulimit -n) is lower].")(func)
    return func


def ledger_options(no_state_help: str) -> Callable[[F], F]:
    """``--no-state``, ``--skip-unchanged`` and ``--read-timeout``: the ordering ledger's options.

    For every command that delivers through a ledger (``identify``,
    ``serve``); ``no_state_help`` says what keeping none means for it.
    """

    def decorate(func: F) -> F:
        func = click.option(
            "--read-timeout", default=30.0, show_default=True, metavar="SECONDS",
            type=click.FloatRange(0.1), help="Wait this long for Talon.One's answer; a "
            "request that timed out is repaired twice this long after it.")(func)
        func = click.option(
            "--skip-unchanged", is_flag=True,
            help="Do not send values equal to what Talon.One acknowledged last (off by "
            "default: the profile may have been edited in Talon.One since). Compares "
            "with values sent with this option (they keep a digest).")(func)
        return click.option("--no-state", is_flag=True, help=no_state_help)(func)

    return decorate


def check_inputs(inputs: tuple[str, ...], *, expected: str = "a .jsonl file, a .gz of one, or '-'",
                 required: str | None = None) -> list[str]:
    """Default to stdin, and refuse missing files and directories before anything starts.

    ``expected`` says what to give instead of a directory; with ``required``
    (the message) no input is refused instead of meaning stdin.
    """
    if not inputs and required is not None:
        raise UsageFailure(required)
    paths = list(inputs) or [STDIN]
    if paths.count(STDIN) > 1:
        raise UsageFailure("'-' (stdin) can be given only once")
    for path in paths:
        if path == STDIN:
            continue
        if os.path.isdir(path):
            raise UsageFailure(f"{path}: is a directory; give {expected}")
        if not os.path.exists(path):
            raise UsageFailure(f"{path}: no such file")
    return paths


def warn(message: str) -> None:
    """One line on stderr."""
    click.echo(message, err=True)


def out(message: str, *, nl: bool = True, err: bool = False, status: int = EXIT_OK) -> None:
    """Write ``message`` to stdout (stderr with ``err``): every command writes stdout here.

    A closed pipe (``| head -1``) ends the command quietly, as ``head``'s writers
    do, with ``status`` (the exit status the command would have had; 0 unless
    given). Any other failure to write (``ENOSPC`` on a full disk) is one line
    on stderr and a non-zero exit (``status``, or 1), never a traceback. Either
    way stdout is pointed at /dev/null first, so the interpreter's last flush
    of what could not be written is quiet.
    """
    if err:
        click.echo(message, nl=nl, err=True)
        return
    try:
        click.echo(message, nl=nl)
    except BrokenPipeError:
        silence_stdout()
        sys.exit(status)
    except OSError as exc:
        stdout_failed(exc, status)


def stdout_failed(exc: OSError, status: int = EXIT_OK) -> NoReturn:
    """End the command after stdout could not be written (not a closed pipe): one line on
    stderr, as click shows an error, and exit ``status`` (1 when that was 0)."""
    silence_stdout()
    click.echo(f"Error: cannot write to standard output ({exc.strerror or exc})", err=True)
    sys.exit(status or 1)


def warn_without_allowlist(settings: Settings) -> None:
    """Say so when ``customAttributes`` is empty: only Engage's attributes would be kept."""
    if not settings.custom_attributes:
        warn("warning: customAttributes is empty, so every attribute but Engage audiences and "
             "computed traits is dropped as not_allowlisted (give --settings FILE or "
             "--custom-attribute NAME)")


def silence_stdout() -> None:
    """After a closed pipe, point stdout at /dev/null so the interpreter's last flush is quiet."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # not a real file (CliRunner): nothing to silence
        pass
    finally:
        os.close(devnull)


R = TypeVar("R")


def run_interruptible(run: Callable[[], R], so_far: Callable[[], R]) -> tuple[R, bool]:
    """``(run(), False)``; after Ctrl-C ``(so_far(), True)``, so the command still reports
    what it did (and then exits 130). An :class:`InputError` (an input that cannot be
    read) is a usage error, exit 2."""
    try:
        return run(), False
    except KeyboardInterrupt:
        return so_far(), True
    except InputError as exc:
        raise UsageFailure(str(exc)) from None


class RequestOutput:
    """Where a dry run writes its requests; a closed pipe (``| head``) stops the run quietly."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.closed_pipe = False
        self.on_closed: Callable[[], None] = lambda: None

    @classmethod
    def open(cls, path: str | None, stack: contextlib.ExitStack) -> RequestOutput:
        """``--output PATH`` (created 0600, closed with ``stack``), or stdout without one;
        a path that cannot be written is a usage error naming it."""
        from talon_classic.files import open_private

        if not path:
            return cls(sys.stdout)
        try:
            return cls(stack.enter_context(open_private(path)))
        except OSError as exc:
            raise UsageFailure(f"{path}: cannot write: {exc.strerror}") from None

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

    def exit_if_closed(self) -> None:
        """After the run: if the reader went away, end as ``head``'s writers do (no summary,
        no traceback, exit 0)."""
        if self.closed_pipe:
            silence_stdout()
            sys.exit(EXIT_OK)

    def _closed(self) -> None:
        if not self.closed_pipe:
            self.closed_pipe = True
            self.on_closed()
