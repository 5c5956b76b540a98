"""EmulatorServer: served by waitress, known URL, kept-alive connections, clear bind errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from emulator_http import api

from talon_classic.emulator import EmulatorConfig, EmulatorServer
from talon_classic.exceptions import AddressInUse


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
