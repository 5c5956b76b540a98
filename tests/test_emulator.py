"""The emulator speaks the Integration API's shapes and codes, over real loopback HTTP."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest
import requests

from talon_classic.emulator import EmulatorConfig, EmulatorServer, parse_attributes_file


def api(emu, key: str | None = None) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"ApiKey-v1 {key or emu.api_key}"
    return session


def bulk(emu, items, **params):
    return api(emu).put(f"{emu.url}/v2/customer_profiles", json={"customerProfiles": items},
                        params=params)


def test_authping(talon_emulator) -> None:
    assert api(talon_emulator).get(f"{talon_emulator.url}/v2/authping").status_code == 204
    wrong = api(talon_emulator, "nope").get(f"{talon_emulator.url}/v2/authping")
    assert wrong.status_code == 401
    body = wrong.json()
    assert body["StatusCode"] == 401 and body["message"] and body["errors"][0]["title"]
    assert requests.get(f"{talon_emulator.url}/v2/authping").status_code == 401


def test_single_upsert_creates_then_merges(talon_emulator) -> None:
    url = f"{talon_emulator.url}/v2/customer_profiles/u%201"
    first = api(talon_emulator).put(url, json={"attributes": {"a": 1, "b": "x"}})
    assert first.status_code == 200
    profile = first.json()["customerProfile"]
    assert {"id", "created", "integrationId", "attributes", "accountId", "closedSessions",
            "totalSales", "lastActivity"} <= set(profile)
    assert first.json()["effects"] == []
    api(talon_emulator).put(url, json={"attributes": {"b": "y"}})
    assert talon_emulator.profile("u 1")["attributes"] == {"a": 1, "b": "y"}


def test_dry_single_stores_nothing(talon_emulator) -> None:
    r = api(talon_emulator).put(f"{talon_emulator.url}/v2/customer_profiles/u1",
                                params={"runRuleEngine": "true", "dry": "true"},
                                json={"attributes": {"a": 1}})
    assert r.status_code == 200
    assert talon_emulator.profile("u1") is None


def test_bulk_silent_and_not(talon_emulator) -> None:
    r = bulk(talon_emulator, [{"integrationId": "a", "attributes": {"x": 1}}], silent="yes")
    assert (r.status_code, r.content) == (204, b"")
    r = bulk(talon_emulator, [{"integrationId": "b", "attributes": {"x": 2}}], silent="no")
    assert r.status_code == 200
    state = r.json()["integrationStates"][0]["customerProfile"]
    assert state["integrationId"] == "b" and state["attributes"] == {"x": 2}
    assert talon_emulator.stats() == {"requests": {"204": 1, "200": 1}, "profiles": 2,
                                      "profile_updates": 2}


def test_1000_ok_1001_rejected(talon_emulator) -> None:
    items = [{"integrationId": f"u{i}", "attributes": {}} for i in range(1001)]
    assert bulk(talon_emulator, items[:1000]).status_code == 204
    r = bulk(talon_emulator, items)
    assert r.status_code == 400 and "1000" in r.json()["message"] + r.json()["errors"][0]["details"]


@pytest.mark.parametrize(
    "item, pointer",
    [
        ({"integrationId": "x" * 1001, "attributes": {}}, "/customerProfiles/1/integrationId"),
        ({"integrationId": "u", "attributes": {"unknown": 1}}, "/customerProfiles/1/attributes/unknown"),
        ({"integrationId": "u", "attributes": []}, "/customerProfiles/1/attributes"),
        ({"attributes": {}}, "/customerProfiles/1/integrationId"),
        ({"integrationId": "poison", "attributes": {}}, "/customerProfiles/1/integrationId"),
    ],
)
def test_bad_item_fails_the_whole_request(talon_emulator, item, pointer) -> None:
    talon_emulator.configure(attributes=["known"], reject_ids=["poison"])
    r = bulk(talon_emulator, [{"integrationId": "ok", "attributes": {"known": 1}}, item])
    assert r.status_code == 400
    assert r.json()["errors"][0]["source"]["pointer"] == pointer
    assert talon_emulator.profile("ok") is None  # nothing stored


def test_malformed_bodies(talon_emulator) -> None:
    s = api(talon_emulator)
    assert s.put(f"{talon_emulator.url}/v2/customer_profiles", data=b"{").status_code == 400
    assert s.put(f"{talon_emulator.url}/v2/customer_profiles", json=[1]).status_code == 400
    assert s.put(f"{talon_emulator.url}/v2/customer_profiles",
                 json={"customerProfiles": {}}).status_code == 400


def test_concurrent_update_of_one_profile_is_409(talon_emulator) -> None:
    talon_emulator.configure(latency_ms=300)
    statuses: list[int] = []

    def put() -> None:
        r = api(talon_emulator).put(f"{talon_emulator.url}/v2/customer_profiles/same",
                                    json={"attributes": {}})
        statuses.append(r.status_code)

    threads = [threading.Thread(target=put) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200, 409]


def test_rate_limit_429_with_retry_after(talon_emulator_factory) -> None:
    emu = talon_emulator_factory(rate_limit=2)
    s = api(emu)
    answers = [s.get(f"{emu.url}/v2/authping") for _ in range(5)]
    limited = [r for r in answers if r.status_code == 429]
    assert limited and limited[0].headers["Retry-After"] == "1"
    assert emu.stats()["requests"]["429"] == len(limited)


def test_fail_next_and_runtime_config(talon_emulator) -> None:
    public = talon_emulator.configure(fail_next=2, fail_status=502)
    assert public["fail_next"] == 2 and "api_key" not in public
    s = api(talon_emulator)
    assert [s.get(f"{talon_emulator.url}/v2/authping").status_code for _ in range(3)] == [502, 502, 204]
    bad = requests.post(f"{talon_emulator.url}/_emulator/config", json={"nope": 1})
    assert bad.status_code == 400


def test_drop_closes_the_connection(talon_emulator) -> None:
    talon_emulator.configure(drop_next=1)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        bulk(talon_emulator, [{"integrationId": "a", "attributes": {}}])


def test_inspection_list_reset_and_404(talon_emulator) -> None:
    bulk(talon_emulator, [{"integrationId": f"u{i}", "attributes": {}} for i in range(5)])
    page = requests.get(f"{talon_emulator.url}/_emulator/profiles",
                        params={"limit": 2, "offset": 1}).json()
    assert page["total"] == 5 and [p["integrationId"] for p in page["profiles"]] == ["u1", "u2"]
    assert requests.get(f"{talon_emulator.url}/_emulator/profiles/nobody").status_code == 404
    assert requests.get(f"{talon_emulator.url}/v3/nothing").status_code == 404
    talon_emulator.reset()
    assert talon_emulator.stats() == {"requests": {}, "profiles": 0, "profile_updates": 0}


def test_sqlite_store_survives_a_restart(tmp_path: Path) -> None:
    db = str(tmp_path / "emu.db")
    with EmulatorServer(EmulatorConfig(api_key="k", db=db, rate_limit=0)) as server:
        requests.put(f"{server.url}/v2/customer_profiles/u1", json={"attributes": {"a": 1}},
                     headers={"Authorization": "ApiKey-v1 k"}).raise_for_status()
    with EmulatorServer(EmulatorConfig(api_key="k", db=db, rate_limit=0)) as server:
        requests.put(f"{server.url}/v2/customer_profiles", params={"silent": "yes"},
                     json={"customerProfiles": [{"integrationId": "u1", "attributes": {"b": 2}}]},
                     headers={"Authorization": "ApiKey-v1 k"}).raise_for_status()
        got = requests.get(f"{server.url}/_emulator/profiles/u1").json()
    assert got == {"integrationId": "u1", "attributes": {"a": 1, "b": 2}}


def test_key_never_in_answers_or_logs(talon_emulator_factory, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    emu = talon_emulator_factory(api_key="very-secret-emulator-key")
    texts = [
        requests.get(f"{emu.url}/v2/authping").text,
        requests.get(f"{emu.url}/_emulator/config").text,
        requests.get(f"{emu.url}/_emulator/stats").text,
    ]
    assert all("very-secret" not in t for t in texts)
    assert "very-secret" not in caplog.text
    assert "very-secret" not in repr(emu.app.config)


def test_attributes_file(tmp_path: Path) -> None:
    lines = tmp_path / "attrs.txt"
    lines.write_text("# customer profile attributes\nemail\n\nplan\n")
    array = tmp_path / "attrs.json"
    array.write_text('["email", "plan"]')
    assert parse_attributes_file(str(lines)) == parse_attributes_file(str(array)) == {"email", "plan"}


def test_attribute_patterns(talon_emulator) -> None:
    talon_emulator.configure(attributes=["email", "consent_*"])
    ok = bulk(talon_emulator, [{"integrationId": "u", "attributes": {"consent_sms": True,
                                                                    "email": "e"}}])
    assert ok.status_code == 204
    bad = bulk(talon_emulator, [{"integrationId": "u", "attributes": {"consentsms": True}}])
    assert bad.status_code == 400
