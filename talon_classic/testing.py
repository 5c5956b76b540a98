"""pytest plugin: a Talon.One emulator on a free loopback port, per test.

Installed with talon-classic (entry point ``pytest11``), so any project's
tests can use the fixtures::

    def test_sync(talon_emulator):
        ...  # point your code at talon_emulator.url with talon_emulator.api_key
        assert talon_emulator.profile("u1")["attributes"] == {"plan": "gold"}

The inspection helpers go through real HTTP (``/_emulator/...``), the same
way a user would look, never into the emulator's memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from talon_classic.emulator import EmulatorConfig, EmulatorServer


class EmulatorHandle:
    """A running emulator: its URL and key, and helpers to look inside."""

    def __init__(self, server: EmulatorServer) -> None:
        self.server = server
        self.app = server.app
        self.url = server.url
        self.api_key = server.app.config.api_key
        self._http = requests.Session()

    def _get(self, path: str, **params: Any) -> Any:
        response = self._http.get(f"{self.url}/_emulator/{path}", params=params, timeout=10)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.json()

    def profile(self, integration_id: str) -> dict[str, Any] | None:
        """``{"integrationId", "attributes"}``, or None when no such profile."""
        return self._get("profiles/" + requests.utils.quote(integration_id, safe=""))

    def profiles(self) -> list[dict[str, Any]]:
        """Every stored profile, in creation order."""
        out: list[dict[str, Any]] = []
        while True:
            page = self._get("profiles", limit=1000, offset=len(out))
            out += page["profiles"]
            if len(out) >= page["total"] or not page["profiles"]:
                return out

    def stats(self) -> dict[str, Any]:
        """``{"requests": {status: n}, "profiles": n, "profile_updates": n}``."""
        return self._get("stats")

    def requests(self, limit: int = 100_000, offset: int = 0) -> list[dict[str, Any]]:
        """The /v2 request log: ``{"t", "method", "path", "status", "profiles"}`` each."""
        return self._get("requests", limit=limit, offset=offset)

    def reset(self) -> None:
        """Forget profiles, counters and the request log."""
        self._http.post(f"{self.url}/_emulator/reset", timeout=10).raise_for_status()

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change the emulator's behaviour at runtime (``POST /_emulator/config``)."""
        for name in ("attributes", "reject_ids"):
            if name in changes and changes[name] is not None:
                changes[name] = sorted(changes[name])
        response = self._http.post(f"{self.url}/_emulator/config", json=changes, timeout=10)
        response.raise_for_status()
        return response.json()

    def close(self) -> None:
        """Stop the server."""
        self._http.close()
        self.server.stop()


@pytest.fixture()
def talon_emulator_factory() -> Iterator[Callable[..., EmulatorHandle]]:
    """Start emulators with given config fields; all stop at teardown.

    Unlike Talon.One, the default here is no rate limit, so tests run fast;
    pass ``rate_limit=60`` to test limiting.
    """
    started: list[EmulatorHandle] = []

    def start(**config: Any) -> EmulatorHandle:
        config.setdefault("rate_limit", 0)
        for name in ("attributes", "reject_ids"):
            if config.get(name) is not None:
                config[name] = frozenset(config[name])
        handle = EmulatorHandle(EmulatorServer(EmulatorConfig(**config)).start())
        started.append(handle)
        return handle

    yield start
    for handle in started:
        handle.close()


@pytest.fixture()
def talon_emulator(talon_emulator_factory: Callable[..., EmulatorHandle]) -> EmulatorHandle:
    """A fresh emulator (any attribute accepted, no rate limit) for one test."""
    return talon_emulator_factory()
