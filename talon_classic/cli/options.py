"""What every command shares: exit codes, the usage error, the settings options.

Commands are thin: they turn options into library objects and print. The
pieces here keep them thin: :class:`UsageFailure` (exit 2 with one line),
:func:`settings_options` (the four settings flags, handed to the command as
one :class:`SettingsArgs` value) and :func:`check_inputs`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar, cast

import click
from click.core import ParameterSource

from talon_classic.exceptions import SettingsError
from talon_classic.reader import STDIN
from talon_classic.settings import (
    ENGAGE_MODES,
    ENV_API_KEY,
    ENV_ATTRIBUTES,
    ENV_DOMAIN,
    ENV_ENGAGE_AUDIENCES,
    Settings,
    check_secret,
    load_settings,
)

EXIT_OK = 0
EXIT_DEAD_LETTERED = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_INTERNAL = 4
EXIT_INTERRUPTED = 130

F = TypeVar("F", bound=Callable[..., Any])


class UsageFailure(click.ClickException):
    """A usage, settings or input problem found before anything was sent: ``Error: ...``, exit 2."""

    exit_code = EXIT_USAGE


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
                engage_audiences=self.engage_audiences,
            )
        except SettingsError as exc:
            raise UsageFailure(str(exc)) from None


def settings_options(func: F) -> F:
    """Add ``--settings``, ``--api-key``, ``--application-domain``, ``--custom-attribute``.

    The command receives them as one ``settings_args: SettingsArgs``.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, settings_path: str | None, api_key: str | None,
                application_domain: str | None, custom_attributes: tuple[str, ...],
                **kwargs: Any) -> Any:
        kwargs["settings_args"] = SettingsArgs(
            settings_path,
            api_key if given("api_key") else None,
            application_domain if given("application_domain") else None,
            custom_attributes if given("custom_attributes") else (),
        )
        return func(*args, **kwargs)

    decorated: Any = wrapper
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
        help="Classic destination settings JSON (apiKey, applicationDomain, customAttributes).",
    )(decorated)
    return cast(F, decorated)


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


def check_inputs(inputs: tuple[str, ...]) -> list[str]:
    """Default to stdin, and refuse missing files and directories before anything starts."""
    paths = list(inputs) or [STDIN]
    if paths.count(STDIN) > 1:
        raise UsageFailure("'-' (stdin) can be given only once")
    for path in paths:
        if path == STDIN:
            continue
        if os.path.isdir(path):
            raise UsageFailure(f"{path}: is a directory; give a .jsonl file, a .gz of one, or '-'")
        if not os.path.exists(path):
            raise UsageFailure(f"{path}: no such file")
    return paths


def warn(message: str) -> None:
    """One line on stderr."""
    click.echo(message, err=True)
