"""The ``talon-classic`` command line: thin shells over the library.

Every command parses options, builds library objects and prints; the rules
live in :mod:`talon_classic.transform`, delivery in
:mod:`talon_classic.client` and :mod:`talon_classic.bulk`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import click

from talon_classic import __version__
from talon_classic.exceptions import InputError, SettingsError
from talon_classic.reader import STDIN, dumps, read_records
from talon_classic.settings import Settings, load_settings
from talon_classic.transform import Engine

EXIT_USAGE = 2


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


@main.command()
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
    out = click.get_text_stream("stdout")
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


if __name__ == "__main__":  # pragma: no cover
    main()
