"""The emulator speaks the Integration API's shapes and codes, over real loopback HTTP."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
import requests

from talon_classic.emulator import EmulatorConfig, EmulatorServer, parse_attributes_file
from talon_classic.exceptions import AddressInUse

PROFILE_FIELDS = {"id", "created", "integrationId", "attributes", "accountId", "closedSessions",
                  "totalSales", "lastActivity", "loyaltyMemberships", "audienceMemberships"}


def api(emu, key: str | None = None) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"ApiKey-v1 {key or emu.api_key}"
    return session


def bulk(emu, items, **params) -> requests.Response:
    return api(emu).put(f"{emu.url}/v2/customer_profiles", json={"customerProfiles": items},
                        params=params, timeout=10)


def single(emu, iid: str, attributes, **params) -> requests.Response:
    quoted = requests.utils.quote(iid, safe="")
    return api(emu).put(f"{emu.url}/v2/customer_profiles/{quoted}",
                        json={"attributes": attributes}, params=params, timeout=10)


def error_of(response: requests.Response) -> dict:
    """The one error of a Talon.One error body, after checking the body's shape."""
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["StatusCode"] == response.status_code and body["message"]
    (error,) = body["errors"]
    assert error["title"] and error["details"] and "pointer" in error["source"]
    return {"message": body["message"], **error}


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


def test_url_is_known_before_serving() -> None:
    server = EmulatorServer(EmulatorConfig(rate_limit=0))
    try:
        port = int(server.url.rsplit(":", 1)[1])
        assert server.url.startswith("http://127.0.0.1:") and port > 0
        server.start()
        assert requests.get(f"{server.url}/_emulator/stats", timeout=5).status_code == 200
    finally:
        server.stop()


def test_port_in_use_names_it_and_closes_the_store(tmp_path: Path) -> None:
    with EmulatorServer(EmulatorConfig(rate_limit=0)) as first:
        port = int(first.url.rsplit(":", 1)[1])
        with pytest.raises(AddressInUse, match=f"^127.0.0.1:{port} is already in use"):
            EmulatorServer(EmulatorConfig(db=str(tmp_path / "e.db")), port=port)
    # the second emulator's SQLite file was closed: another process could take it over
    assert list(tmp_path.glob("e.db-wal")) == []


def test_connection_limits_are_passed_to_the_server() -> None:
    with EmulatorServer(EmulatorConfig(rate_limit=0), connection_limit=9,
                        idle_timeout=0.5) as server:
        assert (server.connection_limit, server.idle_timeout) == (9, 0.5)


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
                                      "profiles": 2, "profile_updates": 3}


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


def test_latency_is_added_to_every_request(talon_emulator) -> None:
    talon_emulator.configure(latency_ms=150)
    for session in (api(talon_emulator), api(talon_emulator, "wrong")):
        started = time.monotonic()
        session.get(f"{talon_emulator.url}/v2/authping")
        assert time.monotonic() - started >= 0.15


def test_rate_limit_429_with_retry_after(talon_emulator_factory) -> None:
    emu = talon_emulator_factory(rate_limit=2)
    s = api(emu)
    answers = [s.get(f"{emu.url}/v2/authping").status_code for _ in range(5)]
    assert answers[:2] == [204, 204] and 429 in answers  # a burst of one second's worth
    limited = s.get(f"{emu.url}/v2/authping")
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "1"
    assert error_of(limited)["message"] == "Too many requests"
    assert emu.stats()["requests"]["429"] == answers.count(429) + 1
    emu.configure(rate_limit=0.5)  # under one per second: the wait is longer than a second
    assert s.get(f"{emu.url}/v2/authping").status_code == 204
    assert s.get(f"{emu.url}/v2/authping").headers["Retry-After"] == "2"


def test_fail_next_burst_then_normal(talon_emulator) -> None:
    public = talon_emulator.configure(fail_next=2, fail_status=502)
    assert public["fail_next"] == 2 and "api_key" not in public
    s = api(talon_emulator)
    statuses = [s.get(f"{talon_emulator.url}/v2/authping").status_code for _ in range(3)]
    assert statuses == [502, 502, 204]
    assert talon_emulator.configure()["fail_next"] == 0


def test_fail_rate_is_seeded(talon_emulator_factory) -> None:
    def run() -> list[int]:
        emu = talon_emulator_factory(fail_rate=0.5, seed=42)
        s = api(emu)
        return [s.get(f"{emu.url}/v2/authping").status_code for _ in range(20)]

    first = run()
    assert first == run() and {204, 503} == set(first)


def test_hang_hits_the_client_timeout(talon_emulator) -> None:
    talon_emulator.configure(hang_next=1, hang_seconds=0.6)
    s = api(talon_emulator)
    with pytest.raises(requests.exceptions.ReadTimeout):
        s.get(f"{talon_emulator.url}/v2/authping", timeout=0.2)
    started = time.monotonic()
    assert s.get(f"{talon_emulator.url}/v2/authping", timeout=5).status_code == 204
    assert time.monotonic() - started < 0.5  # only the next one hangs


def test_drop_closes_the_connection(talon_emulator) -> None:
    talon_emulator.configure(drop_next=1)
    with pytest.raises((requests.exceptions.ChunkedEncodingError,
                        requests.exceptions.ConnectionError)):
        bulk(talon_emulator, [{"integrationId": "a", "attributes": {}}])
    # the write happened, only the answer was lost; the next request is answered
    assert talon_emulator.profile("a") == {"integrationId": "a", "attributes": {}}
    assert bulk(talon_emulator, [{"integrationId": "b", "attributes": {}}]).status_code == 204


def test_faults_come_one_per_request_in_order(talon_emulator) -> None:
    talon_emulator.configure(fail_next=1, hang_next=1, hang_seconds=0.1, drop_next=1)
    s = api(talon_emulator)
    url = f"{talon_emulator.url}/v2/authping"
    assert s.get(url).status_code == 503
    started = time.monotonic()
    assert s.get(url).status_code == 204 and time.monotonic() - started >= 0.1
    with pytest.raises(requests.exceptions.RequestException):
        s.get(url)
    assert s.get(url).status_code == 204


def test_request_log_and_stats(talon_emulator) -> None:
    bulk(talon_emulator, [{"integrationId": f"u{i}", "attributes": {}} for i in range(3)])
    single(talon_emulator, "u0", {"a": 1})
    api(talon_emulator, "wrong").get(f"{talon_emulator.url}/v2/authping")
    log = talon_emulator.requests()
    assert [(r["method"], r["path"], r["status"], r["profiles"]) for r in log] == [
        ("PUT", "/v2/customer_profiles", 204, 3),
        ("PUT", "/v2/customer_profiles/u0", 200, 1),
        ("GET", "/v2/authping", 401, 0),
    ]
    assert all(isinstance(r["t"], float) for r in log)
    assert log[0]["t"] <= log[1]["t"] <= log[2]["t"] <= time.monotonic()
    assert talon_emulator.requests(limit=1, offset=1) == log[1:2]
    assert talon_emulator.stats() == {"requests": {"204": 1, "200": 1, "401": 1},
                                      "profiles": 3, "profile_updates": 4}


def test_inspection_list_reset_and_404(talon_emulator) -> None:
    bulk(talon_emulator, [{"integrationId": f"u{i}", "attributes": {}} for i in range(5)])
    page = requests.get(f"{talon_emulator.url}/_emulator/profiles",
                        params={"limit": 2, "offset": 1}).json()
    assert page["total"] == 5 and [p["integrationId"] for p in page["profiles"]] == ["u1", "u2"]
    assert [p["integrationId"] for p in talon_emulator.profiles()] == [f"u{i}" for i in range(5)]
    nobody = requests.get(f"{talon_emulator.url}/_emulator/profiles/nobody")
    assert nobody.status_code == 404 and error_of(nobody)
    talon_emulator.reset()
    assert talon_emulator.stats() == {"requests": {}, "profiles": 0, "profile_updates": 0}
    assert talon_emulator.requests() == [] and talon_emulator.profiles() == []


def test_runtime_config(talon_emulator) -> None:
    public = talon_emulator.configure(attributes={"plan"}, reject_ids=["x"], latency_ms=1)
    assert (public["attributes"], public["reject_ids"], public["latency_ms"]) == (
        ["plan"], ["x"], 1.0)
    assert talon_emulator.app.config.attributes == frozenset({"plan"})
    url = f"{talon_emulator.url}/_emulator/config"
    for bad in ({"nope": 1}, {"rate_limit": "fast"}, {"fail_rate": 2}, {"attributes": "plan"},
                {"fail_status": 99}, {"db": "x.db"}, {"hang_next": -1}):
        r = requests.post(url, json=bad)
        assert r.status_code == 400, bad
        assert error_of(r)
    with pytest.raises(ValueError, match="rate_limit"):
        talon_emulator.configure(rate_limit="fast")
    assert requests.get(url).json() == public  # nothing changed by the refusals
    talon_emulator.configure(attributes=None)
    assert single(talon_emulator, "u1", {"anything": 1}).status_code == 200


def test_sqlite_store_survives_a_restart(tmp_path: Path) -> None:
    config = EmulatorConfig(api_key="k", db=str(tmp_path / "emu.db"), rate_limit=0)
    auth = {"Authorization": "ApiKey-v1 k"}
    with EmulatorServer(config) as server:
        first = requests.put(f"{server.url}/v2/customer_profiles/u1",
                             json={"attributes": {"a": 1}}, headers=auth).json()
    with EmulatorServer(config) as server:
        answer = requests.put(
            f"{server.url}/v2/customer_profiles", params={"silent": "no"}, headers=auth,
            json={"customerProfiles": [{"integrationId": "u1", "attributes": {"b": 2}},
                                       {"integrationId": "u2", "attributes": {}}]}).json()
        got = requests.get(f"{server.url}/_emulator/profiles/u1").json()
        assert server.app.stats()["profiles"] == 2
        requests.post(f"{server.url}/_emulator/reset").raise_for_status()
        assert server.app.stats()["profiles"] == 0
    assert got == {"integrationId": "u1", "attributes": {"a": 1, "b": 2}}
    u1, u2 = (s["customerProfile"] for s in answer["integrationStates"])
    assert (u1["id"], u1["created"]) == (first["customerProfile"]["id"],
                                         first["customerProfile"]["created"])
    assert u2["id"] > u1["id"] and set(u2) == PROFILE_FIELDS


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


def test_attributes_file(tmp_path: Path) -> None:
    lines = tmp_path / "attrs.txt"
    lines.write_text("# customer profile attributes\nemail\n\n  plan  # the tier\n  # note\n")
    array = tmp_path / "attrs.json"
    array.write_text('["email", "plan"]')
    assert parse_attributes_file(lines) == parse_attributes_file(str(array)) == {"email", "plan"}
    array.write_text('["email", 3]')
    with pytest.raises(ValueError):
        parse_attributes_file(array)


def test_attribute_patterns(talon_emulator) -> None:
    talon_emulator.configure(attributes=["email", "consent_*"])
    ok = bulk(talon_emulator, [{"integrationId": "u", "attributes": {"consent_sms": True,
                                                                    "email": "e"}}])
    assert ok.status_code == 204
    bad = bulk(talon_emulator, [{"integrationId": "u", "attributes": {"consentsms": True}}])
    assert bad.status_code == 400


def test_bulk_requests_reuse_one_connection(talon_emulator) -> None:
    """Talon.One keeps connections alive; so must the emulator, 204s included."""
    s = api(talon_emulator)
    url = f"{talon_emulator.url}/v2/customer_profiles"
    for i in range(5):
        r = s.put(url, json={"customerProfiles": [{"integrationId": f"u{i}", "attributes": {}}]},
                  timeout=10)
        assert r.status_code == 204 and "close" not in r.headers.get("Connection", "")
    assert s.get(f"{talon_emulator.url}/v2/authping", timeout=10).status_code == 204
    pools = s.get_adapter(url).poolmanager.pools
    assert [pools[key].num_connections for key in pools.keys()] == [1]
