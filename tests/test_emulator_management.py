"""The Management API: attributes, audiences and memberships under ManagementKey-v1."""

from __future__ import annotations

import pytest
import requests
from emulator_http import (
    PROFILE_FIELDS,
    add,
    api,
    audience_actions,
    bulk,
    create_audience,
    error_of,
    management,
)

from talon_classic.emulator.attributes import BUILTIN_ATTRIBUTES

ATTRIBUTE_FIELDS = {"id", "created", "accountId", "entity", "name", "title", "type",
                    "description", "suggestions", "hasAllowedList", "restrictedBySuggestions",
                    "editable", "subscribedApplicationsIds", "subscribedCatalogsIds",
                    "allowedSubscriptions", "kind"}


def attributes(emu, **params) -> requests.Response:
    return management(emu).get(f"{emu.url}/v1/attributes", params=params, timeout=10)


def test_the_management_key_is_required(talon_emulator_factory) -> None:
    emu = talon_emulator_factory(management_key="mgmt-key-123456")
    url = f"{emu.url}/v1/attributes"
    for headers in ({}, {"Authorization": "ManagementKey-v1 wrong"},
                    {"Authorization": f"ApiKey-v1 {emu.api_key}"},
                    {"Authorization": "ApiKey-v1 mgmt-key-123456"}):
        r = requests.get(url, headers=headers, timeout=10)
        assert r.status_code == 401
        error = error_of(r)
        assert error["message"] == "Unauthorized" and "ManagementKey-v1" in error["details"]
        assert "mgmt-key-123456" not in r.text
    assert management(emu).get(url).status_code == 200
    # and the management key is no Integration API key
    assert management(emu).get(f"{emu.url}/v2/authping").status_code == 401
    assert [r["status"] for r in emu.requests()] == [401] * 4 + [200, 401]


def test_attributes_builtin_then_custom_typed(talon_emulator_factory) -> None:
    emu = talon_emulator_factory(attributes={"plan": "string", "age": "number", "note": None,
                                             "consent_*": None})
    answer = attributes(emu).json()
    assert set(answer) == {"totalResultSize", "data"}
    data = answer["data"]
    assert answer["totalResultSize"] == len(data) == len(BUILTIN_ATTRIBUTES) + 3
    assert all(set(a) == ATTRIBUTE_FIELDS for a in data)
    assert all(a["entity"] == "CustomerProfile" and a["accountId"] == 1 for a in data)
    assert [a["id"] for a in data] == list(range(1, len(data) + 1))
    builtin = [(a["name"], a["type"]) for a in data if a["kind"] == "builtin"]
    assert builtin == [(name, t) for name, (t, _) in BUILTIN_ATTRIBUTES.items()]
    custom = [(a["name"], a["type"], a["title"], a["editable"]) for a in data
              if a["kind"] == "custom"]
    # by name; the pattern is not listed; an untyped name is listed as "any"
    assert custom == [("age", "number", "age", True), ("note", "any", "note", True),
                      ("plan", "string", "plan", True)]
    assert not any(a["editable"] for a in data if a["kind"] == "builtin")


def test_attribute_filters(talon_emulator_factory) -> None:
    emu = talon_emulator_factory(attributes={"age": "number"})
    assert [a["name"] for a in attributes(emu, kind="custom").json()["data"]] == ["age"]
    builtin = attributes(emu, kind="builtin").json()
    assert builtin["totalResultSize"] == len(BUILTIN_ATTRIBUTES)
    assert attributes(emu, entity="CustomerProfile").json()["totalResultSize"] == (
        len(BUILTIN_ATTRIBUTES) + 1)
    assert attributes(emu, entity="CustomerSession").json() == {"totalResultSize": 0, "data": []}
    bad = attributes(emu, kind="mine")
    assert bad.status_code == 400 and error_of(bad)["source"]["parameter"] == "kind"


def test_without_a_list_only_built_ins_and_typed_names_are_listed(talon_emulator_factory) -> None:
    emu = talon_emulator_factory(attribute_types={"age": "number"})
    custom = attributes(emu, kind="custom").json()["data"]
    assert [(a["name"], a["type"]) for a in custom] == [("age", "number")]


def test_a_schema_pull_pages_past_1000_attributes(talon_emulator_factory) -> None:
    names = {f"attr{i:04d}": "number" if i % 2 else "string" for i in range(1100)}
    emu = talon_emulator_factory(attributes=names)
    total = 1100 + len(BUILTIN_ATTRIBUTES)
    first = attributes(emu, entity="CustomerProfile").json()  # the default page is 1000
    assert first["totalResultSize"] == total and len(first["data"]) == 1000
    rest = attributes(emu, entity="CustomerProfile", pageSize=1000, skip=1000).json()
    assert rest["totalResultSize"] == total and len(rest["data"]) == total - 1000
    pulled = {a["name"]: a["type"] for a in first["data"] + rest["data"]}
    assert len(pulled) == total
    assert {n: t for n, t in pulled.items() if n in names} == names
    assert attributes(emu, skip=total).json()["data"] == []
    small = attributes(emu, pageSize=2, skip=5).json()["data"]
    assert [a["id"] for a in small] == [6, 7]


@pytest.mark.parametrize("params, parameter", [
    ({"pageSize": 1001}, "pageSize"), ({"pageSize": 0}, "pageSize"),
    ({"pageSize": "ten"}, "pageSize"), ({"pageSize": "1.5"}, "pageSize"),
    ({"skip": -1}, "skip"), ({"skip": "x"}, "skip"),
])
def test_bad_paging_is_400_naming_the_parameter(talon_emulator, params, parameter) -> None:
    for path in ("attributes", "audiences"):
        r = management(talon_emulator).get(f"{talon_emulator.url}/v1/{path}", params=params)
        assert r.status_code == 400 and error_of(r)["source"]["parameter"] == parameter


def test_at_most_3_requests_per_second(talon_emulator_factory) -> None:
    emu = talon_emulator_factory(management_rate_limit=3, rate_limit=0)
    s = management(emu)
    statuses = [s.get(f"{emu.url}/v1/attributes").status_code for _ in range(5)]
    assert statuses[:3] == [200, 200, 200] and statuses[3:] == [429, 429]
    limited = s.get(f"{emu.url}/v1/audiences")
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "1"
    assert error_of(limited)["message"] == "Too many requests"
    assert "3 requests per second" in error_of(limited)["details"]
    # its own bucket: the Integration API is not limited by it
    assert all(api(emu).get(f"{emu.url}/v2/authping").status_code == 204 for _ in range(5))


def test_the_integration_api_limit_does_not_touch_the_management_api(
        talon_emulator_factory) -> None:
    emu = talon_emulator_factory(rate_limit=1, management_rate_limit=0)
    assert api(emu).get(f"{emu.url}/v2/authping").status_code == 204
    assert api(emu).get(f"{emu.url}/v2/authping").status_code == 429
    assert all(management(emu).get(f"{emu.url}/v1/attributes").status_code == 200
               for _ in range(5))


def test_management_rate_limit_changes_at_runtime(talon_emulator) -> None:
    talon_emulator.configure(management_rate_limit=1)
    s = management(talon_emulator)
    assert [s.get(f"{talon_emulator.url}/v1/audiences").status_code for _ in range(2)] == [
        200, 429]
    talon_emulator.configure(management_rate_limit=0)
    assert s.get(f"{talon_emulator.url}/v1/audiences").status_code == 200


def test_faults_reach_the_management_api_too(talon_emulator) -> None:
    """So a client's handling of 403 or 5xx can be tested (fail_status=403)."""
    talon_emulator.configure(fail_next=1, fail_status=403)
    r = management(talon_emulator).get(f"{talon_emulator.url}/v1/attributes")
    assert r.status_code == 403 and error_of(r)
    assert management(talon_emulator).get(f"{talon_emulator.url}/v1/attributes").ok


def test_audiences_are_listed_and_paged(talon_emulator) -> None:
    ids = [create_audience(talon_emulator, name=f"a{i}", integrationId=f"x{i}").json()["id"]
           for i in range(5)]
    s = management(talon_emulator)
    url = f"{talon_emulator.url}/v1/audiences"
    everything = s.get(url).json()
    assert everything["hasMore"] is False and everything["totalResultSize"] == 5
    assert [a["id"] for a in everything["data"]] == ids
    assert everything["data"][0] == api(talon_emulator).put(  # the same Audience object
        f"{talon_emulator.url}/v2/audiences/{ids[0]}", json={"name": "a0"}).json()
    page = s.get(url, params={"pageSize": 2, "skip": 2}).json()
    assert (page["hasMore"], [a["name"] for a in page["data"]]) == (True, ["a2", "a3"])
    last = s.get(url, params={"pageSize": 2, "skip": 4}).json()
    assert (last["hasMore"], len(last["data"]), last["totalResultSize"]) == (False, 1, 5)


def test_memberships_are_profiles_paged_in_joining_order(talon_emulator) -> None:
    bulk(talon_emulator, [{"integrationId": "u0", "attributes": {"plan": "gold"}}])
    aid = create_audience(talon_emulator, name="vip").json()["id"]
    audience_actions(talon_emulator, [add(f"u{i}", aid) for i in (3, 0, 1, 2)])
    s = management(talon_emulator)
    url = f"{talon_emulator.url}/v1/audiences/{aid}/memberships"
    page = s.get(url, params={"pageSize": 3}).json()
    assert set(page) == {"hasMore", "data"} and page["hasMore"] is True
    assert [p["integrationId"] for p in page["data"]] == ["u3", "u0", "u1"]
    assert all(set(p) == PROFILE_FIELDS for p in page["data"])
    assert page["data"][1]["attributes"] == {"plan": "gold"}
    assert page["data"][1]["audienceMemberships"] == [{"id": aid, "name": "vip"}]
    rest = s.get(url, params={"pageSize": 3, "skip": 3}).json()
    assert (rest["hasMore"], [p["integrationId"] for p in rest["data"]]) == (False, ["u2"])
    exact = s.get(url, params={"pageSize": 4}).json()
    assert exact["hasMore"] is False and len(exact["data"]) == 4
    missing = s.get(f"{talon_emulator.url}/v1/audiences/999/memberships")
    assert missing.status_code == 404 and "999" in error_of(missing)["message"]


def test_the_management_key_is_never_shown(talon_emulator_factory, caplog) -> None:
    import logging

    caplog.set_level(logging.DEBUG)
    secret = "very-secret-management-key"
    emu = talon_emulator_factory(management_key=secret)
    texts = [
        requests.get(f"{emu.url}/v1/attributes").text,
        requests.get(f"{emu.url}/v1/attributes",
                     headers={"Authorization": "ManagementKey-v1 x"}).text,
        management(emu).get(f"{emu.url}/v1/audiences").text,
        requests.get(f"{emu.url}/_emulator/config").text,
        requests.post(f"{emu.url}/_emulator/config", json={"management_key": secret + "2"}).text,
    ]
    assert all(secret not in t for t in texts)
    assert secret not in caplog.text and secret not in repr(emu.app.config)
    assert emu.management_key == secret + "2"  # changed at runtime
    assert management(emu).get(f"{emu.url}/v1/audiences").status_code == 200
