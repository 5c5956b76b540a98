"""The emulator speaks the Integration API's shapes and codes, over real loopback HTTP.

The rest of the emulator's tests mirror its modules: test_emulator_<module>.py.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime

import pytest
import requests
from emulator_http import PROFILE_FIELDS, api, bulk, error_of, single


def test_authping_and_auth(talon_emulator) -> None:
    url = f"{talon_emulator.url}/v2/authping"
    assert api(talon_emulator).get(url).status_code == 204
    wrong = api(talon_emulator, "nope").get(url)
    assert wrong.status_code == 401 and error_of(wrong)["message"] == "Unauthorized"
    assert requests.get(url).status_code == 401
    assert requests.put(f"{talon_emulator.url}/v2/customer_profiles/u1",
                        json={"attributes": {}}).status_code == 401
    assert talon_emulator.profile("u1") is None


def test_unknown_route_and_wrong_method(talon_emulator) -> None:
    missing = api(talon_emulator).get(f"{talon_emulator.url}/v2/nothing")
    assert missing.status_code == 404 and error_of(missing)
    assert requests.get(f"{talon_emulator.url}/elsewhere").status_code == 404
    wrong = api(talon_emulator).post(f"{talon_emulator.url}/v2/authping")
    assert wrong.status_code == 405 and "GET" in wrong.headers["Allow"] and error_of(wrong)


def test_single_upsert_creates_then_merges(talon_emulator) -> None:
    first = single(talon_emulator, "a/b ü", {"a": 1, "b": "x"})
    assert first.status_code == 200
    answer = first.json()
    profile = answer["customerProfile"]
    assert set(profile) == PROFILE_FIELDS
    assert profile["integrationId"] == "a/b ü" and profile["attributes"] == {"a": 1, "b": "x"}
    assert isinstance(profile["id"], int) and profile["accountId"] == 1
    assert datetime.fromisoformat(profile["created"]).tzinfo is not None
    assert (profile["closedSessions"], profile["totalSales"]) == (0, 0.0)
    for key in ("effects", "createdCoupons", "createdReferrals", "ruleFailureReasons",
                "triggeredCampaigns", "awardedGiveaways"):
        assert answer[key] == []
    second = single(talon_emulator, "a/b ü", {"b": "y"}).json()["customerProfile"]
    assert second["id"] == profile["id"] and second["attributes"] == {"a": 1, "b": "y"}
    assert talon_emulator.profile("a/b ü") == {"integrationId": "a/b ü",
                                               "attributes": {"a": 1, "b": "y"}}


def test_dry_single_previews_and_stores_nothing(talon_emulator) -> None:
    single(talon_emulator, "u1", {"a": 1})
    r = single(talon_emulator, "u1", {"b": 2}, runRuleEngine="true", dry="true")
    assert r.status_code == 200
    assert r.json()["customerProfile"]["attributes"] == {"a": 1, "b": 2}
    assert talon_emulator.profile("u1")["attributes"] == {"a": 1}
    assert single(talon_emulator, "u2", {}, dry="true").status_code == 200
    assert talon_emulator.profile("u2") is None


def test_single_extras_are_checked(talon_emulator) -> None:
    url = f"{talon_emulator.url}/v2/customer_profiles/u1"
    ok = {"attributes": {}, "audiencesChanges": {"adds": [1], "deletes": []}}
    # audiences exist now: audience 1 must be created first (it used to be accepted unseen)
    unknown = api(talon_emulator).put(url, json=ok)
    assert unknown.status_code == 404
    assert error_of(unknown)["source"]["pointer"] == "/audiencesChanges/adds/0"
    assert talon_emulator.profile("u1") is None
    assert api(talon_emulator).post(f"{talon_emulator.url}/v2/audiences",
                                    json={"name": "one"}).json()["id"] == 1
    assert api(talon_emulator).put(url, json=ok).status_code == 200
    bad = api(talon_emulator).put(url, json={"audiencesChanges": {"adds": [1]}})
    assert bad.status_code == 400 and error_of(bad)["source"]["pointer"] == "/audiencesChanges"
    flag = api(talon_emulator).put(url, json={}, params={"dry": "maybe"})
    assert flag.status_code == 400 and error_of(flag)["source"]["parameter"] == "dry"


def test_bulk_silent_and_not(talon_emulator) -> None:
    r = bulk(talon_emulator, [{"integrationId": "a", "attributes": {"x": 1}}], silent="yes")
    assert (r.status_code, r.content) == (204, b"")
    r = bulk(talon_emulator, [{"integrationId": "a", "attributes": {"y": 2}},
                              {"integrationId": "b", "attributes": {"x": 2}}], silent="no")
    assert r.status_code == 200
    states = [s["customerProfile"] for s in r.json()["integrationStates"]]
    assert [set(s) for s in states] == [PROFILE_FIELDS] * 2
    assert [(s["integrationId"], s["attributes"]) for s in states] == [
        ("a", {"x": 1, "y": 2}), ("b", {"x": 2})]
    assert states[0]["id"] < states[1]["id"]
    assert bulk(talon_emulator, [], silent="sometimes").status_code == 400
    assert talon_emulator.stats() == {"requests": {"204": 1, "200": 1, "400": 1},
                                      "profiles": 2, "profile_updates": 3, "audiences": 0,
                                      "audience_actions": 0}


def test_1000_ok_1001_rejected(talon_emulator) -> None:
    items = [{"integrationId": f"u{i}", "attributes": {}} for i in range(1001)]
    r = bulk(talon_emulator, items)
    assert r.status_code == 400 and "1000" in error_of(r)["message"]
    assert talon_emulator.stats()["profiles"] == 0
    assert bulk(talon_emulator, items[:1000]).status_code == 204
    assert talon_emulator.stats()["profiles"] == 1000
    assert [r["profiles"] for r in talon_emulator.requests()] == [1001, 1000]


@pytest.mark.parametrize(
    "item, pointer, named",
    [
        ({"integrationId": "x" * 1001, "attributes": {}}, "/customerProfiles/1/integrationId",
         "1000"),
        ({"integrationId": "", "attributes": {}}, "/customerProfiles/1/integrationId",
         "integrationId"),
        ({"integrationId": "u", "attributes": {"unknown": 1}},
         "/customerProfiles/1/attributes/unknown", "attribute 'unknown' does not exist"),
        ({"integrationId": "u", "attributes": {"1st": 1}}, "/customerProfiles/1/attributes/1st",
         "'1st'"),
        ({"integrationId": "u", "attributes": {"é": 1}}, "/customerProfiles/1/attributes/é",
         "'é'"),
        ({"integrationId": "u", "attributes": []}, "/customerProfiles/1/attributes", "object"),
        ({"attributes": {}}, "/customerProfiles/1/integrationId", "integrationId"),
        ({"integrationId": 7, "attributes": {}}, "/customerProfiles/1/integrationId",
         "integrationId"),
        ("u", "/customerProfiles/1", "object"),
        ({"integrationId": "poison", "attributes": {}}, "/customerProfiles/1/integrationId",
         "'poison'"),
    ],
)
def test_bad_item_fails_the_whole_request(talon_emulator, item, pointer, named) -> None:
    talon_emulator.configure(attributes=["known", "é"], reject_ids=["poison"])
    r = bulk(talon_emulator, [{"integrationId": "ok", "attributes": {"known": 1}}, item])
    assert r.status_code == 400
    error = error_of(r)
    assert error["source"]["pointer"] == pointer
    assert named in error["message"]
    assert talon_emulator.profile("ok") is None  # nothing stored
    assert talon_emulator.stats()["profile_updates"] == 0


def test_unknown_attribute_names_the_profile(talon_emulator) -> None:
    talon_emulator.configure(attributes=["plan"])
    error = error_of(single(talon_emulator, "u7", {"plan": "a", "foo": 1}))
    assert error["message"] == "attribute 'foo' does not exist (profile 'u7')"
    assert error["source"]["pointer"] == "/attributes/foo"
    assert talon_emulator.profile("u7") is None


def test_malformed_bodies(talon_emulator) -> None:
    s = api(talon_emulator)
    url = f"{talon_emulator.url}/v2/customer_profiles"
    assert s.put(url, data=b"{").status_code == 400
    assert s.put(url, data=b"\xff").status_code == 400
    assert s.put(url, json=[1]).status_code == 400
    assert s.put(url, json={"customerProfiles": {}}).status_code == 400
    assert s.put(f"{url}/u1", json={"attributes": "x"}).status_code == 400


def test_concurrent_update_of_one_profile_is_409(talon_emulator) -> None:
    talon_emulator.configure(latency_ms=300)
    answers: list[requests.Response] = []

    def put() -> None:
        answers.append(bulk(talon_emulator, [{"integrationId": "same", "attributes": {}}]))

    threads = [threading.Thread(target=put) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.status_code for r in answers) == [204, 409]
    conflict = next(r for r in answers if r.status_code == 409)
    assert error_of(conflict)["message"] == ("Too many requests are updating this profile "
                                             "at the same time")
    # once the first is done, the profile is free again
    assert single(talon_emulator, "same", {}).status_code == 200


def test_key_never_in_answers_or_logs(talon_emulator_factory, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "very-secret-emulator-key"
    emu = talon_emulator_factory(api_key=secret)
    emu.configure(fail_next=1, reject_ids=["bad"])
    s = api(emu)
    texts = [
        requests.get(f"{emu.url}/v2/authping").text,
        requests.get(f"{emu.url}/v2/authping", headers={"Authorization": "ApiKey-v1 x"}).text,
        s.get(f"{emu.url}/v2/authping").text,  # the injected failure
        bulk(emu, [{"integrationId": "bad", "attributes": {}}]).text,
        requests.get(f"{emu.url}/_emulator/config").text,
        requests.get(f"{emu.url}/_emulator/stats").text,
        requests.get(f"{emu.url}/_emulator/requests").text,
        requests.post(f"{emu.url}/_emulator/config", json={"latency_ms": 0}).text,
    ]
    emu.configure(drop_next=1)
    with pytest.raises(requests.exceptions.RequestException):
        s.get(f"{emu.url}/v2/authping")
    assert all(secret not in t for t in texts)
    assert any(r.name == "talon_classic.emulator" for r in caplog.records)
    assert secret not in caplog.text
    assert secret not in repr(emu.app.config) and secret not in repr(emu)


def test_another_api_is_one_more_route_group() -> None:
    """The seam the Management API will use: a Routes subclass under its own prefix,
    with its own key, through the same faults and request log as /v2."""
    from werkzeug.routing import Rule
    from werkzeug.wrappers import Response

    from talon_classic.emulator import Emulator, EmulatorConfig
    from talon_classic.emulator.problems import Problem
    from talon_classic.emulator.routes import Routes
    from talon_classic.wsgi import WaitressServer

    class Other(Routes):  # /v9: /v1 is the Management API's now
        prefix = "/v9/"
        emulated = True

        def rules(self) -> list[Rule]:
            return [Rule("/v9/things", endpoint=self.things, methods=["GET"])]

        def authenticate(self, request) -> None:
            if request.headers.get("Authorization") != "ManagementKey-v1 m":
                raise Problem(401, "Unauthorized")

        def things(self, request, exchange) -> Response:
            return Response("[]", content_type="application/json")

    class WithOther(Emulator):
        route_groups = (*Emulator.route_groups, Other)

    app = WithOther(EmulatorConfig(rate_limit=0, fail_next=1))
    with WaitressServer(app) as server:
        url, key = f"{server.url}/v9/things", {"Authorization": "ManagementKey-v1 m"}
        assert requests.get(url).status_code == 401
        assert requests.get(url, headers=key).status_code == 503  # the injected failure
        assert requests.get(url, headers=key).json() == []
        assert [r["status"] for r in app.traffic.entries(10, 0)] == [401, 503, 200]
        assert requests.get(f"{server.url}/v2/authping", headers=key).status_code == 401


@pytest.mark.parametrize("field", ["integrationId", "profileIntegrationId"])
def test_one_check_of_a_profile_id_for_profiles_and_audience_actions(field: str) -> None:
    from talon_classic.emulator.integration import MAX_ID_LENGTH, check_integration_id
    from talon_classic.emulator.problems import Problem

    assert check_integration_id("u1", field, "/data/0", {"bad"}) == "u1"
    cases = [(None, f"{field} must be a non-empty string"),
             ("", f"{field} must be a non-empty string"),
             ("x" * (MAX_ID_LENGTH + 1), f"{field} is longer than {MAX_ID_LENGTH} characters "
                                         f"({MAX_ID_LENGTH + 1})"),
             ("bad", "profile 'bad' was rejected (reject_ids)")]
    for iid, message in cases:
        with pytest.raises(Problem) as info:
            check_integration_id(iid, field, "/data/3", {"bad"})
        assert (info.value.status, info.value.message) == (400, message)
        assert info.value.pointer == f"/data/3/{field}"
