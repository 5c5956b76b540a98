"""/_emulator: the request log, stats, profiles, reset and runtime config, over real HTTP."""

from __future__ import annotations

import time

import pytest
import requests
from emulator_http import api, bulk, error_of, single


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
                                      "profiles": 3, "profile_updates": 4, "audiences": 0,
                                      "audience_actions": 0}


def test_inspection_list_reset_and_404(talon_emulator) -> None:
    bulk(talon_emulator, [{"integrationId": f"u{i}", "attributes": {}} for i in range(5)])
    page = requests.get(f"{talon_emulator.url}/_emulator/profiles",
                        params={"limit": 2, "offset": 1}).json()
    assert page["total"] == 5 and [p["integrationId"] for p in page["profiles"]] == ["u1", "u2"]
    assert [p["integrationId"] for p in talon_emulator.profiles()] == [f"u{i}" for i in range(5)]
    nobody = requests.get(f"{talon_emulator.url}/_emulator/profiles/nobody")
    assert nobody.status_code == 404 and error_of(nobody)
    talon_emulator.reset()
    assert talon_emulator.stats() == {"requests": {}, "profiles": 0, "profile_updates": 0,
                                      "audiences": 0, "audience_actions": 0}
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


def test_audience_inspection(talon_emulator) -> None:
    from emulator_http import add, audience_actions, create_audience

    a = create_audience(talon_emulator, name="a", integrationId="seg_1").json()["id"]
    b = create_audience(talon_emulator, name="b").json()["id"]
    audience_actions(talon_emulator, [add("u2", a), add("u10", a), add("u1", a)])
    url = f"{talon_emulator.url}/_emulator/audiences"
    assert requests.get(url).json() == {"audiences": [
        {"id": a, "name": "a", "integrationId": "seg_1", "members": 3},
        {"id": b, "name": "b", "integrationId": None, "members": 0}]}
    assert requests.get(f"{url}/{a}/members").json() == {"members": ["u1", "u10", "u2"]}
    assert requests.get(f"{url}/{b}/members").json() == {"members": []}
    missing = requests.get(f"{url}/77/members")
    assert missing.status_code == 404 and error_of(missing)
    assert talon_emulator.stats()["audience_actions"] == 3
    assert talon_emulator.requests()[-1]["path"] == "/v2/customer_audiences"  # not /_emulator
