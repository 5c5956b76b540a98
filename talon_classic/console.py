"""The ``talon-classic`` program's entry point, kept apart so Ctrl-C while it starts is one line.

Loading the command line imports most of the package (about 0.3 s, more on
a busy machine). A Ctrl-C in that time raised KeyboardInterrupt from inside
an import, before any handler of ours existed, and Python printed a
traceback. This module imports nothing of the package at its top (and the
package's ``__init__`` imports its public names only on use), so the whole
start happens inside :func:`run`, where Ctrl-C is ``interrupted (Ctrl-C)``
and exit 130 like anywhere else.
"""

from __future__ import annotations

import sys

#: The exit status of a run stopped by Ctrl-C (every command's, see :mod:`talon_classic.cli.options`).
EXIT_INTERRUPTED = 130


def run() -> None:
    """Load the command line, then run it (:func:`talon_classic.cli.run`)."""
    try:
        from talon_classic.cli import run as cli_run
    except KeyboardInterrupt:
        sys.stderr.write("interrupted (Ctrl-C)\n")
        raise SystemExit(EXIT_INTERRUPTED) from None
    cli_run()
