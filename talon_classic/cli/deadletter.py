"""``talon-classic deadletter``: the server's dead-letter table (list, retry)."""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

import click

from talon_classic.cli.options import (
    UsageFailure,
    out,
    warn,
)
from talon_classic.jsonio import BadLine, dumps, loads

if TYPE_CHECKING:
    from talon_classic.spool import Spool


def _open_spool(path: str) -> Spool:
    from talon_classic.exceptions import SpoolError
    from talon_classic.spool import Spool

    if not os.path.exists(path):
        raise UsageFailure(f"{path}: no such spool (give the --spool of `talon-classic serve`)")
    if not os.path.isdir(path) and not _is_spool(path):
        raise UsageFailure(f"{path}: not a talon-classic spool (it has no dead-letter table); "
                           "give the --spool of `talon-classic serve`")
    try:
        return Spool(path)
    except SpoolError as exc:
        raise UsageFailure(str(exc)) from None


def _is_spool(path: str) -> bool:
    """Does ``path`` hold a spool's tables? Read only: opening another program's SQLite
    file as a spool would add tables to it (and switch it to WAL). A file SQLite cannot
    read is for :class:`~talon_classic.spool.Spool` to name."""
    import sqlite3

    from talon_classic.sqliteuri import read_only

    try:
        with contextlib.closing(sqlite3.connect(read_only(path), uri=True)) as db:
            names = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    except sqlite3.Error:
        return True
    return {"pending", "dead"} <= names


@click.group(short_help="List or re-send events the server's Talon.One rejected.")
def deadletter() -> None:
    """List or re-send events the server's Talon.One rejected (its spool's dead-letter table)."""


@deadletter.command("list")
@click.option("--spool", "spool_path", required=True, metavar="PATH", help="The server's spool.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1),
              help="Show at most this many dead letters, oldest first.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per dead letter.")
def deadletter_list(spool_path: str, limit: int, as_json: bool) -> None:
    """Show dead letters: the event, why Talon.One refused it, when.

    A dead letter that is not a JSON event (the spool was edited or damaged)
    is skipped with one line naming it, and the count says how many.

    Exit status: 0 listed, 2 the spool cannot be opened (missing, a directory,
    not a talon-classic spool).
    """
    spool = _open_spool(spool_path)
    damaged = 0
    try:
        for d in spool.dead_letters(limit):
            try:
                event = loads(d.body)
            except (BadLine, TypeError) as exc:  # a damaged row (the file was edited)
                damaged += 1
                why = str(exc) if isinstance(exc, BadLine) else "not text"
                warn(f"{spool_path}: dead letter {d.seq}: not a JSON event ({why}); skipped")
                continue
            if as_json:
                out(dumps({"seq": d.seq, "event": event, "reason": d.reason,
                           "error": d.error, "failed": d.failed}))
            else:
                user = event.get("userId") if isinstance(event, dict) else None
                out(f"{d.seq}\t{user}\t{d.reason}\t{d.error}")
        if not as_json:
            out(f"{spool.dead_count():,} dead letters in {spool_path}"
                + (f" ({damaged:,} damaged, not shown)" if damaged else ""), err=True)
    finally:
        spool.close()


@deadletter.command("retry", short_help="Queue every dead letter again (after fixing the cause).")
@click.option("--spool", "spool_path", required=True, metavar="PATH", help="The server's spool.")
def deadletter_retry(spool_path: str) -> None:
    """Put every dead letter back in the queue, after fixing the cause in Talon.One.

    The server delivers them through its ordering ledger: a value older than
    one Talon.One acknowledged since is left out (superseded).

    Exit status: 0 queued (also when there was none), 2 the spool cannot be
    opened (missing, a directory, not a talon-classic spool).
    """
    spool = _open_spool(spool_path)
    try:
        moved = spool.retry_dead()
    finally:
        spool.close()
    out(f"{moved:,} dead letters queued again; a running server delivers them shortly")
