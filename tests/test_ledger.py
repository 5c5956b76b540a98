"""The ordering ledger: entries, batched reads and writes, meta checks, uncertain deliveries."""

from __future__ import annotations

import json
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


def test_a_write_is_one_statement_per_thousand_profiles_then_one_sorted_insert(path: Path) -> None:
    with Ledger(path, URL) as ledger:
        statements: list[str] = []
        assert ledger._db is not None
        ledger._db.set_trace_callback(statements.append)
        ledger.record([(f"u{n}", ledger.plain({"plan": 1.0}, 1.0)) for n in range(2500)])
        staged = [s for s in statements if s.startswith("INSERT INTO ledger_group")]
        sorted_in = [s for s in statements if s.startswith("INSERT OR REPLACE INTO ledger_prof")]
        assert (len(staged), len(sorted_in)) == (3, 1)  # then one sorted insert, in SQLite
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
        ledger.record([("twice", ledger.plain({"plan": 1.0}, 1.0))])
        ledger.record([("twice", ledger.plain({"plan": 2.0}, 2.0))])  # one group: the later wins
        ledger.flush()
        assert ledger.stamps(ledger.lookup(["twice"])["twice"])[0] == {"plan": 2.0}
        assert sorted(done) == list(range(8))
    with Ledger(path, URL) as ledger:
        assert ledger.count() == 801


def test_the_background_writer_commits_within_half_a_second(path: Path) -> None:
    """Regression: it was woken only once 20,000 entries waited, so a run of small batches
    had nothing committed (nor checkpointed) before its end."""
    marked = threading.Event()
    with Ledger(path, URL, background=True) as ledger:
        ledger.record([("u1", ledger.plain({"plan": 1.0}, 1.0))], then=marked.set)
        assert marked.wait(2.0)
        with Ledger(path, URL, readonly=True) as reader:
            assert list(reader.lookup(["u1"])) == ["u1"]


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


# -- end to end: runs, replays, restarts and faults against the emulator -----------------------
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

FAULTS = st.sampled_from(["none", "none", "none", "fail", "fail", "reject", "hang"])
STEPS = st.lists(st.one_of(
    st.tuples(st.just("run"), st.integers(1, 5), FAULTS),
    st.tuples(st.just("replay"), st.just(0), FAULTS),
    st.tuples(st.just("post"), st.integers(1, 5), FAULTS),
    st.tuples(st.just("restart"), st.just(0), st.just("none")),
    st.tuples(st.just("retry"), st.just(0), FAULTS),
), min_size=4, max_size=9)
EVENTS = st.lists(st.tuples(st.integers(0, 1), st.sampled_from(["a", "a", "b"]),
                            st.one_of(st.none(), st.integers(0, 3), st.integers(0, 3))),
                  min_size=6, max_size=16)


def newest_delivered(events: list[tuple[str, str, int | None]], delivered: list[int]
                     ) -> dict[str, dict[str, int]]:
    """The model: the delivered events applied one by one in the order they were read: a
    timed value replaces one at most as old (no timestamp is oldest); an untimed one always
    replaces, keeping the timestamp of what it replaced."""
    state: dict[tuple[str, str], tuple[int | None, int]] = {}
    for n in delivered:
        user, attr, ts = events[n]
        old = state.get((user, attr))
        if ts is None:
            state[user, attr] = (old[0] if old else None, n)
        elif old is None or old[0] is None or ts >= old[0]:
            state[user, attr] = (ts, n)
    out: dict[str, dict[str, int]] = {}
    for (user, attr), (_, n) in state.items():
        out.setdefault(user, {})[attr] = n
    return out


def _event(n: int, user: str, attr: str, ts: int | None) -> dict:
    event = {"type": "identify", "userId": user, "messageId": f"m{n}", "traits": {attr: n}}
    if ts is not None:
        event["timestamp"] = f"2024-01-01T00:00:{ts:02d}Z"
    return event


@pytest.mark.timeout(120)
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(EVENTS, EVENTS, STEPS, st.integers(1, 3))
# the reproductions first: an older value in a later run; a replayed dead letter;
# a serve restart; a dead letter queued again; a request landing late; untimed values
@example([(0, "a", 3), (0, "a", 1)], [], [("run", 1, "none"), ("run", 1, "none")], 1)
@example([(0, "a", 1), (1, "a", 0), (0, "a", 3)], [], [("run", 3, "fail"), ("replay", 0, "none")],
         1)
@example([], [(0, "a", 3), (0, "a", 1)], [("post", 1, "none"), ("restart", 0, "none"),
                                          ("post", 1, "none")], 1)
@example([], [(0, "a", 1), (0, "a", 3)], [("post", 1, "reject"), ("post", 1, "none"),
                                          ("restart", 0, "none"), ("retry", 0, "none")], 1)
@example([(0, "a", 1), (0, "a", 3)], [(0, "a", 1), (0, "a", 3)],
         [("run", 2, "hang"), ("post", 1, "hang"), ("post", 1, "none")], 1)
@example([(0, "a", 3), (0, "a", None), (0, "a", 1), (0, "b", None)], [],
         [("run", 1, "none"), ("run", 3, "none")], 2)
def test_property_newest_delivered_value_wins_end_to_end(
        tmp_path_factory: pytest.TempPathFactory, ours: list, theirs: list, steps: list,
        batch_size: int) -> None:
    """Random identify runs, replays of their dead letters, serve restarts and dead-letter
    retries, with injected failures (501), rejections and hung requests that land late,
    over random events (some without timestamps): Talon.One (the emulator) ends with, for
    each attribute, the value of the newest ordering key among the delivered events.

    ``identify`` and ``serve`` keep separate ledgers (the state file, the spool), so each
    has its own users here: ``i*`` and ``s*``.
    """
    from talon_classic.bulk import Options, Pipeline
    from talon_classic.client import Client
    from talon_classic.deadletter_file import DeadLetters
    from talon_classic.emulator import EmulatorConfig, EmulatorServer
    from talon_classic.exceptions import DeliveryError
    from talon_classic.jsonio import loads
    from talon_classic.server import SERVE_HINT, Metrics, Worker
    from talon_classic.spool import Spool
    from talon_classic.transform import Engine

    tmp = tmp_path_factory.mktemp("e2e")
    events = [(f"i{u}", a, ts) for u, a, ts in ours] + [(f"s{u}", a, ts) for u, a, ts in theirs]
    pools = {"i": list(range(len(ours))), "s": list(range(len(ours), len(events)))}
    engine = Engine(["a", "b"])
    with EmulatorServer(EmulatorConfig(rate_limit=0)) as emu:
        def client() -> Client:
            return Client(emu.url, emu.app.config.api_key, rate_limit=0, max_attempts=3,
                          backoff_base=0.01, backoff_cap=0.02, read_timeout=0.25)

        def fault(kind: str, user: str | None) -> None:
            emu.app.configure(fail_next=int(kind == "fail"), fail_status=501,
                              hang_next=int(kind == "hang"), hang_seconds=0.4,
                              reject_ids=[user] if kind == "reject" and user else [])

        # identify: its own state file; reads numbered in the order they are read
        state = tmp / "state.db"
        reads: list[int] = []
        delivered: set[int] = set()  # read numbers
        dead_lines: list[str] = []

        def identify(lines: list[str], replay: bool) -> None:
            nonlocal dead_lines
            src = tmp / f"in-{len(reads)}.jsonl"
            src.write_text("".join(line + "\n" for line in lines))
            dead = tmp / f"dead-{len(reads)}.jsonl"
            first = len(reads)
            numbers = [int((loads(line)["event"] if replay else loads(line))["messageId"][1:])
                       for line in lines]
            reads.extend(numbers)
            with Ledger(state, emu.url, exclusive=True, background=True) as ledger:
                Pipeline(engine, client(), Options(batch_size=batch_size, concurrency=2,
                                                   replay_dead_letters=replay,
                                                   repair_after=0.8, ordering_window=2),
                         dead_letters=DeadLetters(dead), ledger=ledger).run([str(src)])
            failed = dead.read_text().splitlines() if dead.exists() else []
            gone = {loads(line)["event"]["messageId"] for line in failed}
            delivered.update(first + k for k, n in enumerate(numbers) if f"m{n}" not in gone)
            dead_lines = failed if replay else dead_lines + failed

        # serve: a spool (and its ledger) reopened on restart; a read is a spool row
        spool_path = tmp / "spool.db"
        taken: dict[int, int] = {}  # spool seq -> event number
        buried: set[int] = set()

        class Serve:
            def __init__(self) -> None:
                self.spool = Spool(spool_path)
                self.ledger = Ledger(spool_path, emu.url, hint=SERVE_HINT)
                self.worker = Worker(self.spool, engine, client(), Metrics(),
                                     batch_size=batch_size, ledger=self.ledger)
                self.worker.repair_after = 0.8
                self.worker.merger.window = 2  # mostly the ledger, not the window
                take = self.spool.take

                def watched(limit: int) -> list:
                    rows = take(limit)
                    taken.update((seq, int(loads(body)["messageId"][1:])) for seq, _, body in rows)
                    return rows
                self.spool.take = watched  # type: ignore[method-assign]

            def drain(self) -> None:
                for _ in range(10):
                    try:
                        while self.worker.drain_once():
                            pass
                    except DeliveryError:  # the worker backs off and takes them again
                        self.worker.merger.discard_open()
                        continue
                    if not self.spool.depth:
                        break
                buried.update(d.seq for d in self.spool.dead_letters(10_000))

            def settle(self) -> None:
                """What the worker does between micro-batches: repair what is due."""
                while self.ledger.pending:
                    time.sleep(0.05)
                    self.worker.repair_due()

            def close(self) -> None:
                self.spool.close()
                self.ledger.close()

        server = Serve()
        try:
            for kind, count, how in steps:
                if kind == "run":
                    todo, pools["i"] = pools["i"][:count], pools["i"][count:]
                    if todo:
                        fault(how, events[todo[0]][0])
                        identify([json.dumps(_event(n, *events[n])) for n in todo], False)
                elif kind == "replay" and dead_lines:
                    fault(how, loads(dead_lines[0])["event"]["userId"])
                    identify(dead_lines, True)
                elif kind == "post":
                    todo, pools["s"] = pools["s"][:count], pools["s"][count:]
                    if todo:
                        fault(how, events[todo[0]][0])
                        server.spool.append([(json.dumps(_event(n, *events[n])).encode(), None)
                                             for n in todo])
                        server.drain()
                elif kind == "restart":
                    server.close()
                    server = Serve()
                elif kind == "retry" and server.spool.dead_count():
                    fault(how, None if how == "reject" else None)
                    server.spool.retry_dead()
                    server.drain()
                fault("none", None)
            server.settle()
            if any(how == "hang" for _, _, how in steps):
                time.sleep(0.45)  # a hung request still asleep would land now: before the check
        finally:
            server.close()
        model = newest_delivered(events, [reads[r] for r in sorted(delivered)])
        model.update(newest_delivered(events, [taken[s] for s in sorted(set(taken) - buried)]))
        found = {p["integrationId"]: p["attributes"] for p in emu.app.store.page(10_000, 0)[0]}
    assert found == {user: {attr: n for attr, n in attrs.items()}
                     for user, attrs in model.items()}


@pytest.mark.parametrize("background", [False, True])
def test_after_close_a_record_or_lookup_is_refused_as_closed_not_as_a_damaged_file(
        path: Path, background: bool) -> None:
    """A sender thread a second Ctrl-C left running used to reach a closed database:
    "not a usable state file (Cannot operate on a closed database.); move it away"."""
    ledger = Ledger(path, URL, background=background)
    ledger.record([("u1", ledger.plain({"plan": 1.0}, 1.0))])
    ledger.flush()
    ledger.close()
    for call in (lambda: ledger.record([("u2", ledger.plain({"plan": 2.0}, 2.0))]),
                 lambda: ledger.lookup(["u1"])):
        with pytest.raises(LedgerError) as caught:
            call()
        assert caught.value.reason == "closed"
        assert "closed while the run was ending" in str(caught.value)
        assert "usable" not in str(caught.value) and "move it away" not in str(caught.value)
    with Ledger(path, URL) as again:  # the file is fine, and holds what was recorded
        assert ledger.stamps(again.lookup(["u1"])["u1"])[0] == {"plan": 1.0}


def _killed(ledger: Ledger) -> None:
    """kill -9: close() never runs, so the state file keeps its "open" mark."""
    ledger._db.close()
    ledger._reader.close()


def test_overtaken_until_is_the_killed_processs_own_window_and_outlives_a_short_run(
        path: Path) -> None:
    """An adversarial pass: the deadline lived only in the memory of the run after the kill,
    so a run that ended early (a wrong key, an empty input, Ctrl-C) took it away; and it was
    that run's read timeout, not the killed one's."""
    with Ledger(path, "https://x.talon.one") as clean:
        assert clean.overtaken_until(60.0) == 0.0  # nobody was killed: nothing to fear
    first = Ledger(path, "https://x.talon.one")
    assert first.overtaken_until(20.0) == 0.0  # records its own window: 20 s
    _killed(first)
    second = Ledger(path, "https://x.talon.one")
    before = time.time()
    until = second.overtaken_until(4.0)
    assert before + 20.0 <= until <= time.time() + 20.0  # the killed one's 20 s, not 4
    second.close()  # ends early, cleanly
    with Ledger(path, "https://x.talon.one") as third:
        assert not third.unclean
        assert third.overtaken_until(4.0) == until  # still there, until it has passed
    with Ledger(path, "https://x.talon.one", readonly=True) as dry:
        assert dry.overtaken_until(4.0) == 0.0  # a dry run delivers nothing


def test_overtaken_until_ends_once_passed_and_survives_damage(path: Path) -> None:
    first = Ledger(path, "https://x.talon.one")
    first.overtaken_until(0.2)
    _killed(first)
    with Ledger(path, "https://x.talon.one") as second:
        assert second.overtaken_until(30.0) > time.time()
    time.sleep(0.3)
    with Ledger(path, "https://x.talon.one") as third:
        assert third.overtaken_until(30.0) == 0.0
    with sqlite3.connect(path) as db:  # hand-edited: not numbers
        db.execute("INSERT OR REPLACE INTO ledger_meta VALUES ('overtaken_until', 'soon')")
        db.execute("INSERT OR REPLACE INTO ledger_meta VALUES ('repair_after', 'nan')")
        db.execute("INSERT OR REPLACE INTO ledger_meta VALUES ('open', '1')")
    with Ledger(path, "https://x.talon.one") as fourth:  # unclean: its own window instead
        assert time.time() + 4.0 <= fourth.overtaken_until(5.0) <= time.time() + 5.0


def test_a_ledger_its_last_writer_did_not_close_is_unclean(path: Path) -> None:
    """A process killed while writing leaves its mark: the next one knows a request of the
    dead one may still land (serve repairs what it delivers meanwhile)."""
    first = Ledger(path, "https://x.talon.one")
    assert not first.unclean
    _killed(first)
    again = Ledger(path, "https://x.talon.one")
    assert again.unclean
    again.close()
    with Ledger(path, "https://x.talon.one") as third:
        assert not third.unclean  # a clean close takes it away
    reader = Ledger(path, "https://x.talon.one", readonly=True)
    assert not reader.unclean  # a dry run writes no mark, and reads none
    reader.close()
