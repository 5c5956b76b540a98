"""Engage memberships delivered to the emulator: merged newest-first, never behind the ledger."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from talon_classic.bulk import Options, Pipeline
from talon_classic.client import Client
from talon_classic.deadletter_file import DeadLetters
from talon_classic.memberships import MembershipDelivery, MembershipLedger
from talon_classic.server import Metrics, Worker
from talon_classic.settings import Settings
from talon_classic.spool import Spool
from talon_classic.transform import Engine

PERSONAS = {"computation_class": "audience", "computation_key": "vip_users",
            "computation_id": "aud_1", "space_id": "spa_1"}


def identify(user: str, value: bool, ts: str | None = None, **extra: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "identify", "userId": user,
                             "traits": {"vip_users": value, **extra},
                             "context": {"personas": dict(PERSONAS)}}
    if ts is not None:
        event["timestamp"] = ts
    return event


def track(user: str, entered: bool, ts: str | None = None,
          personas: dict[str, Any] | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "track", "userId": user,
        "event": "Audience Entered" if entered else "Audience Exited",
        "properties": {"audience_key": (personas or PERSONAS)["computation_key"]},
        "context": {"personas": dict(personas or PERSONAS)}}
    if ts is not None:
        event["timestamp"] = ts
    return event


def write(path: Path, events: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return str(path)


def run(emu, tmp_path: Path, events: list[dict[str, Any]], *, mode: str = "memberships",
        state: Path | None = None, settings: Settings | None = None, batch_size: int = 1000,
        name: str = "in.jsonl", management: bool = False) -> tuple[Pipeline, list[dict]]:
    """One identify run over ``events``; returns the pipeline and the dead letters written."""
    client = Client(emu.url, emu.api_key, rate_limit=0)
    settings = settings or Settings()
    mgmt = None
    if management:
        from talon_classic.management import ManagementClient

        mgmt = ManagementClient(emu.url, emu.management_key, rate_limit=0)
    dead_path = tmp_path / f"{name}.dead.jsonl"
    warnings: list[str] = []
    with client, MembershipDelivery.open(client, settings, state, management=mgmt,
                                         warn=warnings.append) as delivery:
        pipeline = Pipeline(Engine(settings.custom_attributes or ["email"],
                                   engage_audiences=mode), client,
                            Options(batch_size=batch_size, concurrency=2),
                            dead_letters=DeadLetters(dead_path), memberships=delivery)
        pipeline.run([write(tmp_path / name, events)])
    pipeline.warnings = warnings  # type: ignore[attr-defined]
    letters = ([json.loads(x) for x in dead_path.read_text().splitlines()]
               if dead_path.exists() else [])
    return pipeline, letters


def members(emu, computation_id: str = "aud_1") -> list[str] | None:
    found = [a for a in emu.audiences() if a["integrationId"] == computation_id]
    return emu.audience_members(found[0]["id"]) if found else None


def test_identifies_and_tracks_become_memberships(talon_emulator, tmp_path: Path) -> None:
    other = {**PERSONAS, "computation_key": "churn_risk", "computation_id": "aud_2"}
    pipeline, letters = run(talon_emulator, tmp_path, [
        identify("u1", True, email="u1@x"),
        identify("u2", True),
        track("u3", True),
        track("u4", True, personas=other),
        identify("u2", False),  # later in the file, no timestamps: file order
    ])
    assert letters == []
    audiences = {a["name"]: a for a in talon_emulator.audiences()}
    assert set(audiences) == {"vip_users", "churn_risk"}
    assert audiences["vip_users"]["integrationId"] == "aud_1"
    assert members(talon_emulator) == ["u1", "u3"]
    assert members(talon_emulator, "aud_2") == ["u4"]
    # the boolean attribute is not sent in memberships mode; other traits are
    assert talon_emulator.profile("u1")["attributes"] == {"email": "u1@x"}
    assert talon_emulator.profile("u3")["attributes"] == {}
    summary = pipeline.summary
    # u2's add was superseded by its later delete in the same batch
    assert summary.memberships == {"added": 3, "removed": 1, "superseded": 1}
    assert summary.as_dict()["memberships"] == summary.memberships
    assert "memberships added             3  (removed 1, superseded by newer 1)" in (
        summary.render())
    assert summary.kept == 5 and not summary.skipped


def test_an_older_exit_after_a_newer_entry_keeps_the_member(talon_emulator, tmp_path) -> None:
    pipeline, _ = run(talon_emulator, tmp_path, [
        track("u1", True, "2024-05-03T10:00:00Z"),
        track("u1", False, "2024-05-03T09:00:00Z"),  # older, arrives later
        identify("u2", True, "2024-05-03T10:00:00Z"),
        identify("u9", True),  # another profile, so u2's exit lands in a second batch
        identify("u2", False, "2024-05-02T10:00:00Z"),
    ], batch_size=2)
    assert members(talon_emulator) == ["u1", "u2", "u9"]
    assert pipeline.summary.memberships == {"added": 3, "removed": 0, "superseded": 2}


def test_a_rerun_never_lets_an_older_action_win(talon_emulator, tmp_path) -> None:
    state = tmp_path / "state.db"
    run(talon_emulator, tmp_path, [track("u1", True, "2024-05-03T10:00:00Z"),
                                   track("u2", False, "2024-05-03T10:00:00Z")],
        state=state, name="first.jsonl")
    assert members(talon_emulator) == ["u1"]
    again, _ = run(talon_emulator, tmp_path, [
        track("u1", False, "2024-05-03T09:00:00Z"),  # older than what was acknowledged
        track("u2", True, "2024-05-03T11:00:00Z"),  # newer
        track("u3", True),  # no timestamp: sent
    ], state=state, name="second.jsonl")
    assert members(talon_emulator) == ["u1", "u2", "u3"]
    assert again.summary.memberships == {"added": 2, "removed": 0, "superseded": 1}
    assert len(talon_emulator.audiences()) == 1  # remembered, not created again
    ledger = MembershipLedger(state)
    try:
        aid = talon_emulator.audiences()[0]["id"]
        assert ledger.acknowledged([(aid, "u1"), (aid, "u2"), (aid, "nobody")]) == {
            (aid, "u1"): ("add", 1714730400.0), (aid, "u2"): ("add", 1714734000.0)}
    finally:
        ledger.close()
    assert oct(state.stat().st_mode & 0o777) == "0o600"


def test_without_state_a_rerun_cannot_know(talon_emulator, tmp_path) -> None:
    run(talon_emulator, tmp_path, [track("u1", True, "2024-05-03T10:00:00Z")], name="a.jsonl")
    aid = talon_emulator.audiences()[0]["id"]
    _, letters = run(talon_emulator, tmp_path, [track("u1", False, "2024-05-03T09:00:00Z")],
                     name="b.jsonl", settings=Settings(audience_ids={"aud_1": aid}))
    assert letters == []
    assert members(talon_emulator) == []  # no state database: nothing was kept to compare with


def test_both_mode_sends_the_attribute_and_the_membership(talon_emulator, tmp_path) -> None:
    run(talon_emulator, tmp_path, [identify("u1", True)], mode="both")
    assert talon_emulator.profile("u1")["attributes"] == {"vip_users": True}
    assert members(talon_emulator) == ["u1"]


def test_attributes_mode_sends_no_membership(talon_emulator, tmp_path) -> None:
    client = Client(talon_emulator.url, talon_emulator.api_key, rate_limit=0)
    with client:
        pipeline = Pipeline(Engine([]), client, Options())
        pipeline.run([write(tmp_path / "in.jsonl", [identify("u1", True),
                                                    track("u2", True)])])
    assert talon_emulator.audiences() == []
    assert pipeline.summary.memberships is None and "memberships" not in (
        pipeline.summary.as_dict())
    assert pipeline.summary.skipped == {"not_identify": 1}


def test_409_is_resolved_through_the_management_key(talon_emulator_factory, tmp_path) -> None:
    emu = talon_emulator_factory(management_key="mk-0123456789abcdef")
    with Client(emu.url, emu.api_key, rate_limit=0) as client:
        existing = client.create_audience("VIP (made by hand)", integration="segment",
                                          integration_id="aud_1")
    pipeline, letters = run(emu, tmp_path, [track("u1", True)], management=True)
    assert letters == [] and emu.audience_members(existing.id) == ["u1"]
    assert len(emu.audiences()) == 1


def test_409_is_resolved_through_audience_ids(talon_emulator, tmp_path) -> None:
    with Client(talon_emulator.url, talon_emulator.api_key, rate_limit=0) as client:
        existing = client.create_audience("VIP", integration="segment", integration_id="aud_1")
        # mapped by its computation_key; a map entry is used before anything is created
        pipeline, letters = run(talon_emulator, tmp_path, [track("u1", True)],
                                settings=Settings(audience_ids={"vip_users": existing.id}))
    assert letters == [] and talon_emulator.audience_members(existing.id) == ["u1"]
    assert talon_emulator.stats()["requests"].get("409") is None


def test_409_without_a_way_to_find_it_dead_letters_and_says_what_to_set(
        talon_emulator, tmp_path) -> None:
    with Client(talon_emulator.url, talon_emulator.api_key, rate_limit=0) as client:
        client.create_audience("VIP", integration="segment", integration_id="aud_1")
    other = {**PERSONAS, "computation_key": "churn_risk", "computation_id": "aud_2"}
    pipeline, letters = run(talon_emulator, tmp_path, [
        track("u1", True), identify("u2", True, email="u2@x"), track("u3", True, personas=other),
        track("u4", True)], batch_size=2)
    # nothing lost: every event of the unresolvable audience is dead-lettered, once
    assert sorted(x["event"]["userId"] for x in letters) == ["u1", "u2", "u4"]
    assert {x["reason"] for x in letters} == {"rejected"}
    assert {x["event"]["userId"]: x["input"].rsplit("/", 1)[1] for x in letters} == {
        "u1": "in.jsonl:1", "u2": "in.jsonl:2", "u4": "in.jsonl:4"}
    error = letters[0]["error"]
    assert error.startswith("Engage audience vip_users (aud_1): the audience exists (409)")
    assert "managementKey" in error and '"audienceIds": {"aud_1": <its id>}' in error
    assert pipeline.warnings == [f"{error}; its events are dead-lettered"]  # once, not per batch
    assert talon_emulator.stats()["requests"]["409"] == 1
    # the rest went on: the profile, and the other audience
    assert talon_emulator.profile("u2")["attributes"] == {"email": "u2@x"}
    assert members(talon_emulator, "aud_2") == ["u3"]
    assert pipeline.summary.dead_lettered == 3 and pipeline.summary.rejected == 3


def test_an_audience_deleted_in_talon_one_is_created_again(talon_emulator, tmp_path) -> None:
    state = tmp_path / "state.db"
    run(talon_emulator, tmp_path, [track("u1", True)], state=state, name="a.jsonl")
    old = talon_emulator.audiences()[0]["id"]
    with Client(talon_emulator.url, talon_emulator.api_key, rate_limit=0) as client:
        client.delete_audience(old)
    pipeline, letters = run(talon_emulator, tmp_path, [track("u2", True)], state=state,
                            name="b.jsonl")
    assert letters == []
    [audience] = talon_emulator.audiences()
    assert audience["id"] != old and talon_emulator.audience_members(audience["id"]) == ["u2"]


def test_a_profile_that_failed_keeps_its_memberships_in_its_dead_letters(
        talon_emulator_factory, tmp_path) -> None:
    emu = talon_emulator_factory(attributes=frozenset({"email"}))  # strict: "plan" is refused
    pipeline, letters = run(emu, tmp_path, [identify("u1", True, email="a@x"),
                                            identify("u2", True, plan="gold")],
                            settings=Settings(custom_attributes=("email", "plan")))
    assert [x["event"]["userId"] for x in letters] == ["u2"]
    assert members(emu) == ["u1"]  # u2's membership waits in its dead letter, with its profile


# -- serve's worker ------------------------------------------------------------------------
def drain(emu, spool_path: Path, state: Path, events: list[dict[str, Any]],
          settings: Settings | None = None) -> Spool:
    spool = Spool(spool_path)
    spool.append([(json.dumps(e).encode(), None) for e in events])
    client = Client(emu.url, emu.api_key, rate_limit=0)
    with client, MembershipDelivery.open(client, settings or Settings(), state) as delivery:
        worker = Worker(spool, Engine([], engage_audiences="memberships"), client, Metrics(),
                        memberships=delivery)
        while worker.drain_once():
            pass
    return spool


def test_serve_restarted_on_its_spool_never_lets_an_older_action_win(
        talon_emulator, tmp_path) -> None:
    spool_path, state = tmp_path / "spool.db", tmp_path / "state.db"
    spool = drain(talon_emulator, spool_path, state, [
        track("u1", True, "2024-05-03T10:00:00Z"), identify("u2", True, "2024-05-03T10:00:00Z")])
    assert spool.depth == 0
    spool.close()
    assert members(talon_emulator) == ["u1", "u2"]
    # a new worker on the same spool and state: older exits come in, a newer one too
    spool = drain(talon_emulator, spool_path, state, [
        track("u1", False, "2024-05-03T09:00:00Z"), identify("u2", False, "2024-05-03T11:00:00Z")])
    assert spool.depth == 0 and spool.dead_count() == 0
    spool.close()
    assert members(talon_emulator) == ["u1"]


def test_serve_buries_the_events_of_an_unresolvable_audience(talon_emulator, tmp_path) -> None:
    with Client(talon_emulator.url, talon_emulator.api_key, rate_limit=0) as client:
        client.create_audience("VIP", integration="segment", integration_id="aud_1")
    spool = drain(talon_emulator, tmp_path / "spool.db", tmp_path / "state.db",
                  [track("u1", True), identify("u2", False)])
    assert spool.depth == 0
    dead = spool.dead_letters()
    assert [d.reason for d in dead] == ["rejected", "rejected"]
    assert "audienceIds" in dead[0].error
    spool.close()
