"""The ordering ledger: entries, batched reads and writes, meta checks, uncertain deliveries."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from talon_classic import LedgerError
from talon_classic.ledger import MAX_SHAPES, Ledger, Uncertain, digest_pairs, digests

URL = "https://acme.talon.one"
HINT = "give --state FILE (another state file) or --no-state (none)"


@pytest.fixture()
def path(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


def test_an_entry_keeps_each_attributes_timestamp_and_digest(path: Path) -> None:
    with Ledger(path, URL) as ledger:
        plain = ledger.plain({"plan": 10.0, "email": 10.0}, 10.0)
        assert len(plain) == 13  # flags, shape, one timestamp
        assert ledger.stamps(plain) == ({"plan": 10.0, "email": 10.0}, 10.0)
        assert ledger.digests(plain) == {}  # a plain entry has none: unknown
        mixed = ledger.entry({"plan": 20.0, "email": None, "age": 5.5}, {"plan": "pro", "age": 3},
                             before=plain, digest=True)
        assert ledger.stamps(mixed) == ({"plan": 20.0, "email": None, "age": 5.5}, 20.0)
        assert ledger.digests(mixed) == digests({"plan": "pro", "age": 3})
        # a run without digests keeps the ones of attributes it did not send, and makes
        # the ones it sent unknown (the value changed, its digest was not taken)
        later = ledger.entry({"plan": 30.0, "email": None, "age": 5.5}, {"plan": "free"},
                             before=mixed)
        assert ledger.digests(later) == {"age": digests({"age": 3})["age"]}
        untimed = ledger.entry({"plan": None}, {"plan": "x"})
        assert ledger.stamps(untimed) == ({"plan": None}, None)


def test_digests_tell_types_and_values_apart() -> None:
    values = ["1", 1, 1.5, True, None, ["a"], "é", "1 "]
    crcs, adlers = digest_pairs(values)
    assert len(set(zip(crcs, adlers, strict=True))) == len(values)
    assert all(adlers)  # an Adler-32 is never 0: (0, 0) can mean "unknown"
    assert digests({"a": "x"})["a"] == digests({"b": "x"})["b"]  # the value's, not the name's
    assert digest_pairs(["x"]) == digest_pairs(["x"])


def test_lookup_is_one_query_per_batch_and_ids_round_trip(path: Path) -> None:
    odd = ['quote"d', "back\\slash", "new\nline", "ü ☃", "..", "a/b c", "x" * 1000]
    with Ledger(path, URL) as ledger:
        ledger.record([(iid, ledger.plain({"plan": 1.0}, 1.0)) for iid in odd])
        statements: list[str] = []
        assert ledger._reader is not None
        ledger._reader.set_trace_callback(statements.append)
        found = ledger.lookup([*odd, "unknown", *[f"u{n}" for n in range(3000)]])
        assert sorted(found) == sorted(odd)
        assert len([s for s in statements if s.startswith("SELECT")]) == 1
        assert ledger.stamps(found["new\nline"])[0] == {"plan": 1.0}


def test_a_write_is_one_statement_per_thousand_profiles(path: Path) -> None:
    with Ledger(path, URL) as ledger:
        statements: list[str] = []
        assert ledger._db is not None
        ledger._db.set_trace_callback(statements.append)
        ledger.record([(f"u{n}", ledger.plain({"plan": 1.0}, 1.0)) for n in range(2500)])
        inserts = [s for s in statements if s.startswith("INSERT OR REPLACE INTO ledger_profiles")]
        assert len(inserts) == 3
        assert ledger.count() == 2500


def test_a_new_ledger_records_its_deployment_and_refuses_another(path: Path) -> None:
    Ledger(path, URL, "eu-").close()
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    Ledger(path, URL, "eu-").close()  # the same one: fine
    with pytest.raises(LedgerError) as info:
        Ledger(path, "https://other.talon.one", "eu-")
    assert str(info.value) == (f"{path}: holds the ordering of {URL} with id prefix 'eu-', not of "
                               f"https://other.talon.one with id prefix 'eu-'; {HINT}")
    with pytest.raises(LedgerError, match="not of https://acme.talon.one;"):
        Ledger(path, URL)  # another id prefix


def test_a_file_that_is_not_a_ledger_is_one_line_naming_the_way_out(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all" * 200)
    with pytest.raises(LedgerError) as info:
        Ledger(garbage, URL)
    assert str(info.value) == (f"{garbage}: not a usable state file (file is not a database); "
                               f"move it away to start over, or {HINT}")
    folder = tmp_path / "dir.db"
    folder.mkdir()
    with pytest.raises(LedgerError, match="is a directory, not a state file; give --state"):
        Ledger(folder, URL)
    newer = tmp_path / "newer.db"
    Ledger(newer, URL).close()
    with sqlite3.connect(newer) as db:
        db.execute("UPDATE ledger_meta SET value = '99' WHERE key = 'format'")
    with pytest.raises(LedgerError, match=r"written by a newer talon-classic \(ledger format 99\); "
                       "upgrade talon-classic, or give --state"):
        Ledger(newer, URL)


def test_a_damaged_entry_is_one_line_too(path: Path) -> None:
    with Ledger(path, URL) as ledger:
        ledger.record([("u1", b"\x01\x00")])
        blob = ledger.lookup(["u1"])["u1"]
        with pytest.raises(LedgerError, match="damaged .an entry cannot be read.; move it away"):
            ledger.stamps(blob)


def test_a_corrupt_page_is_one_line(path: Path) -> None:
    with Ledger(path, URL) as ledger:
        ledger.record([(f"user-{n:06d}", ledger.plain({"plan": 1.0}, 1.0)) for n in range(5000)])
    size = path.stat().st_size
    with open(path, "r+b") as fh:  # overwrite pages past the first: the table's
        fh.seek(4096)
        fh.write(os.urandom(size - 4096))
    with pytest.raises(LedgerError) as info:
        with Ledger(path, URL) as ledger:
            ledger.lookup([f"user-{n:06d}" for n in range(5000)])
    message = str(info.value)
    assert message.startswith(f"{path}: ") and message.endswith(HINT) and "\n" not in message


def test_permission_denied_is_one_line(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Ledger(path, URL).close()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if os.fspath(p) == os.fspath(path)
                        else real(p, mode))  # tests may run as root, for whom chmod does nothing
    with pytest.raises(LedgerError) as info:
        Ledger(path, URL)
    assert str(info.value) == f"{path}: cannot open the state file: permission denied; {HINT}"


def test_one_run_at_a_time_holds_a_ledger(path: Path) -> None:
    with Ledger(path, URL, exclusive=True):
        with pytest.raises(LedgerError, match="in use by another talon-classic run; wait for it "
                           "to finish, or give --state"):
            Ledger(path, URL, exclusive=True)
        Ledger(path, URL, readonly=True).close()  # a dry run may read it meanwhile
    Ledger(path, URL, exclusive=True).close()  # released on close


def test_read_only_never_writes_nor_creates(path: Path) -> None:
    with pytest.raises(LedgerError, match="no such state file"):
        Ledger(path, URL, readonly=True)
    assert not path.exists()
    with Ledger(path, URL) as ledger:
        ledger.record([("u1", ledger.plain({"plan": 1.0}, 1.0))])
    with Ledger(path, URL, readonly=True) as ro:
        assert not ro.writable
        ro.record([("u2", b"")])  # nothing happens
        assert sorted(ro.lookup(["u1", "u2"])) == ["u1"]


def test_uncertain_deliveries_follow_newer_acknowledgements_and_survive_a_restart(
        path: Path) -> None:
    soon = time.time() + 60
    with Ledger(path, URL) as ledger:
        # u1's request timed out but its retry was acknowledged; u2's failed for good
        ledger.record(sent=[{"integrationId": "u1", "attributes": {"plan": "old", "a": 1}},
                            {"integrationId": "u2", "attributes": {"plan": "x"}}],
                      delivered={"u1"}, uncertain={"u1": soon, "u2": soon})
        assert ledger.pending == {"u1": Uncertain(soon, {"plan": "old", "a": 1}),
                                  "u2": Uncertain(soon, {}, {"plan"})}
        # later batches acknowledge newer values: those are what a repair sends
        ledger.record(sent=[{"integrationId": "u1", "attributes": {"plan": "new", "b": 2}},
                            {"integrationId": "u2", "attributes": {"plan": "y"}},
                            {"integrationId": "u3", "attributes": {"plan": "z"}}],
                      delivered={"u1", "u2", "u3"})
        assert ledger.due(time.time()) == {}
    with Ledger(path, URL) as ledger:
        assert ledger.pending == {"u1": Uncertain(soon, {"plan": "new", "a": 1}),
                                  "u2": Uncertain(soon, {"plan": "y"})}
        assert set(ledger.due(soon)) == {"u1", "u2"}
        ledger.record(repaired={"u1", "u2"})
        assert ledger.pending == {}


def test_background_writes_group_run_their_callbacks_after_commit_and_are_looked_up(
        path: Path) -> None:
    done: list[int] = []
    with Ledger(path, URL, background=True) as ledger:
        def put(n: int) -> None:
            rows = [(f"t{n}-{i}", ledger.plain({"plan": float(n)}, float(n))) for i in range(100)]
            ledger.record(rows, then=lambda: done.append(n))

        threads = [threading.Thread(target=put, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(ledger.lookup([f"t{n}-0" for n in range(8)])) == 8  # queued or written
        ledger.flush()
        assert sorted(done) == list(range(8))
    with Ledger(path, URL) as ledger:
        assert ledger.count() == 800


def test_a_failed_background_commit_is_raised_to_the_next_caller(path: Path) -> None:
    with Ledger(path, URL, background=True) as ledger:
        marked: list[str] = []
        ledger.record([("u1", b"x")], then=lambda: marked.append("u1"))
        assert ledger._db is not None
        ledger.flush()
        ledger._db.execute("DROP TABLE ledger_profiles")  # every later write fails
        ledger.record([("u2", b"x")], then=lambda: marked.append("u2"))
        with pytest.raises(LedgerError, match="no such table: ledger_profiles"):
            ledger.flush()
        with pytest.raises(LedgerError):
            ledger.record([("u3", b"x")])
        assert marked == ["u1"]  # what was not committed is never marked done


def test_shapes_are_bounded_then_names_go_inline(path: Path, monkeypatch) -> None:
    monkeypatch.setattr("talon_classic.ledger.MAX_SHAPES", 3)
    with Ledger(path, URL) as ledger:
        entries = [(f"u{n}", ledger.plain({f"a{n}": 1.0}, 1.0)) for n in range(6)]
        ledger.record(entries)
        assert len(ledger._shapes) == 3 < MAX_SHAPES
    with Ledger(path, URL) as ledger:
        found = ledger.lookup([f"u{n}" for n in range(6)])
        assert [ledger.stamps(found[f"u{n}"])[0] for n in range(6)] == [
            {f"a{n}": 1.0} for n in range(6)]
