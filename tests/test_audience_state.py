"""The audience tables of the state database: recorded memberships, diffs in SQL, audience ids."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from talon_classic.audience_state import BASELINE_TALON, AudienceState


def load(state: AudienceState, ids) -> None:
    state.start_list()
    state.add_to_list([(iid, 0, n) for n, iid in enumerate(ids, 1)])


def changes(state: AudienceState, *args, **kw) -> list[tuple[str, str]]:
    return [(p.action, p.integration_id) for batch in state.changes(*args, batch_size=2, **kw)
            for p in batch]


@pytest.fixture()
def state(tmp_path: Path):
    with AudienceState(tmp_path / "state.db") as opened:
        yield opened


def test_add_to_list_counts_duplicates_once(state: AudienceState) -> None:
    state.start_list()
    assert state.add_to_list([("a", 0, 1), ("b", 0, 2), ("a", 0, 3)]) == 2
    assert state.add_to_list([("b", 1, 1), ("c", 1, 2)]) == 1


def test_mirror_changes_both_ways_in_id_order(state: AudienceState) -> None:
    state.record(7, [("add", "a"), ("add", "b"), ("add", "c")], known="mirror")
    load(state, ["d", "b", "a", "e"])
    assert changes(state, 7, "mirror") == [("delete", "c"), ("add", "d"), ("add", "e")]
    # an unknown membership: it can only add
    assert changes(state, 7, "mirror", removes=False) == [("add", "d"), ("add", "e")]
    assert state.listed() == 4


def test_add_and_remove_changes(state: AudienceState) -> None:
    state.record(7, [("add", "a"), ("add", "b")])
    load(state, ["a", "x"])
    assert changes(state, 7, "add") == [("add", "x")]
    assert changes(state, 7, "remove") == [("delete", "a")]
    assert changes(state, 7, "remove", removes=False) == [("delete", "a"), ("delete", "x")]


def test_audiences_are_kept_apart(state: AudienceState) -> None:
    state.record(1, [("add", "a")])
    state.record(2, [("add", "b")])
    load(state, ["a"])
    assert changes(state, 2, "mirror") == [("delete", "b"), ("add", "a")]
    assert state.member_count(1) == 1 and list(state.members(2)) == ["b"]


def test_a_talon_baseline_is_compared_without_touching_the_record(state: AudienceState) -> None:
    state.record(7, [("add", "mine")], known="mirror")
    state.start_list()
    state.add_talon_members(["theirs", "both"])
    state.add_to_list([("both", 0, 1), ("new", 0, 2)])
    assert changes(state, 7, "mirror", BASELINE_TALON) == [("delete", "theirs"), ("add", "new")]
    assert list(state.members(7)) == ["mine"]
    state.adopt_talon(7)
    assert list(state.members(7)) == ["both", "theirs"]
    assert state.known_source(7) == "talon"


def test_record_reset_forget_and_known(state: AudienceState) -> None:
    assert not state.is_known(3)
    state.record(3, [("add", "a"), ("add", "b"), ("delete", "a")])
    assert list(state.members(3)) == ["b"] and not state.is_known(3)
    state.record(3, [], known="mirror")
    assert state.known_source(3) == "mirror"
    state.mark_known(3, "other")  # kept as it was
    assert state.known_source(3) == "mirror"
    state.reset(3)
    assert state.member_count(3) == 0 and state.known_source(3) == "clear"
    state.remember_audience_id("segment", "aud_1", 3)
    state.forget(3)
    assert not state.is_known(3) and state.audience_id_for("segment", "aud_1") is None


def test_recording_while_the_diff_streams_changes_nothing_it_returns(
        state: AudienceState) -> None:
    state.record(1, [("add", f"old{i:04d}") for i in range(1500)], known="mirror")
    load(state, [f"u{i:04d}" for i in range(2500)])
    seen: list[tuple[str, str]] = []
    for batch in state.changes(1, "mirror", batch_size=1000):
        seen += [(p.action, p.integration_id) for p in batch]
        state.record(1, [(p.action, p.integration_id) for p in batch])
    assert seen == ([("delete", f"old{i:04d}") for i in range(1500)]
                    + [("add", f"u{i:04d}") for i in range(2500)])
    assert state.member_count(1) == 2500


def test_batches_are_filled_across_removes_and_adds(state: AudienceState) -> None:
    state.record(1, [("add", "a"), ("add", "b"), ("add", "c")], known="mirror")
    load(state, ["x", "y"])
    sizes = [[p.action for p in b] for b in state.changes(1, "mirror", batch_size=4)]
    assert sizes == [["delete", "delete", "delete", "add"], ["add"]]


def test_the_diff_merges_rather_than_looking_up_each_id(state: AudienceState) -> None:
    plan = state._list.execute(
        "EXPLAIN QUERY PLAN SELECT integration_id FROM temp.sync_list EXCEPT SELECT "
        "integration_id FROM main.audience_members WHERE audience_id = 1 ORDER BY 1").fetchall()
    assert any("MERGE (EXCEPT)" in row[-1] for row in plan)


def test_position_is_where_the_list_first_has_an_id(state: AudienceState) -> None:
    state.start_list()
    state.add_to_list([("a", 0, 3), ("b", 1, 7), ("a", 2, 9)])
    assert state.position("a") == (0, 3) and state.position("b") == (1, 7)
    assert state.position("zz") is None


def test_an_abandoned_diff_releases_its_snapshot(state: AudienceState) -> None:
    load(state, [f"u{i}" for i in range(50)])
    stream = state.changes(1, "add", batch_size=10)
    next(stream)
    state.record(1, [("add", "late")])

    def seen_by_the_diffs_connection() -> int:
        return state._list.execute("SELECT COUNT(*) FROM main.audience_members").fetchone()[0]

    assert seen_by_the_diffs_connection() == 0  # the diff reads the database as it started
    stream.close()
    assert seen_by_the_diffs_connection() == 1  # released: the WAL can be checkpointed again


def test_audience_ids(state: AudienceState) -> None:
    assert state.audience_id_for("segment", "aud_1") is None
    state.remember_audience_id("segment", "aud_1", 5)
    state.remember_audience_id("segment", "aud_1", 6)
    state.remember_audience_id("braze", "aud_1", 9)
    assert state.audience_id_for("segment", "aud_1") == 6
    state.forget_audience_id("segment", "aud_1")
    assert state.audience_id_for("segment", "aud_1") is None
    assert state.audience_id_for("braze", "aud_1") == 9


def test_the_file_is_private_wal_and_shared_with_other_tables(tmp_path: Path) -> None:
    path = tmp_path / "new" / "state.db"
    path.parent.mkdir(mode=0o700)
    with sqlite3.connect(path) as other:  # the ledger's tables, made first
        other.execute("CREATE TABLE ledger (k TEXT PRIMARY KEY, v TEXT)")
        other.execute("INSERT INTO ledger VALUES ('x', 'y')")
    os.chmod(path, 0o600)
    with AudienceState(path) as state:
        state.record(1, [("add", "a")])
        for side in ("-wal", "-shm"):  # SQLite gives them the database's own mode
            assert os.stat(f"{path}{side}").st_mode & 0o777 == 0o600
        with sqlite3.connect(path) as other:  # a second writer at the same time (WAL)
            other.execute("INSERT INTO ledger VALUES ('z', 'w')")
        assert state.persistent
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("SELECT COUNT(*) FROM ledger").fetchone()[0] == 2
    fresh = tmp_path / "a" / "b.db"
    AudienceState(fresh).close()
    assert os.stat(fresh).st_mode & 0o777 == 0o600
    assert os.stat(fresh.parent).st_mode & 0o777 == 0o700


def test_no_path_is_a_temporary_database(tmp_path: Path) -> None:
    with AudienceState(None) as state:
        assert not state.persistent
        state.record(1, [("add", "a")])
        assert state.member_count(1) == 1
        scratch = state._scratch
        assert scratch is not None and os.path.isdir(scratch)
    assert not os.path.exists(scratch)
    with AudienceState(None) as again:
        assert again.member_count(1) == 0


# -- requests in flight, unsure ids ------------------------------------------------------
def test_a_request_noted_in_flight_and_answered_leaves_nothing_unsure(tmp_path: Path) -> None:
    with AudienceState(tmp_path / "s.db") as state:
        request = state.begin_request(7, [("add", "a"), ("add", "b")])
        assert state.inflight_count(7) == 1
        state.record(7, [("add", "a")], request=request, unsure=["b"])  # b ran out of retries
        assert state.inflight_count() == 0 and state.unsure_ids(7) == ["b"]
        assert list(state.members(7)) == ["a"]


def test_a_note_left_in_flight_survives_the_process_and_makes_its_ids_unsure(
        tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with AudienceState(db) as state:
        state.record(7, [("add", "a"), ("add", "b"), ("add", "c")], known="mirror")
        state.begin_request(7, [("delete", "b"), ("add", "x")])  # never answered
        state.begin_request(8, [("add", "other")])
    with AudienceState(db) as state:
        load(state, ["a", "b", "x"])
        # a dry run reads the notes, and keeps them
        assert state.load_unsure(7, settle=False) == 2
        assert state.inflight_count(7) == 1 and state.unsure_ids(7) == []
        load(state, ["a", "b", "x"])
        assert state.load_unsure(7) == 2
        assert state.inflight_count(7) == 0 and state.unsure_ids(7) == ["b", "x"]
        assert state.inflight_count(8) == 1  # another audience's notes are its own
        # b is recorded a member, x not: both are sent what the list asks for
        assert changes(state, 7, "mirror") == [("delete", "c"), ("add", "b"), ("add", "x")]
        assert changes(state, 7, "add") == [("add", "b"), ("add", "x")]
        assert changes(state, 7, "remove") == [("delete", "a"), ("delete", "b"),
                                               ("delete", "x")]


def test_unsure_ids_not_in_the_list_are_removed_only_by_a_mirror_that_removes(
        state: AudienceState) -> None:
    state.record(7, [("add", "a")], known="mirror")
    state.begin_request(7, [("add", "gone"), ("delete", "a")])
    load(state, ["a"])
    assert state.load_unsure(7) == 2
    assert changes(state, 7, "mirror") == [("delete", "gone"), ("add", "a")]
    assert changes(state, 7, "mirror", removes=False) == [("add", "a")]
    assert changes(state, 7, "add") == [("add", "a")]
    assert changes(state, 7, "remove") == [("delete", "a")]
    # Talon.One's membership is the truth: nothing is unsure against it
    state.add_talon_members(["a"])
    assert changes(state, 7, "mirror", baseline=BASELINE_TALON) == []


def test_an_acknowledgement_makes_an_unsure_id_sure_again(state: AudienceState) -> None:
    state.begin_request(7, [("add", "a"), ("add", "b")])
    load(state, ["a", "b"])
    assert state.load_unsure(7) == 2
    request = state.begin_request(7, [("add", "a"), ("add", "b")])
    state.record(7, [("add", "a")], request=request, resolves=True)  # b: rejected
    assert state.unsure_ids(7) == ["b"] and list(state.members(7)) == ["a"]
    load(state, ["a", "b"])
    assert state.load_unsure(7) == 1
    assert changes(state, 7, "add") == [("add", "b")]


def test_clear_delete_and_a_read_from_talon_make_every_id_sure(state: AudienceState) -> None:
    for audience_id in (1, 2, 3):
        state.begin_request(audience_id, [("add", "a")])
        load(state, [])
        assert state.load_unsure(audience_id) == 1
    state.reset(1)
    state.forget(2)
    state.start_list()
    state.add_talon_members(["a"])
    state.adopt_talon(3)
    assert [state.unsure_ids(a) for a in (1, 2, 3)] == [[], [], []]
    assert list(state.members(3)) == ["a"]
