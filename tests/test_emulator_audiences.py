"""The Integration API's audience endpoints, over real loopback HTTP."""

from __future__ import annotations

from datetime import datetime

import pytest
import requests
from emulator_http import (
    PROFILE_FIELDS,
    add,
    api,
    audience_actions,
    bulk,
    create_audience,
    delete,
    error_of,
    single,
)

AUDIENCE_FIELDS = {"id", "accountId", "created", "name", "sandbox", "createdIn3rdParty"}


def test_create_returns_201_with_the_audience(talon_emulator) -> None:
    r = create_audience(talon_emulator, name="VIP")
    assert r.status_code == 201
    audience = r.json()
    assert set(audience) == AUDIENCE_FIELDS
    assert (audience["id"], audience["accountId"], audience["name"]) == (1, 1, "VIP")
    assert (audience["sandbox"], audience["createdIn3rdParty"]) == (False, False)
    assert datetime.fromisoformat(audience["created"]).tzinfo is not None
    full = create_audience(talon_emulator, name="Churn risk", description="d", sandbox=True,
                           integration="segment", integrationId="aud_1",
                           createdIn3rdParty=True).json()
    assert full["id"] == 2 and set(full) == AUDIENCE_FIELDS | {
        "description", "integration", "integrationId"}
    assert (full["integration"], full["integrationId"], full["sandbox"]) == (
        "segment", "aud_1", True)
    assert talon_emulator.audiences() == [
        {"id": 1, "name": "VIP", "integrationId": None, "members": 0},
        {"id": 2, "name": "Churn risk", "integrationId": "aud_1", "members": 0}]


def test_create_409_for_the_same_integration_and_integration_id(talon_emulator) -> None:
    assert create_audience(talon_emulator, name="a", integration="segment",
                           integrationId="x").status_code == 201
    again = create_audience(talon_emulator, name="other name", integration="segment",
                            integrationId="x")
    assert again.status_code == 409 and "already exists" in error_of(again)["message"]
    # another platform, or no integrationId, is another audience; names may repeat
    assert create_audience(talon_emulator, name="a", integration="braze",
                           integrationId="x").status_code == 201
    assert create_audience(talon_emulator, name="a").status_code == 201
    assert create_audience(talon_emulator, name="a").status_code == 201
    assert create_audience(talon_emulator, name="a", integrationId="x").status_code == 201
    assert create_audience(talon_emulator, name="a", integrationId="x").status_code == 409
    assert talon_emulator.stats()["audiences"] == 5


@pytest.mark.parametrize("body, pointer", [
    ({}, "/name"), ({"name": ""}, "/name"), ({"name": "  "}, "/name"), ({"name": 3}, "/name"),
    ({"name": "a", "integrationId": ""}, "/integrationId"),
    ({"name": "a", "integrationId": "x" * 1001}, "/integrationId"),
    ({"name": "a", "integrationId": 7}, "/integrationId"),
    ({"name": "a", "description": 1}, "/description"),
    ({"name": "a", "integration": []}, "/integration"),
    ({"name": "a", "sandbox": "yes"}, "/sandbox"),
    ({"name": "a", "createdIn3rdParty": 1}, "/createdIn3rdParty"),
])
def test_create_checks_the_body(talon_emulator, body, pointer) -> None:
    r = create_audience(talon_emulator, **body)
    assert r.status_code == 400 and error_of(r)["source"]["pointer"] == pointer
    assert talon_emulator.audiences() == []


def test_integration_id_of_1000_characters_is_fine(talon_emulator) -> None:
    assert create_audience(talon_emulator, name="a", integrationId="x" * 1000).status_code == 201


def test_rename_delete_and_clear(talon_emulator) -> None:
    s = api(talon_emulator)
    url = f"{talon_emulator.url}/v2/audiences"
    aid = create_audience(talon_emulator, name="old", integrationId="i").json()["id"]
    renamed = s.put(f"{url}/{aid}", json={"name": "new"})
    assert renamed.status_code == 200 and renamed.json()["name"] == "new"
    assert renamed.json()["integrationId"] == "i"
    assert s.put(f"{url}/{aid}", json={"name": ""}).status_code == 400
    assert s.put(f"{url}/99", json={"name": "x"}).status_code == 404
    assert audience_actions(talon_emulator, [add("u1", aid), add("u2", aid)]).status_code == 204
    cleared = s.delete(f"{url}/{aid}/memberships")
    assert (cleared.status_code, cleared.content) == (204, b"")
    assert talon_emulator.audience_members(aid) == []
    assert s.delete(f"{url}/99/memberships").status_code == 404
    audience_actions(talon_emulator, [add("u1", aid)])
    assert s.delete(f"{url}/{aid}").status_code == 204
    assert talon_emulator.audiences() == [] and talon_emulator.audience_members(aid) is None
    gone = s.delete(f"{url}/{aid}")
    assert gone.status_code == 404 and f"audience {aid} does not exist" in error_of(gone)["message"]
    # the profiles stay, only the memberships went
    assert talon_emulator.profile("u1") == {"integrationId": "u1", "attributes": {}}


def test_memberships_add_delete_and_create_missing_profiles(talon_emulator) -> None:
    bulk(talon_emulator, [{"integrationId": "u1", "attributes": {"plan": "gold"}}])
    a = create_audience(talon_emulator, name="a").json()["id"]
    b = create_audience(talon_emulator, name="b").json()["id"]
    r = audience_actions(talon_emulator, [add("u1", a), add("u2", a), add("u2", b),
                                          add("u1", a), delete("u3", b)])
    assert (r.status_code, r.content) == (204, b"")
    assert talon_emulator.audience_members(a) == ["u1", "u2"]
    assert talon_emulator.audience_members(b) == ["u2"]
    assert talon_emulator.profile("u1")["attributes"] == {"plan": "gold"}  # left as it was
    assert talon_emulator.profile("u2") == {"integrationId": "u2", "attributes": {}}  # created
    assert talon_emulator.profile("u3") is None  # a delete creates nothing
    assert audience_actions(talon_emulator, [delete("u1", a), add("u9", b),
                                             delete("u9", b)]).status_code == 204
    assert talon_emulator.audience_members(a) == ["u2"]
    assert talon_emulator.audience_members(b) == ["u2"]
    stats = talon_emulator.stats()
    assert (stats["audience_actions"], stats["audiences"], stats["profile_updates"]) == (8, 2, 1)
    assert [(e["path"], e["profiles"]) for e in talon_emulator.requests()][-2:] == [
        ("/v2/customer_audiences", 5), ("/v2/customer_audiences", 3)]


def test_an_unknown_audience_is_404_and_changes_nothing(talon_emulator) -> None:
    a = create_audience(talon_emulator, name="a").json()["id"]
    r = audience_actions(talon_emulator, [add("u1", a), add("u2", 42)])
    assert r.status_code == 404
    error = error_of(r)
    assert error["message"] == "audience 42 does not exist"
    assert error["source"]["pointer"] == "/data/1/audienceId"
    assert talon_emulator.audience_members(a) == [] and talon_emulator.profile("u1") is None
    assert talon_emulator.stats()["audience_actions"] == 0


@pytest.mark.parametrize("item, pointer", [
    ("x", "/data/1"),
    ({"profileIntegrationId": "u", "audienceId": 1}, "/data/1/action"),
    ({"action": "remove", "profileIntegrationId": "u", "audienceId": 1}, "/data/1/action"),
    ({"action": "add", "audienceId": 1}, "/data/1/profileIntegrationId"),
    ({"action": "add", "profileIntegrationId": "", "audienceId": 1},
     "/data/1/profileIntegrationId"),
    ({"action": "add", "profileIntegrationId": "x" * 1001, "audienceId": 1},
     "/data/1/profileIntegrationId"),
    ({"action": "add", "profileIntegrationId": 5, "audienceId": 1},
     "/data/1/profileIntegrationId"),
    ({"action": "add", "profileIntegrationId": "poison", "audienceId": 1},
     "/data/1/profileIntegrationId"),
    ({"action": "add", "profileIntegrationId": "u"}, "/data/1/audienceId"),
    ({"action": "add", "profileIntegrationId": "u", "audienceId": "1"}, "/data/1/audienceId"),
    ({"action": "add", "profileIntegrationId": "u", "audienceId": True}, "/data/1/audienceId"),
])
def test_a_bad_action_fails_the_request_with_its_pointer(talon_emulator, item, pointer) -> None:
    talon_emulator.configure(reject_ids=["poison"])
    a = create_audience(talon_emulator, name="a").json()["id"]
    r = audience_actions(talon_emulator, [add("ok", a), item])
    assert r.status_code == 400 and error_of(r)["source"]["pointer"] == pointer
    assert talon_emulator.audience_members(a) == []


def test_at_most_1000_actions(talon_emulator) -> None:
    a = create_audience(talon_emulator, name="a").json()["id"]
    actions = [add(f"u{i}", a) for i in range(1001)]
    too_many = audience_actions(talon_emulator, actions)
    assert too_many.status_code == 400 and "1000" in error_of(too_many)["message"]
    assert error_of(too_many)["source"]["pointer"] == "/data"
    assert audience_actions(talon_emulator, actions[:1000]).status_code == 204
    assert len(talon_emulator.audience_members(a)) == 1000
    assert talon_emulator.stats()["profiles"] == 1000


def test_bad_bodies(talon_emulator) -> None:
    s = api(talon_emulator)
    url = f"{talon_emulator.url}/v2/customer_audiences"
    assert s.post(url, data=b"{").status_code == 400
    assert error_of(s.post(url, json={"data": {}}))["source"]["pointer"] == "/data"
    assert error_of(s.post(url, json={}))["source"]["pointer"] == "/data"
    assert s.post(url, json={"data": []}).status_code == 204
    assert s.post(f"{talon_emulator.url}/v2/audiences", json=[]).status_code == 400


def test_audience_endpoints_need_the_api_key(talon_emulator) -> None:
    url = talon_emulator.url
    assert requests.post(f"{url}/v2/audiences", json={"name": "a"}).status_code == 401
    assert requests.post(f"{url}/v2/customer_audiences", json={"data": []}).status_code == 401
    assert requests.delete(f"{url}/v2/audiences/1").status_code == 401
    wrong = {"Authorization": f"ManagementKey-v1 {talon_emulator.management_key}"}
    assert requests.post(f"{url}/v2/audiences", json={"name": "a"},
                         headers=wrong).status_code == 401
    assert talon_emulator.audiences() == []


def test_audiences_share_the_integration_api_rate_limit(talon_emulator_factory) -> None:
    emu = talon_emulator_factory(rate_limit=2)
    statuses = [create_audience(emu, name=f"a{i}").status_code for i in range(2)]
    assert statuses == [201, 201]
    assert api(emu).get(f"{emu.url}/v2/authping").status_code == 429


def test_profiles_show_their_audience_memberships(talon_emulator) -> None:
    a = create_audience(talon_emulator, name="a").json()["id"]
    b = create_audience(talon_emulator, name="b").json()["id"]
    audience_actions(talon_emulator, [add("u1", b), add("u1", a), add("u2", a)])
    states = bulk(talon_emulator, [{"integrationId": "u1", "attributes": {}},
                                   {"integrationId": "u3", "attributes": {}}],
                  silent="no").json()["integrationStates"]
    assert [s["customerProfile"]["audienceMemberships"] for s in states] == [
        [{"id": a, "name": "a"}, {"id": b, "name": "b"}], []]
    profile = single(talon_emulator, "u2", {}).json()["customerProfile"]
    assert set(profile) == PROFILE_FIELDS
    assert profile["audienceMemberships"] == [{"id": a, "name": "a"}]


def test_audiences_changes_on_a_single_update(talon_emulator) -> None:
    a = create_audience(talon_emulator, name="a").json()["id"]
    b = create_audience(talon_emulator, name="b").json()["id"]
    audience_actions(talon_emulator, [add("u1", b)])
    url = f"{talon_emulator.url}/v2/customer_profiles/u1"
    r = api(talon_emulator).put(url, json={"attributes": {"x": 1},
                                           "audiencesChanges": {"adds": [a], "deletes": [b]}})
    assert r.status_code == 200
    assert r.json()["customerProfile"]["audienceMemberships"] == [{"id": a, "name": "a"}]
    assert talon_emulator.audience_members(a) == ["u1"]
    assert talon_emulator.audience_members(b) == []
    assert talon_emulator.stats()["audience_actions"] == 3
    # a dry run changes no membership
    dry = api(talon_emulator).put(url, params={"runRuleEngine": "true", "dry": "true"},
                                  json={"audiencesChanges": {"adds": [b], "deletes": []}})
    assert dry.status_code == 200 and talon_emulator.audience_members(b) == []
    unknown = api(talon_emulator).put(url, json={"audiencesChanges": {"adds": [],
                                                                      "deletes": [a, 77]}})
    assert unknown.status_code == 404
    assert error_of(unknown)["source"]["pointer"] == "/audiencesChanges/deletes/1"
    assert talon_emulator.audience_members(a) == ["u1"]


def test_reset_forgets_audiences(talon_emulator) -> None:
    a = create_audience(talon_emulator, name="a").json()["id"]
    audience_actions(talon_emulator, [add("u1", a)])
    talon_emulator.reset()
    assert talon_emulator.audiences() == [] and talon_emulator.audience_members(a) is None
    assert talon_emulator.stats()["audience_actions"] == 0
    assert create_audience(talon_emulator, name="again").json()["id"] == 1  # ids restart


@pytest.mark.parametrize("stored", ["memory", "sqlite"])
def test_an_id_beyond_64_bits_is_no_audience_not_a_500(talon_emulator_factory, tmp_path,
                                                       stored) -> None:
    emu = talon_emulator_factory(management_key="m" * 24,
                                 **({"db": str(tmp_path / "emu.db")} if stored == "sqlite"
                                    else {}))
    assert create_audience(emu, name="VIP").status_code == 201
    wide = 2**63
    session = api(emu)
    answers = [
        session.delete(f"{emu.url}/v2/audiences/{wide}", timeout=10),
        session.put(f"{emu.url}/v2/audiences/{wide}", json={"name": "x"}, timeout=10),
        session.delete(f"{emu.url}/v2/audiences/{wide}/memberships", timeout=10),
        audience_actions(emu, [add("u1", wide)]),
        session.put(f"{emu.url}/v2/customer_profiles/u1", timeout=10, json={
            "attributes": {}, "audiencesChanges": {"adds": [wide], "deletes": []}}),
        requests.get(f"{emu.url}/v1/audiences/{wide}/memberships", timeout=10,
                     headers={"Authorization": f"ManagementKey-v1 {emu.management_key}"}),
    ]
    for answer in answers:
        assert answer.status_code == 404, answer.request.url
        assert error_of(answer)["message"] == f"audience {wide} does not exist"
    assert emu.audiences() == [{"id": 1, "name": "VIP", "integrationId": None, "members": 0}]
