"""The ``talon-classic`` command line: thin shells over the library, one module per command.

Every command parses options, builds library objects and prints; the rules
live in :mod:`talon_classic.transform`, delivery in
:mod:`talon_classic.client` and :mod:`talon_classic.bulk`. What the
commands share (exit codes, the usage error, the settings options) is in
:mod:`talon_classic.cli.options`.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import click

from talon_classic import __version__
from talon_classic.cli.audience import audience
from talon_classic.cli.check_config import check_config
from talon_classic.cli.compact import compact
from talon_classic.cli.deadletter import deadletter
from talon_classic.cli.emulator import emulator
from talon_classic.cli.identify import identify
from talon_classic.cli.options import EXIT_INTERRUPTED, warn
from talon_classic.cli.schema import schema
from talon_classic.cli.serve import serve
from talon_classic.cli.transform import transform


class _Main(click.Group):
    """The command group; Ctrl-C where a command does not report it itself (before a run
    starts, say) is one line and exit 130, not click's "Aborted!" and exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            warn("interrupted (Ctrl-C)")
            ctx.exit(EXIT_INTERRUPTED)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="talon-classic")
def main() -> None:
    """Segment identify events -> Talon.One customer profiles.

    Does the job of Segment's classic Talon.One destination: flattens
    traits, maps Engage audiences and computed traits, keeps the
    customAttributes allowlist, and upserts profiles in bulk.
    """


for command in (audience, check_config, compact, deadletter, emulator, identify, schema, serve,
                transform):
    main.add_command(command)



def run() -> None:
    """The ``talon-classic`` program: :func:`main`; once it has answered, Ctrl-C is ignored.

    What is left then is the interpreter's shutdown (joining threads, closing
    files). A Ctrl-C there printed "Exception ignored ... KeyboardInterrupt"
    after the summary, or ended the process by the signal, so the exit status
    no longer went with the summary. (Not in :func:`main`, which tests call in
    their own process.)
    """
    try:
        main()
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)


__all__ = ["main", "run"]

if __name__ == "__main__":  # pragma: no cover
    run()
