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

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import pytest
import requests

from talon_classic.emulator import Emulator, EmulatorConfig, EmulatorServer
from talon_classic.jsonio import loads


class EmulatorHandle:
    """A running emulator: where it is, its key, and helpers to look inside.

    ``url``, ``api_key`` and ``management_key`` are what the code under test
    needs; ``app`` is the :class:`~talon_classic.emulator.Emulator` itself, for
    the rare test that must reach past HTTP. ``profile``, ``profiles``,
    ``audiences``, ``audience_members``, ``stats``, ``requests``, ``reset`` and
    ``configure`` go through ``/_emulator/...`` over real HTTP.
    """

    def __init__(self, server: EmulatorServer) -> None:
        self.server = server
        self.app: Emulator = server.app
        self.url: str = server.url
        self._http = requests.Session()

    def __repr__(self) -> str:
        return f"EmulatorHandle({self.url})"

    @property
    def api_key(self) -> str:
        """The key clients must send (follows runtime changes of ``api_key``)."""
        return self.app.config.api_key

    @property
    def headers(self) -> dict[str, str]:
        """The ``Authorization`` header a client must send, ready for ``requests``."""
        return {"Authorization": f"ApiKey-v1 {self.api_key}"}

    @property
    def management_key(self) -> str:
        """The Management API key (follows runtime changes of ``management_key``)."""
        return self.app.config.management_key

    @property
    def management_headers(self) -> dict[str, str]:
        """The Management API's ``Authorization`` header, ready for ``requests``."""
        return {"Authorization": f"ManagementKey-v1 {self.management_key}"}

    def _get(self, path: str, missing_ok: bool = False, **params: Any) -> Any:
        """GET ``/_emulator/{path}``, with ``path`` sent exactly as given.

        ``requests`` turns ``%2E`` back into ``.`` when it prepares a URL, and
        an id of dots would then be a dot segment (``profiles/..`` is
        ``/_emulator/``): the prepared path is put back as built.
        """
        url = f"{self.url}/_emulator/{path}"
        prepared = self._http.prepare_request(requests.Request("GET", url, params=params))
        if prepared.url:
            prepared.url = urlunsplit(urlsplit(prepared.url)._replace(path=urlsplit(url).path))
        response = self._http.send(prepared, timeout=10)
        if missing_ok and response.status_code == 404:
            return None
        response.raise_for_status()
        return loads(response.content)

    def profile(self, integration_id: str) -> dict[str, Any] | None:
        """``{"integrationId", "attributes"}``, or None when no such profile.

        Any id works, ``..`` and ``a/b`` included.
        """
        return self._get("profiles/" + _segment(integration_id), missing_ok=True)

    def profiles(self) -> list[dict[str, Any]]:
        """Every stored profile, in creation order."""
        out: list[dict[str, Any]] = []
        while True:
            page = self._get("profiles", limit=1000, offset=len(out))
            out += page["profiles"]
            if len(out) >= page["total"] or not page["profiles"]:
                return out

    def stats(self) -> dict[str, Any]:
        """``{"requests": {status: n}, "profiles": n, "profile_updates": n, "audiences": n,
        "audience_actions": n}``."""
        return self._get("stats")

    def audiences(self) -> list[dict[str, Any]]:
        """Every audience, by id: ``{"id", "name", "integrationId", "members": count}`` each."""
        listed: list[dict[str, Any]] = self._get("audiences")["audiences"]
        return listed

    def audience_members(self, audience_id: int) -> list[str] | None:
        """The sorted integrationIds of an audience's members, or None when no such audience."""
        found = self._get(f"audiences/{int(audience_id)}/members", missing_ok=True)
        return None if found is None else found["members"]

    def requests(self, limit: int = 100_000, offset: int = 0) -> list[dict[str, Any]]:
        """The /v2 request log: ``{"t", "method", "path", "status", "profiles"}`` each."""
        return self._get("requests", limit=limit, offset=offset)

    def reset(self) -> None:
        """Forget profiles, audiences, counters and the request log."""
        self._http.post(f"{self.url}/_emulator/reset", timeout=10).raise_for_status()

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change the emulator's behaviour at runtime (``POST /_emulator/config``).

        Takes :class:`EmulatorConfig` fields (sets may be any iterable) and
        returns the new config without the key; a refused change raises
        ValueError with the emulator's reason.
        """
        for name in ("attributes", "reject_ids", "attribute_types"):
            value = changes.get(name)
            if isinstance(value, Mapping):
                changes[name] = dict(value)  # name -> type, as JSON
            elif value is not None and not isinstance(value, str):
                changes[name] = sorted(value)
        response = self._http.post(f"{self.url}/_emulator/config", json=changes, timeout=10)
        if response.status_code == 400:
            raise ValueError(loads(response.content)["message"])
        response.raise_for_status()
        return loads(response.content)

    def close(self) -> None:
        """Stop the server."""
        self._http.close()
        self.server.stop()


def _segment(value: str) -> str:
    """``value`` as one path segment: percent-encoded, ``/`` and every ``.`` included."""
    return quote(value, safe="").replace(".", "%2E")


@pytest.fixture()
def talon_emulator_factory() -> Iterator[Callable[..., EmulatorHandle]]:
    """Start emulators with given :class:`EmulatorConfig` fields; all stop at teardown.

    Any field works: ``attributes={"age": "number", "plan": None}`` for a typed
    schema, ``management_key="..."`` for the Management API. Unlike Talon.One,
    the default here is no rate limit, for either API, so tests run fast;
    pass ``rate_limit=60`` or ``management_rate_limit=3`` to test limiting.
    """
    started: list[EmulatorHandle] = []

    def start(**config: Any) -> EmulatorHandle:
        config.setdefault("rate_limit", 0)
        config.setdefault("management_rate_limit", 0)
        handle = EmulatorHandle(EmulatorServer(EmulatorConfig(**config)).start())
        started.append(handle)
        return handle

    try:
        yield start
    finally:
        with contextlib.ExitStack() as stack:  # stops every one even if a stop fails
            for handle in started:
                stack.callback(handle.close)


@pytest.fixture()
def talon_emulator(talon_emulator_factory: Callable[..., EmulatorHandle]) -> EmulatorHandle:
    """A fresh emulator (any attribute accepted, no rate limit) for one test."""
    return talon_emulator_factory()
