"""``talon-classic deadletter``: damaged rows and spools that cannot be opened (found by an
adversarial pass: tracebacks and exit 1 before)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from talon_classic.cli import main
from talon_classic.spool import Spool


def run(*args: str):
    return CliRunner().invoke(main, ["deadletter", *args], catch_exceptions=False)


def _spool_with_dead(path: Path, bodies: list[bytes]) -> None:
    spool = Spool(path)
    spool.append([(body, f"m{i}") for i, body in enumerate(bodies)])
    rows = spool.take(len(bodies))
    spool.bury([(seq, "rejected", "nope") for seq, _, _ in rows])
    spool.close()


def test_a_damaged_dead_letter_is_skipped_with_one_line_and_the_rest_listed(
        tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    _spool_with_dead(path, [json.dumps({"userId": f"u{i}"}).encode() for i in range(4)])
    with sqlite3.connect(path) as db:  # edited by hand: one truncated, one not even text
        db.execute("UPDATE dead SET body = '{\"userId\": \"u' WHERE seq = 2")
        db.execute("UPDATE dead SET body = 5 WHERE seq = 3")
    result = run("list", "--spool", str(path))
    assert result.exit_code == 0, result.output
    assert [line.split("\t")[1] for line in result.stdout.splitlines()] == ["u0", "u3"]
    warnings = result.stderr.splitlines()
    assert warnings[0].startswith(f"{path}: dead letter 2: not a JSON event (")
    assert warnings[0].endswith("); skipped")
    assert warnings[1] == f"{path}: dead letter 3: not a JSON event (not text); skipped"
    assert warnings[2] == f"4 dead letters in {path} (2 damaged, not shown)"
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", ["list", "retry"])
@pytest.mark.parametrize("kind", ["directory", "not a database"])
def test_a_spool_that_cannot_be_opened_is_one_line_exit_2(tmp_path: Path, command: str,
                                                          kind: str) -> None:
    path = tmp_path / "spool.db"
    if kind == "directory":
        path.mkdir()
    else:
        path.write_bytes(b"not a database, just some text" * 100)
    result = run(command, "--spool", str(path))
    assert result.exit_code == 2
    assert result.output.startswith(f"Error: {path}: ") and result.output.count("\n") == 1
    assert ("is a directory, not a spool" if kind == "directory"
            else "not a usable spool (file is not a database)") in result.output


def test_another_programs_database_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "theirs.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE orders (id INTEGER)")
    before = path.read_bytes()
    result = run("list", "--spool", str(path))
    assert result.exit_code == 2
    assert result.output == (f"Error: {path}: not a talon-classic spool (it has no dead-letter "
                             "table); give the --spool of `talon-classic serve`\n")
    assert path.read_bytes() == before and not (tmp_path / "theirs.db-wal").exists()
