"""The merge: newest timestamp per attribute, file order, carry-over, the window, rollback."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from talon_classic.merge import Batch, Merger, parse_timestamp


def merger(batch_size: int = 10, lookback: int = 0, window: int = 1000) -> Merger:
    return Merger(batch_size, lookback, window)


def add(m: Merger, iid: str, ts: float | None, **attributes: Any) -> None:
    m.add(iid, attributes, ts, ({"userId": iid}, f"in:{ts}"))


def sent(batch: Batch) -> dict[str, dict[str, Any]]:
    return {p["integrationId"]: p["attributes"] for p in batch.profiles}


def test_parse_timestamp() -> None:
    assert parse_timestamp("2024-01-01T00:00:00Z") == 1704067200.0
    assert parse_timestamp("2024-01-01T01:00:00+01:00") == 1704067200.0
    assert parse_timestamp("2024-01-01T00:00:00") == 1704067200.0  # naive: UTC
    assert parse_timestamp("2024-01-01T00:00:00.5Z") == 1704067200.5
    for unreadable in (None, "", "yesterday", 1704067200, ["2024-01-01"]):
        assert parse_timestamp(unreadable) is None


def test_out_of_order_values_per_attribute_in_one_batch() -> None:
    m = merger()
    add(m, "u1", 2, plan="new")
    add(m, "u1", 1, plan="old", email="o@x.io")  # older plan loses, its email is new
    add(m, "u1", 3, email="p@x.io")
    add(m, "u2", 5, plan="a")
    add(m, "u2", 5, plan="b")  # same timestamp: the later event wins
    assert m.pending == 2
    batch = m.close(0, final=True)
    assert sent(batch) == {"u1": {"plan": "new", "email": "p@x.io"}, "u2": {"plan": "b"}}
    assert batch.stamps() == {"u1": {"plan": 2, "email": 3}, "u2": {"plan": 5}}
    assert [where for _, where in batch.sources["u1"]] == ["in:2", "in:1", "in:3"]
    assert m.pending == 0


def test_an_older_value_than_one_sent_is_left_out() -> None:
    m = merger()
    add(m, "u1", 20, plan="new")
    m.close(0, final=True)
    add(m, "u1", 10, plan="old", email="e@x.io")
    add(m, "u2", 1, plan="x")
    batch = m.close(1, final=True)
    assert sent(batch) == {"u1": {"email": "e@x.io"}, "u2": {"plan": "x"}}
    assert m.remembered("u1") == {"plan": 20, "email": 10}
    add(m, "u1", 20, plan="same time, later input")
    assert sent(m.close(2, final=True)) == {"u1": {"plan": "same time, later input"}}


def test_events_without_timestamp_count_in_file_order() -> None:
    m = merger()
    add(m, "u1", 5, plan="a")
    add(m, "u1", None, plan="b")  # the latest so far, whatever its time
    add(m, "u1", 4, plan="c")  # older than the value "b" replaced: loses
    add(m, "u2", None, plan="x")
    add(m, "u2", None, plan="y")
    add(m, "u2", 1, email="e")
    assert sent(m.close(0, final=True)) == {"u1": {"plan": "b"}, "u2": {"plan": "y", "email": "e"}}
    add(m, "u1", None, plan="d")  # always sent
    assert sent(m.close(1, final=True)) == {"u1": {"plan": "d"}}
    add(m, "u1", 4.5, plan="e")  # still older than the 5 that "b" and "d" replaced
    add(m, "u2", 0, plan="z")  # "y" had no timestamp: anything later in the file wins
    batch = m.close(2, final=True)  # u1 has nothing newer: it exists, so it is not sent
    assert sent(batch) == {"u2": {"plan": "z"}} and batch.current == ["u1"]
    assert batch.dropped == [("plan", "superseded")]


def test_a_value_without_timestamp_keeps_the_timestamp_it_replaced() -> None:
    """Regression: when the rest of the profile was newer, a value without
    timestamp made the merger forget the timestamp it had sent for that
    attribute, so an even older value went out after it."""
    m = merger()
    add(m, "u1", 10, email="ten@x.io")
    m.close(0, final=True)
    add(m, "u1", 12, plan="pro")
    add(m, "u1", None, email="file-order@x.io")
    assert sent(m.close(1, final=True)) == {"u1": {"plan": "pro", "email": "file-order@x.io"}}
    assert m.remembered("u1") == {"email": 10, "plan": 12}
    add(m, "u1", 9, email="nine@x.io")  # older than what the last value replaced
    batch = m.close(2, final=True)
    assert sent(batch) == {} and batch.current == ["u1"]


def test_carry_over_of_profiles_sent_in_the_last_batches() -> None:
    m = merger(batch_size=4, lookback=1)
    for n in range(1, 5):
        add(m, f"u{n}", n, a=n)
    assert m.full
    assert set(m.close(0).sources) == {"u1", "u2", "u3", "u4"}
    add(m, "u1", 10, a="again")  # u1 is likely still in flight
    assert not m.full
    for n in range(5, 9):
        add(m, f"u{n}", n, a=n)
    assert m.full
    second = m.close(1)
    assert set(second.sources) == {"u5", "u6", "u7", "u8"}
    assert m.pending == 1 and not m.full  # u1 carried over, not counted as fresh
    # too few fresh profiles for half a batch: the carried ones go anyway
    add(m, "u5", 20, a="again")
    add(m, "u9", 9, a=9)
    add(m, "u10", 10, a=10)
    add(m, "u11", 11, a=11)
    assert m.full
    third = m.close(2)
    assert set(third.sources) == {"u1", "u9", "u10", "u11"}
    assert sent(third)["u1"] == {"a": "again"}
    # the final batches take everything left
    assert set(m.close(3, final=True).sources) == {"u5"}
    assert m.pending == 0


def test_the_window_bounds_what_is_remembered_least_recently_sent_first() -> None:
    m = merger(batch_size=10, window=20)
    add(m, "u0", 100, plan="new")
    m.close(0, final=True)
    for round_ in range(12):
        for n in range(10):
            add(m, f"r{round_}-{n}", 1, plan="x")
        if round_ % 2 == 1:
            add(m, "u0", 100 + round_, plan="kept fresh")  # re-sent: moves to the end
        while m.pending:
            m.close(round_ + 1, final=True)
        assert m.remembered_count <= 25  # window + a quarter, then cut back in one pass
    assert 20 <= m.remembered_count <= 25
    assert m.remembered("r0-0") is None  # forgotten: sent longest ago
    assert m.remembered("u0") == {"plan": 111}
    add(m, "u0", 50, plan="old")
    add(m, "r11-0", 0, plan="old")
    add(m, "r0-0", 0, plan="old")  # outside the window: nothing to compare with
    batch = m.close(99, final=True)
    assert sent(batch) == {"r0-0": {"plan": "old"}}
    assert batch.current == ["u0", "r11-0"]


def test_rollback_forgets_what_was_not_delivered() -> None:
    m = merger()
    add(m, "u1", 5, plan="five")
    add(m, "u2", 5, plan="five")
    first = m.close(0, final=True)
    add(m, "u1", 7, plan="seven", email="e7")
    add(m, "u2", 7, plan="seven")
    add(m, "u3", 7, plan="seven")
    second = m.close(1, final=True)
    # Talon.One took u2 only: u1 goes back to what the first batch delivered,
    # u3 (never delivered before) is forgotten
    m.rollback(second, ["u1", "u3", "not-in-the-batch"])
    assert m.remembered("u1") == {"plan": 5}
    assert m.remembered("u2") == {"plan": 7}
    assert m.remembered("u3") is None
    assert second.stamps() == {"u2": {"plan": 7}}  # what Talon.One acknowledged
    assert first.stamps() == {"u1": {"plan": 5}, "u2": {"plan": 5}}
    m.rollback(second, ["u1"])  # twice: nothing more happens
    assert m.remembered("u1") == {"plan": 5}
    # the retry of the undelivered events sends every value again, and an event
    # older than an undelivered value is no longer left out because of it
    add(m, "u1", 7, plan="seven", email="e7")
    add(m, "u3", 6, plan="six")
    add(m, "u2", 6, plan="six")
    batch = m.close(2, final=True)
    assert sent(batch) == {"u1": {"plan": "seven", "email": "e7"}, "u3": {"plan": "six"}}
    assert batch.current == ["u2"]


def test_rollback_of_the_whole_batch_and_of_an_older_overlapping_batch() -> None:
    m = merger(batch_size=2)
    add(m, "u1", 1, plan="one")
    first = m.close(0, final=True)
    m.rollback(first, first.sources)
    assert m.remembered("u1") is None and first.stamps() == {}
    add(m, "u1", 1, plan="one")
    older = m.close(1, final=True)
    add(m, "u1", 2, plan="two")
    newer = m.close(2, final=True)  # closed before the older one's outcome was known
    m.rollback(older, ["u1"])
    assert m.remembered("u1") == {"plan": 2}  # the later batch's memory stays
    m.rollback(newer, ["u1"])
    assert m.remembered("u1") == {"plan": 1}  # conservative: never sends older over newer


def test_discard_open_drops_the_unsent_merge_only() -> None:
    m = merger(batch_size=2, lookback=1)
    add(m, "u1", 5, plan="five")
    m.close(0, final=True)
    add(m, "u1", 6, plan="six")
    add(m, "u2", 6, plan="six")
    add(m, "u3", 6, plan="six")
    m.discard_open()
    assert m.pending == 0 and not m.full
    assert m.remembered("u1") == {"plan": 5}
    add(m, "u1", 4, plan="four")
    batch = m.close(1, final=True)
    assert sent(batch) == {} and batch.current == ["u1"]


# -- properties -------------------------------------------------------------------
events = st.lists(
    st.tuples(st.sampled_from(["u1", "u2", "u3", "u4"]), st.sampled_from(["a", "b", "c"]),
              st.integers(0, 6)),
    min_size=1, max_size=60)


def newest(evs: list[tuple[str, str, int]]) -> dict[str, dict[str, int]]:
    """Independent model: per profile and attribute, the value of the newest
    (timestamp, input order) event; the value is the event's index."""
    best: dict[tuple[str, str], tuple[int, int]] = {}
    for n, (iid, attr, ts) in enumerate(evs):
        if (iid, attr) not in best or (ts, n) >= best[iid, attr]:
            best[iid, attr] = (ts, n)
    out: dict[str, dict[str, int]] = {}
    for (iid, attr), (_, n) in best.items():
        out.setdefault(iid, {})[attr] = n
    return out


@settings(max_examples=300, deadline=None)
@given(events, st.integers(1, 3), st.integers(1, 12), st.integers(0, 2**32))
def test_property_newest_value_wins_whatever_the_batching(
        evs: list[tuple[str, str, int]], batch_size: int, take: int, seed: int) -> None:
    """Sent in any batching, with random deliveries failing and retried like
    the server's worker does (rolled back, merged again from the queue, oldest
    first): Talon.One ends with the newest value of every attribute."""
    rng = random.Random(seed)
    m = Merger(batch_size, 1, 1000)
    talon: dict[str, dict[str, int]] = {}
    queue = list(range(len(evs)))  # the spool: indexes of events not yet delivered
    rounds = 0
    while queue:
        rounds += 1
        assert rounds < 1000
        taken, queue = queue[:take], queue[take:]
        for n in taken:
            iid, attr, ts = evs[n]
            m.add(iid, {attr: n}, ts, ({}, n))
        back: list[int] = []
        while m.pending:
            batch = m.close(rounds, final=not m.full or rng.random() < 0.5)
            failed = [iid for iid in batch.sources if rng.random() < 0.3]
            m.rollback(batch, failed)
            for profile in batch.profiles:
                iid = profile["integrationId"]
                if iid in failed:
                    back += [n for _, n in batch.sources[iid]]
                else:
                    talon.setdefault(iid, {}).update(profile["attributes"])
        queue = sorted(back + queue)
    assert talon == newest(evs)


# -- with a ledger: the window is a cache in front of it ----------------------------------------
def deliver(m: Merger, ledger: Any, batch: Batch) -> None:
    """What the pipeline does once Talon.One took every profile of ``batch``."""
    acked = {p["integrationId"] for p in batch.profiles}
    ledger.record(m.entries(batch, acked), sent=batch.profiles, delivered=acked)


def test_what_an_earlier_run_delivered_holds_back_older_values(tmp_path) -> None:
    from talon_classic.ledger import Ledger

    with Ledger(tmp_path / "s.db", "https://x") as ledger:
        first = Merger(10, 0, 1000, ledger=ledger)
        add(first, "u1", 20, plan="new", email="e20")
        deliver(first, ledger, first.close(0, final=True))
        later = Merger(10, 0, 1000, ledger=ledger)  # another run: an empty window
        add(later, "u1", 10, plan="old")
        add(later, "u2", 10, plan="x")
        batch = later.close(0, final=True)
        assert sent(batch) == {"u2": {"plan": "x"}} and batch.current == ["u1"]
        assert batch.dropped == [("plan", "superseded")]
        assert later.remembered("u1") == {"plan": 20, "email": 20}  # now cached
        add(later, "u1", 20, plan="same time, read later", email="e10")
        add(later, "u1", 10, email="older")
        assert sent(later.close(1, final=True)) == {"u1": {"plan": "same time, read later",
                                                           "email": "e10"}}


def test_an_untimed_value_takes_the_timestamp_only_the_ledger_knows(tmp_path) -> None:
    """Regression: an untimed value and an older timed one in one batch, against a newer
    value the window or ledger remembers: the untimed one (read later) was lost too."""
    from talon_classic.ledger import Ledger

    with Ledger(tmp_path / "s.db", "https://x") as ledger:
        first = Merger(10, 0, 1000, ledger=ledger)
        add(first, "u1", 30, plan="thirty")
        deliver(first, ledger, first.close(0, final=True))
        for m in (first, Merger(10, 0, 1000, ledger=ledger)):  # from the window; from the ledger
            add(m, "u1", None, plan="untimed")  # takes 30, from what it replaces
            add(m, "u1", 20, plan="twenty")  # older than 30: loses
            batch = m.close(5, final=True)
            assert sent(batch) == {"u1": {"plan": "untimed"}}
            assert m.remembered("u1") == {"plan": 30}


def test_skip_unchanged_leaves_out_equal_values_and_keeps_their_newer_timestamp(tmp_path) -> None:
    from talon_classic.ledger import Ledger

    with Ledger(tmp_path / "s.db", "https://x") as ledger:
        first = Merger(10, 0, 1000, ledger=ledger, skip_unchanged=True)
        add(first, "u1", 10, plan="pro", email="a")
        deliver(first, ledger, first.close(0, final=True))
        m = Merger(10, 0, 1000, ledger=ledger, skip_unchanged=True)
        add(m, "u1", 30, plan="pro", email="b")
        batch = m.close(0, final=True)
        assert sent(batch) == {"u1": {"email": "b"}}
        assert batch.dropped == [("plan", "unchanged")]
        deliver(m, ledger, batch)
        m2 = Merger(10, 0, 1000, ledger=ledger, skip_unchanged=True)
        add(m2, "u1", 20, plan="free")  # older than the unchanged value's 30
        batch = m2.close(0, final=True)
        assert sent(batch) == {} and batch.dropped == [("plan", "superseded")]
        add(m2, "u1", 40, plan="pro", email="b")
        batch = m2.close(1, final=True)
        assert batch.current == ["u1"] and sorted(batch.dropped) == [
            ("email", "unchanged"), ("plan", "unchanged")]
        entries = m2.entries(batch)  # nothing sent, but newer timestamps to record
        assert entries.ids == ["u1"]
        assert ledger.stamps(entries.blobs[0])[0] == {"plan": 40, "email": 40}
    with pytest.raises(ValueError, match="needs a ledger"):
        Merger(10, 0, 1000, skip_unchanged=True)


stamped_events = st.lists(
    st.tuples(st.sampled_from(["u1", "u2", "u3"]), st.sampled_from(["a", "b"]),
              st.one_of(st.none(), st.integers(0, 5))),
    min_size=1, max_size=40)


def newest_read(evs: list[tuple[str, str, int | None]], delivered: list[int]
                ) -> dict[str, dict[str, int]]:
    """Independent model: apply the delivered events one by one, in the order they were
    read: a timed value replaces one at most as old (none is oldest); an untimed one always
    replaces, keeping the timestamp of what it replaced."""
    state: dict[tuple[str, str], tuple[int | None, int]] = {}
    for n in delivered:
        iid, attr, ts = evs[n]
        old = state.get((iid, attr))
        if ts is None:
            state[iid, attr] = (old[0] if old else None, n)
        elif old is None or old[0] is None or ts >= old[0]:
            state[iid, attr] = (ts, n)
    out: dict[str, dict[str, int]] = {}
    for (iid, attr), (_, n) in state.items():
        out.setdefault(iid, {})[attr] = n
    return out


@settings(max_examples=120, deadline=None)
@given(stamped_events, st.integers(1, 3), st.integers(1, 2), st.integers(0, 2**32))
def test_property_the_ledger_keeps_newest_wins_across_restarts(
        tmp_path_factory, evs, batch_size: int, window: int, seed: int) -> None:
    """Events go out in random batchings, each delivery fails at random (rolled back,
    read again later), and the merger is replaced at random (a restart: only the ledger
    remembers), with a tiny window: Talon.One ends with what applying the delivered events
    one by one, in the order they were read, gives."""
    from talon_classic.ledger import Ledger

    rng = random.Random(seed)
    path = tmp_path_factory.mktemp("ledger") / "s.db"
    reads: list[int] = []  # read number -> event number (an event failed is read again)
    delivered: list[int] = []  # read numbers delivered
    talon: dict[str, dict[str, int]] = {}
    with Ledger(path, "https://x") as ledger:
        m = Merger(batch_size, 1, window, ledger=ledger)
        queue = list(range(len(evs)))
        while queue:
            assert len(reads) < 2000
            if rng.random() < 0.3:
                m = Merger(batch_size, 1, window, ledger=ledger)  # a restart
            cut = rng.randint(1, 6)
            taken, queue = queue[:cut], queue[cut:]
            for n in taken:
                iid, attr, ts = evs[n]
                m.add(iid, {attr: n}, None if ts is None else float(ts), ({}, len(reads)))
                reads.append(n)
            back: list[int] = []
            while m.pending:
                batch = m.close(0, final=not m.full or rng.random() < 0.5)
                failed = {p["integrationId"] for p in batch.profiles if rng.random() < 0.3}
                m.rollback(batch, failed)
                for iid, sources in batch.sources.items():
                    if iid in failed:
                        back += [reads[r] for _, r in sources]
                    else:
                        delivered += [r for _, r in sources]
                for profile in batch.profiles:
                    if profile["integrationId"] not in failed:
                        talon.setdefault(profile["integrationId"], {}).update(
                            profile["attributes"])
                acked = {p["integrationId"] for p in batch.profiles} - failed
                ledger.record(m.entries(batch, acked), sent=batch.profiles, delivered=acked)
            queue = back + queue  # what failed is read again, before the rest
    assert talon == newest_read(evs, [reads[r] for r in sorted(delivered)])
