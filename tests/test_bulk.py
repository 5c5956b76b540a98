"""The bulk Pipeline as a library: what happens when something nobody planned for breaks."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import hostile
import pytest

from talon_classic.bulk import Options, Pipeline, unexpected
from talon_classic.client import BulkOutcome, Client
from talon_classic.deadletter_file import DeadLetters
from talon_classic.jsonio import loads
from talon_classic.ledger import Ledger
from talon_classic.transform import Engine


class FirstBatchBreaks(Client):
    """A real client to the emulator whose first bulk call hits a bug (a TypeError)."""

    calls = 0

    def upsert_profiles(self, profiles: list[dict[str, Any]]) -> BulkOutcome:
        FirstBatchBreaks.calls += 1
        if FirstBatchBreaks.calls == 1:
            raise TypeError("unsupported operand type(s) for +: 'int' and 'str'")
        return super().upsert_profiles(profiles)


def test_an_unexpected_error_dead_letters_its_batch_and_the_run_goes_on(
        talon_emulator, tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"userId": f"u{i}", "traits": {"email": f"{i}@x"}}) + "\n"
                           for i in range(6)))
    dead = DeadLetters(tmp_path / "dead.jsonl")
    client = FirstBatchBreaks(talon_emulator.url, talon_emulator.api_key, rate_limit=0)
    pipeline = Pipeline(Engine(["email"]), client, Options(batch_size=2, concurrency=1),
                        dead_letters=dead)
    summary = pipeline.run([str(src)])
    assert pipeline.auth_error is None  # not reported as an authentication failure
    assert pipeline.internal_error == ("unexpected error TypeError: unsupported operand type(s) "
                                       "for +: 'int' and 'str'")
    assert (summary.profiles_upserted, summary.dead_lettered, summary.internal_errors) == (4, 2, 1)
    assert summary.stopped is None  # later batches were all sent
    letters = [json.loads(x) for x in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert [x["event"]["userId"] for x in letters] == ["u0", "u1"]
    assert {x["reason"] for x in letters} == {"internal_error"}
    assert talon_emulator.stats()["profiles"] == 4


def test_unexpected_never_shows_an_authorization_value() -> None:
    exc = ValueError("Invalid header value b'ApiKey-v1 secret\\nkey'\nsecond line")
    text = unexpected(exc)
    assert text.startswith("unexpected error ValueError: Invalid header value b'ApiKey-v1 ")
    assert "secret" not in text and "key'" not in text and "\n" not in text


def test_ctrl_c_while_the_last_batches_finish_still_completes_the_summary(
        talon_emulator, tmp_path: Path, monkeypatch) -> None:
    import concurrent.futures

    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"userId": f"u{i}"}) + "\n" for i in range(4)))
    real = concurrent.futures.ThreadPoolExecutor.shutdown

    def interrupted(self, wait=True, *, cancel_futures=False):
        real(self, wait=wait, cancel_futures=cancel_futures)
        raise KeyboardInterrupt

    monkeypatch.setattr(concurrent.futures.ThreadPoolExecutor, "shutdown", interrupted)
    client = Client(talon_emulator.url, talon_emulator.api_key, rate_limit=0)
    pipeline = Pipeline(Engine([]), client, Options(batch_size=2))
    try:
        pipeline.run([str(src)])
    except KeyboardInterrupt:
        pass
    summary = pipeline.summary
    assert (summary.requests, summary.profiles_upserted) == (2, 4)
    assert summary.finished is not None
    assert summary.stopped == ("interrupted (Ctrl-C); nothing was recorded (no --checkpoint), "
                               "so a rerun starts over")


def test_a_second_ctrl_c_before_the_first_is_recorded_still_says_interrupted(
        talon_emulator, tmp_path: Path, monkeypatch) -> None:
    """Two quick Ctrl-C: the second lands inside the first one's handler, before stop()
    records why. Seen in CI as a summary with no "stopped early" line and exit 130."""
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"userId": f"u{i}"}) + "\n" for i in range(40)))
    real_take, real_stop = Pipeline._take, Pipeline.stop
    taken = stops = 0

    def take(self, *args):
        nonlocal taken
        taken += 1
        if taken == 10:
            raise KeyboardInterrupt  # the first Ctrl-C
        return real_take(self, *args)

    def stop(self, reason):
        nonlocal stops
        stops += 1
        if stops == 1:
            raise KeyboardInterrupt  # the second, before the first reason is recorded
        real_stop(self, reason)

    monkeypatch.setattr(Pipeline, "_take", take)
    monkeypatch.setattr(Pipeline, "stop", stop)
    client = Client(talon_emulator.url, talon_emulator.api_key, rate_limit=0)
    pipeline = Pipeline(Engine([]), client, Options(batch_size=2))
    with pytest.raises(KeyboardInterrupt):
        pipeline.run([str(src)])
    summary = pipeline.summary
    assert summary.finished is not None and summary.profiles_upserted == 8
    assert summary.stopped == ("interrupted (Ctrl-C); nothing was recorded (no --checkpoint), "
                               "so a rerun starts over")


def test_values_json_cannot_send_are_dropped_and_nothing_is_lost(talon_emulator_factory,
                                                                 tmp_path: Path) -> None:
    """Lone surrogates, huge integers, deep nesting: dropped or skipped, every batch delivered.

    Before: the sender raised on the first lone surrogate, every later batch
    was dropped and the run ended as an authentication failure.
    """
    emu = talon_emulator_factory(reject_ids={"rejected"})
    kinds = hostile.dropped_events()
    lines = [hostile.good("good-1")]
    lines += [line for _, line, _ in kinds]
    lines += [hostile.SURROGATE_USER, hostile.TOO_DEEP]
    lines += [hostile.good("rejected", **hostile.HOSTILE_CONTEXT)]
    lines += [hostile.good(f"after-{i}") for i in range(5)]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n")
    dead = DeadLetters(tmp_path / "dead.jsonl")
    warnings: list[str] = []
    with Client(emu.url, emu.api_key, rate_limit=0) as client:
        pipeline = Pipeline(Engine(hostile.ALLOW), client, Options(batch_size=2, concurrency=2),
                            dead_letters=dead, warn=warnings.append)
        summary = pipeline.run([str(src)])

    assert pipeline.auth_error is None and summary.stopped is None
    want = ["good-1", *(uid for uid, _, _ in kinds), *(f"after-{i}" for i in range(5))]
    for uid in want:
        assert emu.profile(uid)["attributes"] == {"email": hostile.email(uid)}, uid
    assert emu.profile("rejected") is None
    assert summary.profiles_upserted == len(want)
    assert summary.skipped == {"invalid_user_id": 1, "invalid_json": 1}
    assert summary.dropped["unsupported_value"] == len(kinds)
    assert set(summary.dropped_names["unsupported_value"]) == {name for _, _, name in kinds}
    assert any("nested too deeply" in w for w in warnings)

    # the rejected profile's event is dead-lettered whole, huge values and all
    letters = [loads(x) for x in (tmp_path / "dead.jsonl").read_bytes().splitlines()]
    assert [letter["reason"] for letter in letters] == ["rejected"]
    assert letters[0]["event"] == loads(lines[-6])
    assert letters[0]["event"]["context"]["big"] == hostile.BIG_400
    assert letters[0]["event"]["context"]["huge"] == 10**5000 - 1
    assert summary.dead_lettered == 1 and summary.as_dict()["dead_lettered"] == 1
    json.dumps(summary.as_dict())  # the summary itself is printable JSON
    summary.render().encode("utf-8")  # and printable text: no lone surrogate in names


def test_an_id_prefix_that_is_not_text_is_refused() -> None:
    with pytest.raises(ValueError, match="lone surrogate"):
        Options(id_prefix="x\udcff")  # what an undecodable command-line byte becomes
    assert Options(id_prefix="tenant-ü/").id_prefix == "tenant-ü/"


def test_a_profile_that_was_not_delivered_does_not_hold_back_older_values(
        talon_emulator, tmp_path: Path) -> None:
    """u1's newer plan fails (501, dead-lettered); its older plan, read later, is still sent.

    Without the rollback the merger believed the newer value was sent and left
    the older one out, so u1 ended with no plan at all.
    """
    talon_emulator.configure(fail_next=1, fail_status=501)
    events = [
        {"userId": "u1", "timestamp": "2024-01-01T00:00:20Z", "traits": {"plan": "new"}},
        {"userId": "u2", "traits": {"plan": "x"}},
        {"userId": "u3", "traits": {"plan": "x"}},
        {"userId": "u4", "traits": {"plan": "x"}},
        {"userId": "u1", "timestamp": "2024-01-01T00:00:10Z", "traits": {"plan": "old"}},
        {"userId": "u5", "traits": {"plan": "x"}},
    ]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(e) + "\n" for e in events))
    client = Client(talon_emulator.url, talon_emulator.api_key, rate_limit=0)
    pipeline = Pipeline(Engine(["plan"]), client, Options(batch_size=2, concurrency=1),
                        dead_letters=DeadLetters(tmp_path / "dead.jsonl"))
    summary = pipeline.run([str(src)])
    assert summary.dead_lettered == 2  # u1 (new) and u2, the failed first batch
    assert talon_emulator.profile("u1")["attributes"] == {"plan": "old"}


def _kill_with_a_request_in_flight(emu: Any, state: Path, repair_after: float,
                                   plan: str = "old") -> threading.Thread:
    """A run that has its ledger open and a request with ``plan`` for u4 at Talon.One, and is
    killed: close() never runs, the request lands once the emulator's hang ends."""
    killed = Ledger(state, emu.url)
    killed.overtaken_until(repair_after)
    killed._db.close()
    killed._reader.close()
    orphan = threading.Thread(target=lambda: Client(emu.url, emu.api_key, rate_limit=0,
                                                    max_attempts=1).upsert_profiles(
        [{"integrationId": "u4", "attributes": {"plan": plan}}]), daemon=True)
    orphan.start()
    deadline = time.monotonic() + 10
    while emu.configure()["hang_next"] and time.monotonic() < deadline:
        time.sleep(0.02)  # the request is in Talon.One's hands
    return orphan


def _identify(emu: Any, state: Path, src: Path, warnings: list[str] | None = None,
              client: Client | None = None, **options: Any) -> Any:
    with Ledger(state, emu.url) as ledger, \
            (client or Client(emu.url, emu.api_key, rate_limit=0)) as sender:
        return Pipeline(Engine(["plan"]), sender, Options(**options), ledger=ledger,
                        warn=(warnings if warnings is not None else []).append).run([str(src)])


def _events(path: Path, *events: tuple[str, str, str]) -> Path:
    path.write_text("".join(json.dumps({"type": "identify", "userId": uid, "traits": {"plan": plan},
                                        "timestamp": ts}) + "\n" for uid, plan, ts in events))
    return path


def test_a_request_a_killed_run_left_in_flight_cannot_have_the_last_word(
        talon_emulator_factory, tmp_path: Path) -> None:
    """The run before was killed while Talon.One was still working on a request with an older
    value; this run delivers a newer one, then the dead run's request lands. Before, the
    older value stayed for good (``serve`` already guarded against it, ``identify`` did not);
    now what this run delivers in the killed run's window is repaired once that passed."""
    emu = talon_emulator_factory(hang_next=1, hang_seconds=0.6)  # handled late, as Talon.One may
    state = tmp_path / "state.db"
    orphan = _kill_with_a_request_in_flight(emu, state, repair_after=1.5)
    warnings: list[str] = []
    summary = _identify(emu, state, _events(tmp_path / "in.jsonl",
                                            ("u4", "new", "2026-02-01T00:00:00Z")), warnings)
    orphan.join(5)
    assert emu.stats()["profile_updates"] == 3  # new, old (late), new again (repaired)
    assert emu.profile("u4")["attributes"] == {"plan": "new"}
    assert summary.profiles_repaired == 1 and summary.repairs_left == 0
    assert any(f"the state file {state} says a run before this one was killed" in w
               for w in warnings)
    with Ledger(state, emu.url) as after:  # this run closed it: the next one trusts it
        assert not after.unclean and after.overtaken_until(1.5) == 0.0


def test_a_run_that_ends_early_leaves_the_killed_runs_window_to_the_next(
        talon_emulator_factory, tmp_path: Path) -> None:
    """Found by an adversarial pass: the run after the kill ended at once (here: nothing to
    send; a wrong key did the same), and the next one, inside the window, trusted Talon.One."""
    emu = talon_emulator_factory(hang_next=1, hang_seconds=0.8)
    state = tmp_path / "state.db"
    orphan = _kill_with_a_request_in_flight(emu, state, repair_after=2.0)
    (tmp_path / "empty.jsonl").write_text("")
    assert _identify(emu, state, tmp_path / "empty.jsonl").profiles_upserted == 0
    summary = _identify(emu, state, _events(tmp_path / "in.jsonl",
                                            ("u4", "new", "2026-02-01T00:00:00Z")))
    orphan.join(5)
    assert summary.profiles_repaired == 1
    assert emu.profile("u4")["attributes"] == {"plan": "new"}


class SlowAnswers(Client):
    """Talon.One answers each bulk request late (the request itself arrived at once)."""

    def upsert_profiles(self, profiles: list[dict[str, Any]]) -> BulkOutcome:
        outcome = super().upsert_profiles(profiles)
        time.sleep(0.8)
        return outcome


def test_a_request_started_in_the_window_is_repaired_even_if_answered_after_it(
        talon_emulator_factory, tmp_path: Path) -> None:
    """Found by an adversarial pass: whether a delivery was uncertain was decided when it was
    recorded, so one that started inside the window and was answered after it was trusted."""
    emu = talon_emulator_factory(hang_next=1, hang_seconds=0.3)
    state = tmp_path / "state.db"
    orphan = _kill_with_a_request_in_flight(emu, state, repair_after=0.5)
    summary = _identify(emu, state, _events(tmp_path / "in.jsonl",
                                            ("u4", "new", "2026-02-01T00:00:00Z")),
                        client=SlowAnswers(emu.url, emu.api_key, rate_limit=0))
    orphan.join(5)
    assert summary.profiles_repaired == 1
    assert emu.profile("u4")["attributes"] == {"plan": "new"}


class RefusesAfterTheFirst(Client):
    """A real client; once its first bulk request is answered, Talon.One refuses u4."""

    def __init__(self, emu: Any) -> None:
        super().__init__(emu.url, emu.api_key, rate_limit=0)
        self.emu, self.calls = emu, 0

    def upsert_profiles(self, profiles: list[dict[str, Any]]) -> BulkOutcome:
        outcome = super().upsert_profiles(profiles)
        self.calls += 1
        if self.calls == 1:
            self.emu.configure(reject_ids=["u4"])
        return outcome


def test_a_refused_repair_is_counted_in_the_summary(talon_emulator_factory,
                                                    tmp_path: Path) -> None:
    """Found by an adversarial pass: one warning, and a summary that said nothing."""
    emu = talon_emulator_factory(hang_next=1, hang_seconds=0.3)
    state = tmp_path / "state.db"
    orphan = _kill_with_a_request_in_flight(emu, state, repair_after=0.6)
    warnings: list[str] = []
    summary = _identify(emu, state, _events(tmp_path / "in.jsonl",
                                            ("u4", "new", "2026-02-01T00:00:00Z")), warnings,
                        client=RefusesAfterTheFirst(emu))
    orphan.join(5)
    assert summary.repairs_refused == 1 and summary.profiles_repaired == 0
    assert any(w.startswith("u4: repair refused: ") for w in warnings)
    assert "repair refused                1  profiles" in summary.render()


def test_skip_unchanged_is_off_in_the_run_after_a_kill(talon_emulator_factory,
                                                        tmp_path: Path) -> None:
    """Found by an adversarial pass: the killed run's request (b) was carried out, the ledger
    still had a's digest, so the next a was "unchanged" and b stayed for good."""
    emu = talon_emulator_factory()
    state = tmp_path / "state.db"
    _identify(emu, state, _events(tmp_path / "a.jsonl", ("u4", "a", "2026-01-01T00:00:00Z")),
              skip_unchanged=True)
    emu.configure(hang_next=1, hang_seconds=0.3)
    _kill_with_a_request_in_flight(emu, state, repair_after=0.6, plan="b").join(5)
    assert emu.profile("u4")["attributes"] == {"plan": "b"}
    warnings: list[str] = []
    summary = _identify(emu, state, _events(tmp_path / "a2.jsonl",
                                            ("u4", "a", "2026-01-03T00:00:00Z")), warnings,
                        skip_unchanged=True)
    assert emu.profile("u4")["attributes"] == {"plan": "a"}
    assert summary.profiles_upserted == 1
    assert any(w.endswith("; --skip-unchanged is off for this run") for w in warnings)


def test_a_run_after_a_clean_one_repairs_nothing(talon_emulator, tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"userId": "u1", "traits": {"plan": "a"}}) + "\n")
    for _ in range(2):
        with Ledger(tmp_path / "state.db", talon_emulator.url) as ledger, \
                Client(talon_emulator.url, talon_emulator.api_key, rate_limit=0) as client:
            summary = Pipeline(Engine(["plan"]), client, Options(repair_after=30),
                               ledger=ledger).run([str(src)])
        assert summary.profiles_repaired == 0 and summary.repair_wait == 0


def test_a_batch_that_cannot_be_recorded_stops_the_run_and_is_not_counted_dead_lettered(
        talon_emulator, tmp_path: Path) -> None:
    """The checkpoint of a delivered batch cannot be written (its directory is gone): the run
    stops saying so, and the batch is not counted among the unexpected errors whose events
    are dead-lettered (they are not: they were delivered, not recorded)."""
    import shutil

    from talon_classic.checkpoint import Checkpoint

    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"userId": f"u{i}", "traits": {"email": f"{i}@x"}}) + "\n"
                           for i in range(4)))
    where = tmp_path / "ckpt"
    where.mkdir()
    checkpoint = Checkpoint(where / "run.json", {})
    client = Client(talon_emulator.url, talon_emulator.api_key, rate_limit=0)
    pipeline = Pipeline(Engine(["email"]), client, Options(batch_size=2, concurrency=1),
                        dead_letters=DeadLetters(tmp_path / "dead.jsonl"), checkpoint=checkpoint,
                        before_send=lambda batch: shutil.rmtree(where, ignore_errors=True))
    summary = pipeline.run([str(src)])
    assert pipeline.internal_error is not None
    assert pipeline.internal_error.startswith("unexpected error FileNotFoundError: ")
    assert summary.stopped is not None and summary.stopped.startswith("cannot record batch 0 (")
    assert (summary.profiles_upserted, summary.dead_lettered, summary.internal_errors) == (2, 0, 0)
    assert "unexpected errors" not in summary.render()
    assert not (tmp_path / "dead.jsonl").exists()


def test_unexpected_names_an_error_class_whose_name_says_nothing() -> None:
    """``struct.error`` is called ``error``: its module is named, not "error error"."""
    import struct

    with pytest.raises(struct.error) as caught:
        struct.pack("<d", 10**400)  # the ledger packing a huge timestamp
    assert unexpected(caught.value) == ("unexpected error struct.error: required argument is "
                                        "not a float")
