"""The audience stores, in memory and in SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from talon_classic.emulator import EmulatorConfig, EmulatorServer
from talon_classic.emulator.audience_store import AudienceStore, open_audiences


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path: Path) -> Iterator[AudienceStore]:
    opened = open_audiences(str(tmp_path / "a.db") if request.param == "sqlite" else None)
    yield opened
    opened.close()


def test_create_get_rename_delete(store: AudienceStore) -> None:
    first = store.create({"name": "a", "integration": "segment", "integrationId": "x"})
    assert first is not None and first["id"] == 1 and first["integrationId"] == "x"
    assert store.create({"name": "b", "integration": "segment", "integrationId": "x"}) is None
    second = store.create({"name": "b", "integrationId": "x"})  # no integration: another one
    assert second is not None and second["id"] == 2 and "integration" not in second
    assert store.create({"name": "c", "integrationId": "x"}) is None
    assert store.get(1) == first and store.get(3) is None
    renamed = store.rename(1, "A")
    assert renamed == {**first, "name": "A"}
    assert store.rename(9, "x") is None
    assert store.count() == 2
    assert store.delete(1) and not store.delete(1) and store.get(1) is None
    assert store.create({"name": "d", "integration": "segment", "integrationId": "x"})


def test_members_in_joining_order_and_all_or_nothing(store: AudienceStore) -> None:
    a = store.create({"name": "a"})["id"]
    b = store.create({"name": "b"})["id"]
    assert store.apply([("add", "u2", a), ("add", "u1", a), ("add", "u2", a),
                        ("add", "u1", b)]) == set()
    assert store.members(a, 10, 0) == ["u2", "u1"] and store.members(a, 1, 1) == ["u1"]
    assert store.apply([("delete", "u2", a), ("add", "u3", 99), ("add", "u4", 98)]) == {98, 99}
    assert store.members(a, 10, 0) == ["u2", "u1"]  # nothing applied
    assert store.apply([("delete", "u2", a), ("add", "u3", a), ("delete", "u3", a)]) == set()
    assert store.members(a, 10, 0) == ["u1"]
    assert store.members(99, 10, 0) is None
    assert store.member_counts() == {a: 1, b: 1}
    assert store.memberships(["u1", "u2", "u1"]) == {"u1": [{"id": a, "name": "a"},
                                                            {"id": b, "name": "b"}]}
    assert "lastUpdate" in store.get(a)
    assert store.clear_members(a) and store.members(a, 10, 0) == [] and not store.clear_members(9)
    store.delete(b)
    assert store.memberships(["u1"]) == {} and store.member_counts() == {a: 0}


def test_page_and_clear(store: AudienceStore) -> None:
    for i in range(5):
        store.create({"name": f"a{i}"})
    page, total = store.page(2, 1)
    assert [a["name"] for a in page] == ["a1", "a2"] and total == 5
    store.clear()
    assert store.page(10, 0) == ([], 0) and store.count() == 0
    assert store.create({"name": "new"})["id"] == 1  # ids restart


def test_audiences_survive_a_restart_with_db(tmp_path: Path) -> None:
    config = EmulatorConfig(api_key="k", db=str(tmp_path / "emu.db"), rate_limit=0)
    auth = {"Authorization": "ApiKey-v1 k"}
    with EmulatorServer(config) as server:
        aid = requests.post(f"{server.url}/v2/audiences", json={"name": "vip"},
                            headers=auth).json()["id"]
        requests.post(f"{server.url}/v2/customer_audiences", headers=auth, json={"data": [
            {"action": "add", "profileIntegrationId": "u1", "audienceId": aid}]})
    with EmulatorServer(config) as server:
        listed = requests.get(f"{server.url}/_emulator/audiences").json()
        members = requests.get(f"{server.url}/_emulator/audiences/{aid}/members").json()
        profile = requests.get(f"{server.url}/_emulator/profiles/u1").json()
    assert listed == {"audiences": [{"id": aid, "name": "vip", "integrationId": None,
                                     "members": 1}]}
    assert members == {"members": ["u1"]}
    assert profile == {"integrationId": "u1", "attributes": {}}
