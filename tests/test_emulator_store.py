"""The profile stores, in memory and in SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from emulator_http import PROFILE_FIELDS

from talon_classic.emulator import EmulatorConfig, EmulatorServer
from talon_classic.emulator.store import ProfileStore, open_store


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


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path: Path) -> Iterator[ProfileStore]:
    opened = open_store(str(tmp_path / "p.db") if request.param == "sqlite" else None)
    yield opened
    opened.close()


def test_upsert_creates_then_merges(store: ProfileStore) -> None:
    first = store.upsert([("a", {"x": 1}), ("b", {})], snapshot=True)
    assert [(p["integrationId"], p["attributes"]) for p in first] == [("a", {"x": 1}), ("b", {})]
    assert first[0]["id"] < first[1]["id"]
    assert store.upsert([("a", {"y": 2}), ("a", {"x": 3})], snapshot=False) == []
    again = store.get("a")
    assert again is not None and again["attributes"] == {"x": 3, "y": 2}
    assert (again["id"], again["created"]) == (first[0]["id"], first[0]["created"])
    assert again["lastActivity"] >= again["created"] and store.get("nobody") is None


def test_get_is_a_copy(store: ProfileStore) -> None:
    store.upsert([("a", {"x": 1})], snapshot=False)
    got = store.get("a")
    assert got is not None
    got["attributes"]["x"] = 99
    assert store.get("a")["attributes"] == {"x": 1}


def test_page_total_count_and_clear(store: ProfileStore) -> None:
    store.upsert([(f"u{i}", {}) for i in range(5)], snapshot=False)
    page, total = store.page(2, 1)
    assert [p["integrationId"] for p in page] == ["u1", "u2"] and total == 5
    assert store.count() == 5
    store.clear()
    assert store.count() == 0 and store.page(10, 0) == ([], 0)
    assert store.upsert([("new", {})], snapshot=True)[0]["id"] == 1  # ids restart


def test_get_many_and_create_missing(store: ProfileStore) -> None:
    store.upsert([("a", {"x": 1})], snapshot=False)
    before = store.get("a")
    assert store.create_missing(["a", "b", "b", "c"]) == 2
    assert store.get("a") == before  # an existing profile is left exactly as it was
    found = store.get_many(["c", "a", "nobody", "a"])
    assert set(found) == {"a", "c"} and found["c"]["attributes"] == {}
    assert found["a"]["attributes"] == {"x": 1} and store.count() == 3
    assert store.create_missing([]) == 0
