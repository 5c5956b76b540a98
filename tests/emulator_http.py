"""Talking to an emulator over real HTTP, for the emulator's tests.

``emu`` is an :class:`~talon_classic.testing.EmulatorHandle` (the
``talon_emulator`` fixture) or anything with ``url`` and ``api_key``.
"""

from __future__ import annotations

import requests

#: The fields of Talon.One's CustomerProfile object.
PROFILE_FIELDS = {"id", "created", "integrationId", "attributes", "accountId", "closedSessions",
                  "totalSales", "lastActivity", "loyaltyMemberships", "audienceMemberships"}


def api(emu, key: str | None = None) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"ApiKey-v1 {key or emu.api_key}"
    return session


def bulk(emu, items, timeout: float = 10, **params) -> requests.Response:
    return api(emu).put(f"{emu.url}/v2/customer_profiles", json={"customerProfiles": items},
                        params=params, timeout=timeout)


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


def management(emu, key: str | None = None) -> requests.Session:
    """A session with ``Authorization: ManagementKey-v1`` (the emulator's key unless given)."""
    session = requests.Session()
    session.headers["Authorization"] = f"ManagementKey-v1 {key or emu.management_key}"
    return session


def create_audience(emu, **body) -> requests.Response:
    return api(emu).post(f"{emu.url}/v2/audiences", json=body, timeout=10)


def audience_actions(emu, data) -> requests.Response:
    return api(emu).post(f"{emu.url}/v2/customer_audiences", json={"data": data}, timeout=10)


def add(iid: str, audience_id: int) -> dict:
    return {"action": "add", "profileIntegrationId": iid, "audienceId": audience_id}


def delete(iid: str, audience_id: int) -> dict:
    return {"action": "delete", "profileIntegrationId": iid, "audienceId": audience_id}
